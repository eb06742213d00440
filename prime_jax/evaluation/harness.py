"""One benchmark end to end (`evaluate_benchmark`), the Table 1 rendering, and the whole run
(`run_evaluation`: every benchmark, OUT/<benchmark>.jsonl, OUT/results.json, OUT/results.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from prime_jax.data.prompts import PromptFormat
from prime_jax.data.records import Record
from prime_jax.evaluation.benchmarks import (
    BENCHMARKS,
    MISSING,
    TABLE_ORDER,
    Benchmark,
    EvalError,
    EvalMode,
    encode_prompts,
    find_benchmark_file,
    load_benchmark,
    parse_mode,
    parse_per_benchmark,
    positive_int,
    prompt_format,
    resolve_benchmarks,
)
from prime_jax.evaluation.grading import extract, register_code_ability, score_items
from prime_jax.evaluation.responses import LoadedModel, generate_responses, load_model
from prime_jax.verifiers import MATH_GRADERS

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
    default_budget, budgets = parse_per_benchmark(max_new_tokens, positive_int, "max_new_tokens")
  except ValueError as e:
    raise EvalError(str(e)) from None
  for value in [default_budget, *budgets.values()]:
    if value is not None and (not isinstance(value, int) or value < 1):
      raise EvalError(f"max_new_tokens must be a positive integer, got {value!r}")

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
