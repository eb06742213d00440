"""Small input rows and files for the data tests, in the layouts of the public data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prime_jax.data.prompts import EURUS_SYSTEM_PROMPT, USER_SUFFIXES

CODE_TESTS = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}


def eurus_row(i: int, ability: str = "math") -> dict:
  """A row of the current PRIME-RL/Eurus-2-RL-Data schema."""
  if ability == "math":
    question, truth = f"Find x if x - {i} = 1.", str(i + 1)
  else:
    question, truth = f"Read a and b and print a + b (case {i}).", json.dumps(CODE_TESTS)
  return {
      "data_source": "numina_olympiads" if ability == "math" else "taco",
      "prompt": [
          {"content": EURUS_SYSTEM_PROMPT, "role": "system"},
          {"content": question + USER_SUFFIXES[ability], "role": "user"},
      ],
      "ability": ability,
      "reward_model": {"ground_truth": truth, "style": "rule"},
      "extra_info": {"index": i, "split": "dummy"},
  }


def old_eurus_row(i: int, task: str = "Math") -> dict:
  """A row of the older id/task/source/instruction/reference schema."""
  if task == "Math":
    instruction, reference = f"Compute {i} + {i}." + USER_SUFFIXES["math"], str(2 * i)
  else:
    instruction, reference = f"Print the sum of two numbers ({i}).", json.dumps(CODE_TESTS)
  return {
      "id": f"old-{task}-{i}",
      "task": task,
      "source": "apps" if task == "Coding" else "amc",
      "instruction": instruction,
      "reference": reference,
  }


def write_jsonl(path: Path, rows) -> Path:
  """Each row: a dict (written as JSON) or raw bytes (written as they are, for broken lines)."""
  with open(path, "wb") as f:
    for row in rows:
      f.write(row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode())
      f.write(b"\n")
  return path


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
  pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
  return path
