r"""Sample responses from a Hugging Face checkpoint with the shared jitted sampler.

  python -m prime_jax.tools.generate --checkpoint DIR --prompts FILE.jsonl --max_new_tokens N \
      [--temperature T --top_p P --top_k K --n_samples S --seed S] --out OUT.jsonl

Input rows: {"prompt_ids": [...]}, {"prompt": "text"}, or {"prompt": [chat messages]} rendered
with the chat template and a generation prompt (text and messages need a tokenizer in DIR).
Output: one row per sample, the n samples of a prompt consecutive, each the input row plus
`prompt_ids`, `sample_index`, `response_ids` (EOS included), `response_logprobs` (temperature-1
log-prob of each response token) and, with a tokenizer, `response_text` (special tokens skipped).
`--temperature 0` is greedy. Stop ids come from the tokenizer, else from the config files.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np
from absl import app, flags

from prime_jax.generation import sample_batches
from prime_jax.models import load_hf_checkpoint, read_hf_config
from prime_jax.sampling import SamplingConfig
from prime_jax.tokenizer import Tokenizer, TokenizerError
from prime_jax.tools import _cli

flags.DEFINE_string("prompts", None, "Input JSONL: prompt_ids, or prompt (text or chat messages).")
flags.DEFINE_integer("max_new_tokens", None, "Most tokens to generate per response.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature; 0 is greedy.")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = off).")
flags.DEFINE_integer("n_samples", 1, "Responses per prompt.")
flags.DEFINE_integer("seed", 0, "PRNG seed.")
FLAGS = flags.FLAGS


def prompt_ids(row: dict, where: str, tokenizer: Optional[Tokenizer], vocab_size: int) -> list[int]:
  """The row's prompt as token ids; `where` ("file:line") prefixes errors."""
  if "prompt_ids" in row:
    ids = _cli.token_ids(row, "prompt_ids", where, vocab_size)
  elif "prompt" in row:
    if tokenizer is None:
      raise _cli.InputError(
          f"{where}: a text `prompt` needs a tokenizer in the checkpoint "
          "directory; give `prompt_ids` instead"
      )
    prompt = row["prompt"]
    if isinstance(prompt, str):
      ids = tokenizer.encode(prompt)
    elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
      try:
        ids = tokenizer.encode_chat(prompt, add_generation_prompt=True)
      except TokenizerError as e:
        raise _cli.InputError(f"{where}: {e}") from None
    else:
      raise _cli.InputError(f"{where}: `prompt` must be a string or a list of chat messages")
  else:
    raise _cli.InputError(f"{where}: the row has neither `prompt_ids` nor `prompt`")
  if not ids:
    raise _cli.InputError(f"{where}: the prompt is empty")
  return ids


def generate_file(
    checkpoint: str,
    prompts_path: str,
    out_path: str,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    n_samples: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    dtype: str = "float32",
) -> list[dict]:
  """Generates for every row of `prompts_path`, writes `out_path` and returns the output rows.

  Raises `_cli.InputError` / `CheckpointError` / `TokenizerError` on bad input, before any model
  work when the input itself is at fault.
  """
  try:
    settings = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        n_samples=n_samples,
    )
  except ValueError as e:
    raise _cli.InputError(str(e)) from None
  if batch_size < 1:
    raise _cli.InputError(f"batch_size must be >= 1, got {batch_size}")
  config = read_hf_config(checkpoint, dtype=dtype)
  tokenizer = _cli.find_tokenizer(checkpoint)
  rows = _cli.read_jsonl(prompts_path)
  prompts = []
  for line_no, row in rows:
    where = f"{prompts_path}:{line_no}"
    ids = prompt_ids(row, where, tokenizer, config.vocab_size)
    if len(ids) + max_new_tokens > config.max_position_embeddings:
      raise _cli.InputError(
          f"{where}: the prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} that "
          f"exceeds the model's context of {config.max_position_embeddings} tokens"
      )
    prompts.append(ids)

  eos_ids, pad_id = _cli.stop_ids(checkpoint, tokenizer)
  settings = dataclasses.replace(settings, eos_ids=eos_ids, pad_id=pad_id)
  _, params = load_hf_checkpoint(checkpoint, dtype=dtype)
  out_rows = []
  batches = sample_batches(
      params, config, prompts, settings, jax.random.key(seed), min(batch_size, len(prompts))
  )
  first = 0  # the batch's first prompt
  for real, result in batches:
    for r in range(real * n_samples):
      i = first + r // n_samples
      length = int(result.lengths[r])
      response = result.tokens[r, :length].tolist()
      out = dict(
          rows[i][1],
          prompt_ids=prompts[i],
          sample_index=r % n_samples,
          response_ids=response,
          response_logprobs=np.asarray(result.logprobs[r, :length], float).tolist(),
      )
      if tokenizer is not None:
        out["response_text"] = tokenizer.decode(response, skip_special_tokens=True)
      out_rows.append(out)
    first += real
  _cli.write_jsonl(out_path, out_rows)
  return out_rows


def main(argv):
  _cli.run_main(
      argv,
      lambda: generate_file(
          FLAGS.checkpoint,
          FLAGS.prompts,
          FLAGS.out,
          max_new_tokens=FLAGS.max_new_tokens,
          temperature=FLAGS.temperature,
          top_p=FLAGS.top_p,
          top_k=FLAGS.top_k,
          n_samples=FLAGS.n_samples,
          seed=FLAGS.seed,
          batch_size=FLAGS.batch_size,
          dtype=FLAGS.dtype,
      ),
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "prompts", "max_new_tokens", "out"])
  app.run(main)
