"""Shared pieces of the command-line tools: flags, JSONL rows, checkpoint loading, error exits."""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Iterator, Optional, Sequence

from absl import flags

from prime_jax import console
from prime_jax.models import CheckpointError
from prime_jax.tokenizer import (
    EOS_CONFIG_FILES,
    HF_TOKENIZER_FILE,
    SENTENCEPIECE_FILE,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)

flags.DEFINE_string(
    "checkpoint",
    None,
    "Hugging Face checkpoint directory (config.json + "
    "safetensors; a tokenizer there enables text prompts and decoded output).",
)
flags.DEFINE_string("out", None, "Output JSONL file (prm_credit: an output directory).")
flags.DEFINE_integer("batch_size", 16, "Rows per model call (the last batch is padded to it).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model.")


class InputError(ValueError):
  """Bad user input (flags, rows, prompt lengths); the tools print it without a traceback."""


def run_main(argv: Sequence[str], fn: Callable[[], None]) -> None:
  """A tool's absl `main`: rejects stray arguments, keeps the backend-probing INFO lines off the
  console unless --verbosity is given, and runs `fn` under `run_reporting_errors`."""
  from absl import app

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.quiet_library_logs()
  run_reporting_errors(fn)


def run_reporting_errors(fn: Callable[[], None]) -> None:
  """Runs a tool body; input, checkpoint and tokenizer errors exit with status 1 and one line."""
  try:
    fn()
  except (InputError, CheckpointError, TokenizerError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def stop_ids(checkpoint: str, tokenizer: Optional[Tokenizer]) -> tuple[tuple[int, ...], int]:
  """(EOS ids, pad id): the tokenizer's, else `eos_token_id` / `pad_token_id` of the config files
  (pad falls back to the first EOS id, then 0). No EOS ids means rows stop only at the budget."""
  if tokenizer is not None:
    return tokenizer.eos_ids, tokenizer.pad_id
  eos_ids, pad_id = [], None
  for name in EOS_CONFIG_FILES:
    path = os.path.join(checkpoint, name)
    if os.path.exists(path):
      with open(path) as f:
        hf = json.load(f)
      eos = hf.get("eos_token_id")
      eos_ids += [i for i in ([eos] if isinstance(eos, int) else eos or []) if i not in eos_ids]
      pad_id = hf.get("pad_token_id") if pad_id is None else pad_id
  if pad_id is None:
    pad_id = eos_ids[0] if eos_ids else 0
  return tuple(eos_ids), pad_id


def find_tokenizer(checkpoint: str) -> Optional[Tokenizer]:
  """The tokenizer stored with the checkpoint, or None when the directory has none."""
  if any(
      os.path.exists(os.path.join(checkpoint, f)) for f in (HF_TOKENIZER_FILE, SENTENCEPIECE_FILE)
  ):
    return load_tokenizer(checkpoint)
  return None


def read_jsonl(path: str) -> list[tuple[int, dict]]:
  """(line number, row) for every non-blank line; a line that is not a JSON object is an error."""
  if not os.path.isfile(path):
    raise InputError(f"input file {path!r} does not exist")
  rows = []
  with open(path) as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
      rows.append((line_no, row))
  if not rows:
    raise InputError(f"{path}: no rows")
  return rows


def token_ids(row: dict, field: str, where: str, vocab_size: int) -> list[int]:
  """row[field] as a list of token ids in [0, vocab_size); `where` ("file:line") prefixes errors."""
  value = row.get(field)
  if not isinstance(value, list) or not all(
      isinstance(i, int) and not isinstance(i, bool) for i in value
  ):
    raise InputError(f"{where}: `{field}` must be a list of integer token ids")
  bad = [i for i in value if not 0 <= i < vocab_size]
  if bad:
    raise InputError(
        f"{where}: `{field}` has ids outside the vocabulary [0, {vocab_size}): " f"{bad[:5]}"
    )
  return value


def write_jsonl(path: str, rows: Sequence[dict]) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def batches(items: Sequence, size: int) -> Iterator[tuple[list, int]]:
  """(batch, number of real items) with the last batch padded by repeating its last item, so every
  model call has the same batch shape (one compiled program)."""
  size = min(size, len(items))
  for start in range(0, len(items), size):
    chunk = list(items[start : start + size])
    yield chunk + [chunk[-1]] * (size - len(chunk)), len(chunk)
