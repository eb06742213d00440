"""Input files and their row layouts, turned into `Record`s.

Files: JSON Lines (`.jsonl`, one object per line; blank lines are ignored) or Parquet
(`.parquet`). A row's location is `path:line` (JSONL) or `path:row N` (Parquet, 1-based).

Row layouts (`--format`):
  eurus     Eurus-2-RL-Data (PRIME-RL/Eurus-2-RL-Data), either schema:
              current: data_source, prompt (chat messages, system + user), ability (math|code),
                       reward_model {style: "rule", ground_truth}, extra_info (ignored);
              older:   id, task (Math|Coding), source, instruction (the user message), reference
                       (the ground truth).
            The chat is kept as it is; the old schema's chat is the one user message.
  problems  math evaluation sets, {"problem", "answer"} (MATH-500, AIME, AMC). Also read: the
            problem as "question" (OlympiadBench), the answer as "final_answer" (OlympiadBench: a
            one-element list), or, when there is no answer field, the last \\boxed{} of
            "solution" (Minerva-Math as distributed with the Qwen2.5-Math evaluation). An integer
            answer becomes its decimal text. The id is "id", "unique_id" or "idx" when present.
  code      code sets with test cases in the APPS/TACO layout: "question" (or "problem"),
            "input_output" ({"inputs", "outputs"[, "fn_name"]}, an object or its JSON string),
            optional "starter_code" (appended to the problem in a ```python block) and
            "problem_id"/"id".
  auto      the first row that parses decides, per file: prompt + reward_model or
            instruction + reference -> eurus; input_output -> code; problem or question -> problems.

Rows without their own id get `<file name>:<line or row>`; `data_source` of problems and code
rows is the file's stem unless given.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from prime_jax.verifiers.math_answer import last_boxed
from prime_jax.data.records import MalformedRecord, Record

FORMATS = ("eurus", "problems", "code")
SUFFIXES = (".jsonl", ".parquet")
_OLD_EURUS_TASKS = {"Math": "math", "Coding": "code"}
_PARQUET_BATCH_ROWS = 1024


class InputError(ValueError):
  """An input file that cannot be read at all (missing, unknown kind, unknown format)."""


@dataclasses.dataclass(frozen=True)
class RawRow:
  """One row of an input file: its parsed fields, or why it could not be parsed."""

  where: str  # "path:line" or "path:row N"
  default_id: str  # "<file name>:<line or row>"
  fields: Optional[dict[str, Any]]  # None when the row did not parse
  error: Optional[str] = None


def check_input(path: str | Path) -> Path:
  path = Path(path)
  if not path.is_file():
    raise InputError(
        f"input file {path} does not exist" if not path.exists() else f"input {path} is not a file"
    )
  if path.suffix not in SUFFIXES:
    raise InputError(
        f"input file {path}: unknown file kind {path.suffix!r}; expected one of " f"{SUFFIXES}"
    )
  return path


def read_rows(path: str | Path) -> Iterator[RawRow]:
  """Every row of a `.jsonl` or `.parquet` file, in order."""
  path = check_input(path)
  return _jsonl_rows(path) if path.suffix == ".jsonl" else _parquet_rows(path)


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      where, default_id = f"{path}:{number}", f"{path.name}:{number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield RawRow(where, default_id, None, f"not valid UTF-8 ({e.reason} at byte {e.start})")
        continue
      if not line.strip():
        continue
      try:
        value = json.loads(line.rstrip("\r\n"))
      except json.JSONDecodeError as e:
        yield RawRow(where, default_id, None, f"bad JSON ({e.msg} at column {e.colno})")
        continue
      if not isinstance(value, dict):
        yield RawRow(where, default_id, None, f"expected a JSON object, got {type(value).__name__}")
        continue
      yield RawRow(where, default_id, value)


def _parquet_rows(path: Path) -> Iterator[RawRow]:
  try:
    table = pq.ParquetFile(path)
  except (pa.ArrowException, OSError) as e:
    raise InputError(f"input file {path} is not a readable Parquet file: {e}") from e
  decode = any(_has_binary(field.type) for field in table.schema_arrow)
  number = 0
  for batch in table.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
    for value in batch.to_pylist():
      number += 1
      where, default_id = f"{path}:row {number}", f"{path.name}:{number}"
      try:
        yield RawRow(where, default_id, _decode_bytes(value) if decode else value)
      except UnicodeDecodeError as e:
        yield RawRow(where, default_id, None, f"not valid UTF-8 ({e.reason} at byte {e.start})")


def _has_binary(dtype: pa.DataType) -> bool:
  if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
    return True
  if pa.types.is_struct(dtype):
    return any(_has_binary(dtype.field(i).type) for i in range(dtype.num_fields))
  if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
    return _has_binary(dtype.value_type)
  return False


def _decode_bytes(value: Any) -> Any:
  """Binary Parquet columns come back as bytes; our fields are text. (String columns are UTF-8
  by construction, so files without binary columns skip this.)"""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, dict):
    return {k: _decode_bytes(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_decode_bytes(v) for v in value]
  return value


def detect_format(fields: Mapping[str, Any]) -> Optional[str]:
  if {"prompt", "reward_model"} <= fields.keys() or {"instruction", "reference"} <= fields.keys():
    return "eurus"
  if "input_output" in fields:
    return "code"
  if "problem" in fields or "question" in fields:
    return "problems"
  return None


def converter(fmt: str, data_source: str) -> Callable[[RawRow], Record]:
  """row -> Record for one format (raises `MalformedRecord`); `data_source` is used by the
  problems and code formats."""
  if fmt == "eurus":
    return _eurus_record
  if fmt == "problems":
    return lambda row: _problem_record(row, data_source)
  if fmt == "code":
    return lambda row: _code_record(row, data_source)
  raise InputError(f"unknown format {fmt!r}; expected one of {FORMATS} or 'auto'")


# --------------------------------------------------------------------------- field helpers


def _require(fields: Mapping[str, Any], *names: str) -> Any:
  """The first of `names` that is present and not None."""
  for name in names:
    if fields.get(name) is not None:
      return fields[name]
  raise MalformedRecord(f"missing field {' / '.join(repr(n) for n in names)}")


def _text(value: Any, name: str) -> str:
  if not isinstance(value, str):
    raise MalformedRecord(f"{name} must be a string, got {type(value).__name__}")
  return value


def _answer_text(value: Any, name: str) -> str:
  """A math answer: a string, or a number written out (AIME answers are often integers)."""
  if isinstance(value, bool):
    raise MalformedRecord(f"{name} must be a string or a number, got a bool")
  if isinstance(value, numbers.Integral):
    return str(int(value))
  if isinstance(value, numbers.Real):
    return repr(float(value))
  return _text(value, name)


def _row_id(fields: Mapping[str, Any], row: RawRow, *names: str) -> str:
  for name in names:
    value = fields.get(name)
    if isinstance(value, str) and value.strip():
      return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
      return str(value)
  return row.default_id


def _json_text(value: Any, name: str) -> str:
  """A JSON object given either as an object or as its JSON string."""
  if isinstance(value, dict):
    return json.dumps(value, ensure_ascii=False)
  return _text(value, name)


def _user_chat(content: str) -> list[dict[str, str]]:
  return [{"role": "user", "content": content}]


# --------------------------------------------------------------------------- formats


def _eurus_record(row: RawRow) -> Record:
  fields = row.fields
  if "prompt" in fields:
    messages = fields["prompt"]
    if isinstance(messages, str):
      try:
        messages = json.loads(messages)
      except json.JSONDecodeError as e:
        raise MalformedRecord(f"prompt is not valid JSON: {e}") from None
    reward_model = _require(fields, "reward_model")
    if not isinstance(reward_model, dict):
      raise MalformedRecord("reward_model must be an object {style, ground_truth}")
    ability = _text(_require(fields, "ability"), "ability")
    truth = _require(reward_model, "ground_truth")
    return Record.from_chat(
        id=_row_id(fields, row, "id"),
        data_source=_text(_require(fields, "data_source"), "data_source"),
        ability=ability,
        messages=messages,
        ground_truth=(
            _json_text(truth, "ground_truth")
            if ability == "code"
            else _answer_text(truth, "ground_truth")
        ),
    )
  task = _require(fields, "task")
  if task not in _OLD_EURUS_TASKS:
    raise MalformedRecord(f"task {task!r} is not one of {sorted(_OLD_EURUS_TASKS)}")
  ability = _OLD_EURUS_TASKS[task]
  truth = _require(fields, "reference")
  return Record.from_chat(
      id=_row_id(fields, row, "id"),
      data_source=_text(_require(fields, "source"), "source"),
      ability=ability,
      messages=_user_chat(_text(_require(fields, "instruction"), "instruction")),
      ground_truth=(
          _json_text(truth, "reference") if ability == "code" else _answer_text(truth, "reference")
      ),
  )


def _problem_record(row: RawRow, data_source: str) -> Record:
  fields = row.fields
  problem = _text(_require(fields, "problem", "question"), "problem")
  if fields.get("answer") is not None or fields.get("final_answer") is not None:
    answer = _require(fields, "answer", "final_answer")
    if isinstance(answer, list):
      if len(answer) != 1:
        raise MalformedRecord(f"answer list must hold exactly one answer, got {len(answer)}")
      answer = answer[0]
    answer = _answer_text(answer, "answer")
  elif fields.get("solution") is not None:
    answer = last_boxed(_text(fields["solution"], "solution"))
    if answer is None:
      raise MalformedRecord("no answer field, and the solution has no \\boxed{} answer")
  else:
    raise MalformedRecord("missing field 'answer' / 'final_answer' / 'solution'")
  return Record.from_chat(
      id=_row_id(fields, row, "id", "unique_id", "idx"),
      data_source=data_source,
      ability="math",
      messages=_user_chat(problem),
      ground_truth=answer,
  )


def _code_record(row: RawRow, data_source: str) -> Record:
  fields = row.fields
  problem = _text(_require(fields, "question", "problem"), "question")
  starter = fields.get("starter_code")
  if isinstance(starter, str) and starter.strip():
    problem = f"{problem.rstrip()}\n\n```python\n{starter.strip(chr(10))}\n```"
  return Record.from_chat(
      id=_row_id(fields, row, "problem_id", "id"),
      data_source=data_source,
      ability="code",
      messages=_user_chat(problem),
      ground_truth=_json_text(_require(fields, "input_output"), "input_output"),
  )
