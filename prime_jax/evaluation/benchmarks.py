"""The harness's inputs: the benchmark table (names, Table 1 columns, default budgets), the
per-benchmark flag syntax, the sampling modes (greedy / avg@k), and the benchmark files read and
encoded as prompts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from prime_jax.data import formats
from prime_jax.data.prompts import SYSTEM_PROMPTS, Prompt, PromptEncoder, PromptFormat
from prime_jax.data.records import MalformedRecord, Record

# ----------------------------------------------------------------------------- benchmarks


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One benchmark: its CLI / file name, its Table 1 column, its ability and default budget."""

  name: str
  column: str
  ability: str  # "math" or "code"
  max_new_tokens: int  # default, from the PRIME repository's eval scripts (docs/eval.md)


# In the column order of the paper's Table 1. Default budgets: PRIME-RL/PRIME eval/scripts/eval:
# math/evaluate_math_chat_quicktest.py (MATH-500) max_tokens=8192, aime/ and amc/ 4096,
# leetcode/ 8192; Minerva and OlympiadBench run through the Qwen2.5-Math harness copied there
# (math_eval.py, --max_tokens_per_call default 4096); LiveCodeBench's budget is not set by
# run.sh (the vendored lcb_runner default applies, which we could not read): 8192, as LeetCode.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("aime24", "AIME24", "math", 4096),
        Benchmark("amc", "AMC", "math", 4096),
        Benchmark("math500", "MATH-500", "math", 8192),
        Benchmark("minerva", "Minerva", "math", 4096),
        Benchmark("olympiadbench", "OlympiadB", "math", 4096),
        Benchmark("leetcode", "LeetCode", "code", 8192),
        Benchmark("livecodebench", "LCB v2", "code", 8192),
    )
}
TABLE_ORDER = tuple(BENCHMARKS)
ALIASES = {
    "aime": "aime24",
    "amc23": "amc",
    "math": "math500",
    "math_500": "math500",
    "minerva_math": "minerva",
    "olympiad": "olympiadbench",
    "lcb": "livecodebench",
}
_LAYOUTS = ("{name}.jsonl", "{name}.parquet", "{name}/test.jsonl", "{name}/test.parquet")
_FORMAT_OF_ABILITY = {"math": "problems", "code": "code"}
MAX_REPORTED = 5
BUDGET_STEP = 64  # a budget cut by the context is rounded down to a multiple of this
EVAL_CODE_ABILITY = "code_eval"
ALL_TESTS = 1 << 20  # CodeConfig.max_tests meaning "every test of the item"
MISSING = "–"  # the table's mark for a benchmark not run


class EvalError(ValueError):
  """Bad input to the harness (benchmark names, files, rows, flags); printed without traceback."""


def resolve_benchmarks(spec: str | Sequence[str]) -> list[Benchmark]:
  """Benchmarks named in `spec` ("math500,aime24", a list, or "all"), in Table 1 order."""
  names = spec.split(",") if isinstance(spec, str) else list(spec)
  names = [n.strip().lower() for n in names if n.strip()]
  if not names:
    raise EvalError("no benchmarks given")
  if names == ["all"]:
    names = list(TABLE_ORDER)
  chosen = set()
  for name in names:
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
      raise EvalError(f"unknown benchmark {name!r}; known: {', '.join(TABLE_ORDER)} (or all)")
    chosen.add(name)
  return [BENCHMARKS[n] for n in TABLE_ORDER if n in chosen]


def parse_per_benchmark(spec, parse: Callable[[str], Any], what: str) -> tuple[Any, dict]:
  """ "V" or "V,name=V2,..." or "name=V,..." -> (default V or None, {benchmark name: V2}).

  A value that is not a string (e.g. an int or a dict from Python) is taken as it is: a dict
  maps benchmark names, anything else is the default for every benchmark.
  """
  if spec is None or spec == "":
    return None, {}
  if isinstance(spec, Mapping):
    items = [(k, v) for k, v in spec.items()]
  elif not isinstance(spec, str):
    return spec, {}
  else:
    items = []
    for part in (p.strip() for p in spec.split(",")):
      if not part:
        continue
      name, sep, value = part.rpartition("=")
      items.append((name.strip() if sep else None, value.strip()))
  default, per = None, {}
  for name, value in items:
    try:
      parsed = parse(value) if isinstance(value, str) else value
    except ValueError as e:
      raise EvalError(f"{what}: {e}") from None
    if name is None:
      if default is not None:
        raise EvalError(f"{what}: more than one default value in {spec!r}")
      default = parsed
      continue
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
      raise EvalError(f"{what}: unknown benchmark {name!r} in {spec!r}")
    per[key] = parsed
  return default, per


def positive_int(text: str) -> int:
  """`text` as an int >= 1 (flag values: budgets, pass@k's k); ValueError naming it otherwise."""
  try:
    value = int(text)
  except ValueError:
    raise ValueError(f"{text!r} is not an integer") from None
  if value < 1:
    raise ValueError(f"{value} must be >= 1")
  return value


# ----------------------------------------------------------------------------- modes


@dataclasses.dataclass(frozen=True)
class EvalMode:
  """greedy (k=1, temperature 0) or avg@k (k samples at `temperature` / `top_p`)."""

  k: int = 1
  temperature: float = 0.0
  top_p: float = 1.0

  @property
  def name(self) -> str:
    return "greedy" if self.temperature == 0 and self.k == 1 else f"avg@{self.k}"


def parse_mode(text: str, *, temperature: float = 0.3, top_p: float = 0.95) -> EvalMode:
  """ "greedy" (pass@1 at temperature 0) or "avg@K" (K samples at temperature/top_p, the mean of
  the per-sample scores)."""
  text = text.strip().lower()
  if text in ("greedy", "pass@1"):
    return EvalMode()
  if text.startswith("avg@"):
    try:
      k = positive_int(text[4:])
    except ValueError as e:
      raise ValueError(f"mode {text!r}: K of avg@K must be a positive integer ({e})") from None
    if temperature <= 0:
      raise ValueError(f"avg@{k} needs a temperature > 0, got {temperature}")
    return EvalMode(k=k, temperature=float(temperature), top_p=float(top_p))
  raise ValueError(f"unknown mode {text!r}; expected greedy or avg@K (e.g. avg@16)")


# ----------------------------------------------------------------------------- data


def find_benchmark_file(data_dir: str | os.PathLike, benchmark: Benchmark) -> Path:
  """The benchmark's file in `data_dir`: the first of <name>.jsonl, <name>.parquet,
  <name>/test.jsonl, <name>/test.parquet that exists."""
  data_dir = Path(data_dir)
  candidates = [data_dir / layout.format(name=benchmark.name) for layout in _LAYOUTS]
  for path in candidates:
    if path.is_file():
      return path
  raise EvalError(
      f"no file for benchmark {benchmark.name!r} in {data_dir}: tried "
      f"{', '.join(str(p.relative_to(data_dir)) for p in candidates)}"
  )


def load_benchmark(
    path: str | os.PathLike, benchmark: Benchmark, limit: Optional[int] = None
) -> list[Record]:
  """The first `limit` (all when None) records of a benchmark file, read with the
  `prime_jax.data.formats` layout of its ability. Any malformed row among them, or a duplicate
  id, is an error that names the rows."""
  fmt = _FORMAT_OF_ABILITY[benchmark.ability]
  convert = formats.converter(fmt, benchmark.name)
  records, bad, seen = [], [], set()
  try:
    rows = formats.read_rows(path)
    for row in rows:
      if limit is not None and len(records) >= limit:
        break
      if row.fields is None:
        bad.append(f"{row.where}: {row.error}")
        continue
      try:
        record = convert(row).validate()
      except MalformedRecord as e:
        bad.append(f"{row.where}: {e}")
        continue
      if record.id in seen:
        bad.append(f"{row.where}: duplicate id {record.id!r}")
        continue
      seen.add(record.id)
      records.append(record)
  except formats.InputError as e:
    raise EvalError(str(e)) from None
  if bad:
    more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
    raise EvalError(
        f"{path}: {len(bad)} malformed row(s) for the {fmt!r} layout of "
        f"{benchmark.name} (see docs/eval.md){more}:\n  " + "\n  ".join(bad[:MAX_REPORTED])
    )
  if not records:
    raise EvalError(f"{path} holds no rows")
  return records


def prompt_format(
    system_prompt: str = "eurus", user_suffix: bool = True, apply_chat_template: bool = True
) -> PromptFormat:
  """The released run's evaluation prompt by default: the Eurus system prompt, the ability's suffix and
  the chat template (`system_prompt` is a `prime_jax.data.SYSTEM_PROMPTS` name)."""
  if system_prompt not in SYSTEM_PROMPTS:
    raise EvalError(f"system_prompt {system_prompt!r}; expected one of {sorted(SYSTEM_PROMPTS)}")
  return PromptFormat(
      system_prompt=SYSTEM_PROMPTS[system_prompt],
      user_suffix=user_suffix,
      apply_chat_template=apply_chat_template,
  )


def encode_prompts(records: Sequence[Record], tokenizer, fmt: PromptFormat) -> list[Prompt]:
  """Every record's prompt (text and token ids), whatever its length."""
  encoder = PromptEncoder(tokenizer, fmt, max_prompt_len=1 << 30)
  return [encoder.encode(record) for record in records]
