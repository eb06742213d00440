"""The evaluation harness: the PRIME paper's benchmarks (Table 1) on a Hugging Face checkpoint.

    python -m prime_jax.eval --checkpoint DIR --benchmarks math500,aime24 --data_dir DATA

(CLI: `prime_jax/eval.py`; layouts, flags and the defaults' sources: `docs/eval.md`.)

The steps, each a function here:
  1. `load_benchmark`: a local JSONL/Parquet file (`find_benchmark_file`: DIR/<name>.jsonl or
     DIR/<name>/test.jsonl) read with `prime_jax.data.formats` (math: the `problems` layout, code:
     the `code` layout); a malformed row is an error, not a silent skip, since it would change
     the denominator;
  2. `encode_prompts`: the released run's prompt (Eurus action-centric system prompt + the ability's user
     suffix + the tokenizer's chat template), by `prime_jax.data.PromptEncoder`;
  3. `generate_responses`: prompts sorted by length, cut into fixed-size batches and sampled by
     `prime_jax.generation.generate` (the shared jitted sampler, prompt widths bucketed); greedy,
     or k samples per prompt for avg@k. A prompt whose budget would pass the model's context gets
     what is left (rounded down to `BUDGET_STEP` so batches share compiled shapes), as vLLM stops at
     `max_model_len`;
  4. `score_items`: the verifier registry; math 0/1 (`prime_jax.verifiers` "math", in the mode
     `math_grader` names: strict or released, docs/math_grading.md), code 1 when
     every test case passes (pass@1 as LeetCode / LiveCodeBench count it; the fraction passed is
     kept next to it), run in the sandbox with all of the item's tests (not training's 10);
  5. `render_table`: the paper's Table 1 layout, "–" for benchmarks not run (left out of avg).
`run_evaluation` chains them and writes OUT/<benchmark>.jsonl, OUT/results.json, OUT/results.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

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


def _positive_int(text: str) -> int:
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
      k = _positive_int(text[4:])
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


# ----------------------------------------------------------------------------- the model


@dataclasses.dataclass
class LoadedModel:
  """A checkpoint ready to sample: its directory, config, params (on the mesh) and tokenizer."""

  directory: str
  config: Any  # DecoderConfig
  params: Any
  tokenizer: Any  # prime_jax.tokenizer.Tokenizer


def resolve_checkpoint(path: str | os.PathLike) -> Path:
  """The HF checkpoint directory of `path`: `path` itself when it holds config.json, else a
  trainer workdir's exported policy (`path/export/policy`)."""
  path = Path(path)
  if (path / "config.json").is_file():
    return path
  exported = path / "export" / "policy"
  if (exported / "config.json").is_file():
    return exported
  if not path.exists():
    raise EvalError(
        f"checkpoint {path} does not exist (a local directory is needed; download "
        "a Hub model first, e.g. `huggingface-cli download NAME --local-dir DIR`)"
    )
  raise EvalError(
      f"{path} is neither a Hugging Face checkpoint directory (no config.json) nor a "
      "trainer workdir with export/policy/config.json"
  )


def load_model(
    checkpoint: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    mesh: str | Mapping[str, int] = "data=-1,fsdp=1,tensor=1",
) -> LoadedModel:
  """Loads `checkpoint` (see `resolve_checkpoint`) with its tokenizer, params in `dtype` laid out
  on a mesh of all devices (`prime_jax.sharding.make_mesh(mesh)`, the default rule table)."""
  from prime_jax.models import load_hf_checkpoint, read_hf_config
  from prime_jax.sharding import DEFAULT_RULES, make_mesh, param_shardings, parse_mesh
  from prime_jax.tokenizer import load_tokenizer

  directory = resolve_checkpoint(checkpoint)
  tokenizer = load_tokenizer(directory)
  overrides = dict(dtype=dtype, param_dtype=dtype)
  config = read_hf_config(str(directory), **overrides)
  try:
    try:
      axes = parse_mesh(mesh)
    except ValueError as e:
      raise EvalError(str(e)) from None
    device_mesh = make_mesh(axes)
  except ValueError as e:
    raise EvalError(f"mesh: {e}") from None
  shardings = param_shardings(config, device_mesh, DEFAULT_RULES)
  config, params = load_hf_checkpoint(str(directory), shardings=shardings, **overrides)
  return LoadedModel(str(directory), config, params, tokenizer)


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class BatchGroup:
  """Consecutive batches of the length-sorted prompts that share one token budget."""

  indices: tuple[int, ...]
  max_new_tokens: int


def plan_generation(
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_new_tokens: int,
    context: int,
    step: int = BUDGET_STEP,
) -> tuple[list[BatchGroup], list[int]]:
  """(groups, skipped): prompts sorted by length (stable), cut into batches of `batch_size`,
  each batch's budget `max_new_tokens` or, when its longest prompt leaves less room in the
  `context`, the room left rounded down to a multiple of `step` (the exact room when under
  `step`); consecutive batches of one budget form a group. `skipped`: prompts that fill the
  context on their own (no budget left)."""
  if batch_size < 1 or max_new_tokens < 1:
    raise ValueError(
        f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must " "be >= 1"
    )
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  skipped = [i for i in order if context - lengths[i] < 1]
  order = [i for i in order if context - lengths[i] >= 1]
  groups: list[BatchGroup] = []
  for start in range(0, len(order), batch_size):
    chunk = order[start : start + batch_size]
    room = context - lengths[chunk[-1]]
    if room >= max_new_tokens:
      budget = max_new_tokens
    else:
      budget = room // step * step if room >= step else room
    if groups and groups[-1].max_new_tokens == budget:
      groups[-1] = BatchGroup(groups[-1].indices + tuple(chunk), budget)
    else:
      groups.append(BatchGroup(tuple(chunk), budget))
  return groups, sorted(skipped)


def generate_responses(
    model: LoadedModel,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    mode: EvalMode,
    batch_size: int,
    key: jax.Array,
) -> tuple[list[list[str]], list[int]]:
  """(responses, budgets): `mode.k` decoded responses per prompt (in the prompts' order) and
  each prompt's token budget (0, with k empty responses, for a prompt that fills the context).

  Batches are built by `plan_generation` and sampled by `prime_jax.generation.generate`.
  """
  from prime_jax.sampling import SamplingConfig
  from prime_jax.generation import generate

  tokenizer = model.tokenizer
  lengths = [len(p.token_ids) for p in prompts]
  groups, _ = plan_generation(
      lengths,
      batch_size=batch_size,
      max_new_tokens=max_new_tokens,
      context=model.config.max_position_embeddings,
  )
  responses: list[list[str]] = [[""] * mode.k for _ in prompts]
  budgets = [0] * len(prompts)
  for g, group in enumerate(groups):
    sampling = SamplingConfig(
        max_new_tokens=group.max_new_tokens,
        temperature=mode.temperature,
        top_p=mode.top_p,
        n_samples=mode.k,
        eos_ids=tokenizer.eos_ids,
        pad_id=tokenizer.pad_id,
    )
    texts = generate(
        model.params,
        model.config,
        tokenizer,
        [list(prompts[i].token_ids) for i in group.indices],
        sampling,
        jax.random.fold_in(key, g),
        min(batch_size, len(group.indices)),
    )
    for j, i in enumerate(group.indices):
      responses[i] = texts[j * mode.k : (j + 1) * mode.k]
      budgets[i] = group.max_new_tokens
  return responses, budgets


# ----------------------------------------------------------------------------- scoring


def extract(ability: str, response: str, math_grader: str = "strict") -> Optional[str]:
  """What the grader reads: math, the final answer as `math_grader` extracts it (strict: last
  \\boxed{}, else "answer is"; released: docs/math_grading.md); code, the last ```python block.
  None when there is none."""
  if ability == "math" and math_grader == "released":
    from prime_jax.verifiers.released_math import released_answer

    return released_answer(response) or None
  if ability == "math":
    from prime_jax.verifiers.math_answer import extract_answer

    return extract_answer(response)
  from prime_jax.verifiers.code_tests import extract_code

  return extract_code(response)


def register_code_ability(
    max_tests: int = 0, isolation: str = "strict", per_test_timeout_s: float = 5.0
) -> None:
  """Registers EVAL_CODE_ABILITY: code graded in the sandbox on `max_tests` tests per item
  (0: all of them), with the given isolation (docs/verifiers.md)."""
  from prime_jax.verifiers import CodeConfig, SandboxConfig, register_ability
  from prime_jax.verifiers.code_grader import code_ability_kwargs

  try:
    config = CodeConfig(
        max_tests=max_tests or ALL_TESTS,
        sandbox=SandboxConfig(isolation=isolation, per_test_timeout_s=per_test_timeout_s),
    )
  except ValueError as e:
    raise EvalError(str(e)) from None
  register_ability(EVAL_CODE_ABILITY, replace=True, **code_ability_kwargs(config))


def _code_timeout(ground_truths: Sequence[str]) -> float:
  """Per-item limit for code: every test of the largest suite at its full per-test time."""
  from prime_jax.verifiers import get_ability

  score_fn = get_ability(EVAL_CODE_ABILITY).score_fn
  config = score_fn.keywords["config"]
  most = max((len(json.loads(t).get("inputs", ())) for t in ground_truths), default=1)
  return (
      min(most, config.max_tests) * config.sandbox.per_test_timeout_s + config.sandbox.setup_grace_s
  )


@dataclasses.dataclass
class Scores:
  """Per-sample grades [items, k]: `scores` (0/1), `raw` (the verifier's score: code, the
  fraction of tests passed), `statuses` (grading status) and the grading stats' numbers."""

  scores: np.ndarray
  raw: np.ndarray
  statuses: list[list[str]]
  stats: dict


def score_items(
    ability: str,
    responses: Sequence[Sequence[str]],
    ground_truths: Sequence[str],
    *,
    pool=None,
    math_grader: str = "strict",
) -> Scores:
  """Grades every sample of every item with the verifier registry: math by the "math" ability in
  mode `math_grader`, code by EVAL_CODE_ABILITY (registered with its defaults if not yet), a code sample scoring 1
  only when all of its tests pass."""
  from prime_jax import verifiers

  k = len(responses[0]) if responses else 0
  if any(len(r) != k for r in responses):
    raise ValueError("every item needs the same number of responses")
  flat = [r for rs in responses for r in rs]
  truths = [t for t in ground_truths for _ in range(k)]
  if ability == "math":
    raw, stats = verifiers.grade_with_stats("math", flat, truths, pool=pool, mode=math_grader)
    scores = raw
  elif ability == "code":
    if EVAL_CODE_ABILITY not in verifiers.registered_abilities():
      register_code_ability()
    raw, stats = verifiers.grade_with_stats(
        EVAL_CODE_ABILITY, flat, truths, pool=pool, timeout_s=_code_timeout(ground_truths)
    )
    scores = (raw >= 1.0).astype(np.float32)
  else:
    raise EvalError(f"no grading for ability {ability!r}")
  shape = (len(responses), k)
  statuses = [list(stats.statuses[i * k : (i + 1) * k]) for i in range(len(responses))]
  numbers = {key.split("/", 2)[2]: value for key, value in stats.as_dict().items()}
  numbers["errors"] = list(stats.errors)
  return Scores(
      np.asarray(scores, np.float64).reshape(shape),
      np.asarray(raw, np.float64).reshape(shape),
      statuses,
      numbers,
  )


# ----------------------------------------------------------------------------- one benchmark


@dataclasses.dataclass
class BenchmarkResult:
  """A benchmark's score (mean over items of the mean over k samples, in [0, 1]) and settings."""

  name: str
  column: str
  ability: str
  file: str
  mode: str
  k: int
  temperature: float
  top_p: float
  num_items: int
  score: float
  max_new_tokens: int  # requested
  max_new_tokens_used: list[int]  # [min, max] over items actually generated for
  num_prompt_too_long: int
  wall_s: float
  grading: dict
  math_grader: Optional[str] = None  # the math grader's mode; None for code

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def evaluate_benchmark(
    model: LoadedModel,
    benchmark: Benchmark,
    records: Sequence[Record],
    *,
    fmt: PromptFormat,
    mode: EvalMode,
    max_new_tokens: int,
    batch_size: int,
    key: jax.Array,
    file: str = "",
    pool=None,
    math_grader: str = "strict",
) -> tuple[Optional[BenchmarkResult], list[dict]]:
  """Generates for, grades and summarises one benchmark; returns (result, per-item rows). Every
  process generates (the sampler is a collective); only process 0 grades and gets a result, the
  others get (None, [])."""
  start = time.time()
  prompts = encode_prompts(records, model.tokenizer, fmt)
  responses, budgets = generate_responses(
      model, prompts, max_new_tokens=max_new_tokens, mode=mode, batch_size=batch_size, key=key
  )
  if jax.process_index() != 0:
    return None, []
  graded = score_items(
      benchmark.ability,
      responses,
      [r.ground_truth for r in records],
      pool=pool,
      math_grader=math_grader,
  )
  rows = []
  for i, (record, prompt) in enumerate(zip(records, prompts)):
    row = dict(
        benchmark=benchmark.name,
        index=i,
        id=record.id,
        prompt=prompt.text,
        prompt_tokens=len(prompt.token_ids),
        ground_truth=record.ground_truth,
        max_new_tokens=budgets[i],
        prompt_too_long=budgets[i] == 0,
        responses=responses[i],
        extracted=[extract(benchmark.ability, r, math_grader) for r in responses[i]],
        scores=graded.scores[i].tolist(),
        score=float(graded.scores[i].mean()),
        grading_status=graded.statuses[i],
    )
    if benchmark.ability == "code":
      row["test_pass_fraction"] = graded.raw[i].tolist()
    rows.append(row)
  used = [b for b in budgets if b > 0]
  result = BenchmarkResult(
      name=benchmark.name,
      column=benchmark.column,
      ability=benchmark.ability,
      file=file,
      mode=mode.name,
      k=mode.k,
      temperature=mode.temperature,
      top_p=mode.top_p,
      num_items=len(records),
      score=float(graded.scores.mean(axis=1).mean()),
      max_new_tokens=max_new_tokens,
      max_new_tokens_used=[min(used), max(used)] if used else [0, 0],
      num_prompt_too_long=len(budgets) - len(used),
      wall_s=round(time.time() - start, 2),
      grading=graded.stats,
      math_grader=math_grader if benchmark.ability == "math" else None,
  )
  return result, rows


# ----------------------------------------------------------------------------- the table


def _cell(score: Optional[float]) -> str:
  return MISSING if score is None else f"{100 * score:.1f}"


def table_average(scores: Mapping[str, float]) -> Optional[float]:
  """Mean of the Table 1 benchmarks that were run, None when none was."""
  present = [scores[n] for n in TABLE_ORDER if scores.get(n) is not None]
  return float(np.mean(present)) if present else None


def render_table(rows: Mapping[str, Mapping[str, float]] | Sequence[tuple[str, Mapping]]) -> str:
  """A markdown table in the paper's Table 1 layout: one row per model (label -> {benchmark
  name: score in [0, 1]}), scores in percent; benchmarks not run are "–" and left out of avg."""
  items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
  header = ["Model"] + [BENCHMARKS[n].column for n in TABLE_ORDER] + ["avg"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, scores in items:
    cells = [_cell(scores.get(n)) for n in TABLE_ORDER] + [_cell(table_average(scores))]
    lines.append("| " + " | ".join([str(label).replace("|", "\\|")] + cells) + " |")
  return "\n".join(lines)


def results_markdown(label: str, results: Mapping[str, BenchmarkResult | dict]) -> str:
  """results.md: the table, the math grader that produced it, and one line per benchmark run
  (mode, items, budget)."""
  plain = {
      n: (r.to_dict() if isinstance(r, BenchmarkResult) else dict(r)) for n, r in results.items()
  }
  lines = [
      render_table({label: {n: r["score"] for n, r in plain.items()}}),
      "",
      "Scores in %; greedy = pass@1 at temperature 0, avg@k = mean over k samples per "
      "problem of the per-sample score; – = not run (not in avg).",
      "",
  ]
  graders = sorted({r["math_grader"] for r in plain.values() if r.get("math_grader")})
  if graders:
    lines += [
        f"Math answers graded by the {' and '.join(graders)} grader (docs/math_grading.md).",
        "",
    ]
  for name in TABLE_ORDER:
    if name in plain:
      r = plain[name]
      sampling = (
          ""
          if r["mode"] == "greedy"
          else f" at temperature {r['temperature']:g}, top-p {r['top_p']:g}"
      )
      lo, hi = r["max_new_tokens_used"]
      used = f"{hi}" if lo == hi else f"{lo}-{hi}"
      lines.append(
          f"- {r['column']}: {_cell(r['score'])} ({r['mode']}{sampling}, "
          f"{r['num_items']} problems, max_new_tokens {r['max_new_tokens']}"
          + (f", {used} used within the context" if used != str(r["max_new_tokens"]) else "")
          + (
              f", {r['num_prompt_too_long']} prompts too long (scored 0)"
              if r["num_prompt_too_long"]
              else ""
          )
          + ")"
      )
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the whole run


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def run_evaluation(
    checkpoint: str | os.PathLike,
    benchmarks: str | Sequence[str],
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mode: str | EvalMode | Mapping = "greedy",
    max_new_tokens: int | str | Mapping | None = None,
    limit: Optional[int] = None,
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = 0.3,
    top_p: float = 0.95,
    dtype: str = "bfloat16",
    mesh: str | Mapping[str, int] = "data=-1,fsdp=1,tensor=1",
    system_prompt: str = "eurus",
    user_suffix: bool = True,
    apply_chat_template: bool = True,
    code_max_tests: int = 0,
    code_isolation: str = "strict",
    math_grader: str = "strict",
    label: Optional[str] = None,
    model: Optional[LoadedModel] = None,
    pool=None,
    log: Callable[[str], None] = print,
) -> dict:
  """Evaluates `checkpoint` on `benchmarks` and writes OUT/<benchmark>.jsonl, results.json and
  results.md (rewritten after each benchmark); returns results.json's content.

  `mode` and `max_new_tokens` take one value for all benchmarks or per-benchmark overrides
  ("avg@16", "greedy,aime24=avg@16", "4096", "math500=8192,aime24=2048"; unset budgets are each
  benchmark's default). Every input is checked (names, files, rows, flags) before the model is
  loaded. `model` reuses a loaded model (then `checkpoint` only labels the run).
  """
  chosen = resolve_benchmarks(benchmarks)
  if limit is not None and limit < 1:
    raise EvalError(f"limit must be >= 1, got {limit}")
  if batch_size < 1:
    raise EvalError(f"batch_size must be >= 1, got {batch_size}")
  to_mode = (
      lambda m: m
      if isinstance(m, EvalMode)
      else parse_mode(m, temperature=temperature, top_p=top_p)
  )
  try:
    default_mode, modes = parse_per_benchmark(mode, to_mode, "mode")
    default_mode = to_mode(default_mode) if default_mode is not None else EvalMode()
    modes = {n: to_mode(m) for n, m in modes.items()}
    default_budget, budgets = parse_per_benchmark(max_new_tokens, _positive_int, "max_new_tokens")
  except ValueError as e:
    raise EvalError(str(e)) from None
  for value in [default_budget, *budgets.values()]:
    if value is not None and (not isinstance(value, int) or value < 1):
      raise EvalError(f"max_new_tokens must be a positive integer, got {value!r}")
  from prime_jax.verifiers import MATH_GRADERS

  if math_grader not in MATH_GRADERS:
    raise EvalError(f"math_grader must be one of {', '.join(MATH_GRADERS)}, got {math_grader!r}")
  fmt = prompt_format(system_prompt, user_suffix, apply_chat_template)
  data = {}
  for b in chosen:
    path = find_benchmark_file(data_dir, b)
    data[b.name] = (path, load_benchmark(path, b, limit))
  if any(b.ability == "code" for b in chosen):
    register_code_ability(code_max_tests, code_isolation)

  if model is None:
    model = load_model(checkpoint, dtype=dtype, mesh=mesh)
  label = label or default_label(checkpoint)
  primary = jax.process_index() == 0
  out_dir = Path(out_dir)
  if primary:
    out_dir.mkdir(parents=True, exist_ok=True)
  key = jax.random.key(seed)
  results: dict[str, BenchmarkResult] = {}
  summary: dict = {}
  for b in chosen:
    path, records = data[b.name]
    b_mode = modes.get(b.name, default_mode)
    budget = budgets.get(b.name, default_budget) or b.max_new_tokens
    log(f"{b.name}: {len(records)} problems from {path}, {b_mode.name}, max_new_tokens {budget}")
    result, rows = evaluate_benchmark(
        model,
        b,
        records,
        fmt=fmt,
        mode=b_mode,
        max_new_tokens=budget,
        batch_size=batch_size,
        key=jax.random.fold_in(key, TABLE_ORDER.index(b.name)),
        file=str(path),
        pool=pool,
        math_grader=math_grader,
    )
    if not primary:
      continue
    results[b.name] = result
    _write_jsonl(out_dir / f"{b.name}.jsonl", rows)
    summary = dict(
        checkpoint=str(checkpoint),
        model_dir=model.directory,
        label=label,
        benchmarks={n: r.to_dict() for n, r in results.items()},
        avg=table_average({n: r.score for n, r in results.items()}),
        table_columns=["Model"] + [BENCHMARKS[n].column for n in TABLE_ORDER] + ["avg"],
        settings=dict(
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            dtype=dtype,
            system_prompt=system_prompt,
            user_suffix=user_suffix,
            apply_chat_template=apply_chat_template,
            code_max_tests=code_max_tests,
            code_isolation=code_isolation,
            math_grader=math_grader,
            context=model.config.max_position_embeddings,
        ),
    )
    _write_text(out_dir / "results.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _write_text(out_dir / "results.md", results_markdown(label, results))
    log(f"{b.name}: {_cell(result.score)} ({result.wall_s:.0f} s)")
  return summary


def default_label(checkpoint) -> str:
  """The table's row label: the checkpoint directory's name, or the trainer workdir's name for
  its exported policy."""
  path = Path(checkpoint).resolve()
  if path.name == "policy" and path.parent.name == "export":
    path = path.parent.parent
  return path.name or str(checkpoint)
