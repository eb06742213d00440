r"""Per-token log-probs of given responses under a Hugging Face checkpoint.

  python -m prime_jax.tools.score --checkpoint DIR --inputs FILE.jsonl --out OUT.jsonl

Input rows: {"prompt_ids": [...], "response_ids": [...]}. Output: the same rows plus
`response_logprobs`, the temperature-1 log-prob of each response token given the prompt and the
response tokens before it (computed by `prime_jax.scoring.token_logprobs`).
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from prime_jax.models import load_hf_checkpoint, read_hf_config
from prime_jax.sampling import bucket_length
from prime_jax.scoring import pad_sequences, token_logprobs
from prime_jax.tools import _cli

flags.DEFINE_string("inputs", None, "Input JSONL with prompt_ids and response_ids per row.")
FLAGS = flags.FLAGS


def score_file(
    checkpoint: str,
    inputs_path: str,
    out_path: str,
    *,
    batch_size: int = 16,
    dtype: str = "float32",
) -> list[dict]:
  """Scores every row of `inputs_path`, writes `out_path` and returns the output rows.

  Raises `_cli.InputError` / `CheckpointError` on bad input, before any model work.
  """
  if batch_size < 1:
    raise _cli.InputError(f"batch_size must be >= 1, got {batch_size}")
  config = read_hf_config(checkpoint, dtype=dtype)
  rows = _cli.read_jsonl(inputs_path)
  pairs = []
  for line_no, row in rows:
    where = f"{inputs_path}:{line_no}"
    prompt = _cli.token_ids(row, "prompt_ids", where, config.vocab_size)
    response = _cli.token_ids(row, "response_ids", where, config.vocab_size)
    if not prompt:
      raise _cli.InputError(f"{where}: `prompt_ids` is empty")
    if len(prompt) + len(response) > config.max_position_embeddings:
      raise _cli.InputError(
          f"{where}: prompt ({len(prompt)} tokens) + response ({len(response)} tokens) exceeds "
          f"the model's context of {config.max_position_embeddings} tokens"
      )
    pairs.append((prompt, response))

  _, params = load_hf_checkpoint(checkpoint, dtype=dtype)
  out_rows = []
  for batch, real in _cli.batches(pairs, batch_size):
    # Bucketed widths keep the number of compiled programs small.
    prompt_width = bucket_length(max(len(p) for p, _ in batch))
    response_width = bucket_length(max(len(r) for _, r in batch))
    prompts, prompt_valid = pad_sequences([p for p, _ in batch], length=prompt_width, left=True)
    responses, response_mask = pad_sequences(
        [r for _, r in batch], length=response_width, left=False
    )
    logprobs = np.asarray(
        jax.device_get(
            token_logprobs(params, prompts, prompt_valid, responses, response_mask, config=config)
        ),
        float,
    )
    for k in range(real):
      row = rows[len(out_rows)][1]
      out_rows.append(dict(row, response_logprobs=logprobs[k, : len(batch[k][1])].tolist()))
  _cli.write_jsonl(out_path, out_rows)
  return out_rows


def main(argv):
  _cli.run_main(
      argv,
      lambda: score_file(
          FLAGS.checkpoint, FLAGS.inputs, FLAGS.out, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype
      ),
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "inputs", "out"])
  app.run(main)
