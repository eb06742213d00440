r"""Run the runs behind one of the paper's comparisons, over seeds, and render the table and curves.

  python experiments/run_table.py TABLE --scale full|small|credit [--seeds 0,1,2] [--workdir_root DIR]
      [--steps N] [--variants a,b] [--results_dir DIR] [--dry_run]
      [--eval_data_dir DATA --benchmarks all --eval_mode greedy] [--trained_prm DIR]
      [-- TRAIN_FLAGS...]

TABLE: table1 (PRIME vs outcome-only RLOO), dense_credit (table1 with PRIME's whole-response
density control and the oracle dense-reward ceiling; small scales only), table4 (estimators with
/ without PRIME, PRIME as value model), prm_ablations (the implicit-PRM ablations and the
16-samples run); the variants of
each are in TABLES below, their overrides in experiments/variants.py. For every (variant, seed)
it runs or resumes `python -m prime_jax.train --config=<base>.py:<variant> --workdir=<root>/
<variant>_seed<S>` in a subprocess, one at a time, skipping finished runs (summary.md written and
metrics.jsonl reaching total_steps); a failed run is reported and the others go on. Then it writes
<results_dir>/results.md, curves.png (mean over seeds, min-max band) and command.txt (this
command line, `git rev-parse HEAD`, every run's command).

Small scale (experiments/configs/arithmetic.py, a CPU; `--scale credit`: the same on the task's
dense-credit variant, experiments/configs/arithmetic_credit.py): the table holds the final held-out greedy
and sampled accuracy (mean +- sample std over seeds, from each run's metrics.jsonl eval rows)
beside the paper's number for the row. Each seed's SFT model is trained once, by its first run,
at <root>/sft_seed<S>, and reused by the seed's other variants (--config.sft.checkpoint).
The variants that start from a separately trained PRM (prm_offline, prm_from_trained) take the
same seed's PRIME run's exported PRM (a PRM trained online on this task by another run).

Full scale (experiments/configs/eurus2_7b.py, a pod): pass the model and data with TRAIN_FLAGS
(`-- --config.policy.checkpoint=SFT --config.task.data_dir=DATA`); each run then goes through the
eval harness (`python -m prime_jax.eval` on its export, --eval_data_dir) and the table is the
paper's Table 1 layout, our rows (mean over seeds) beside the paper's. Runs default to 240 RL
steps, the step at which the paper reports Table 1's PRIME / RLOO rows and Table 4.

TRAIN_FLAGS go to every run (e.g. a smaller model for a smoke test); --steps sets total_steps
(then the run directories get a _steps<N> suffix, so smoke runs never mix with real ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: experiments/ is sys.path[0], not the repository
  sys.path.insert(0, REPO)

from etils import epath  # noqa: E402

from experiments import table_stats, variants  # noqa: E402
from prime_jax.paths import is_remote  # noqa: E402

# small: the default task on a CPU; credit: its dense-credit variant (6-8 step chains, free
# operand order) on a CPU; full: Eurus-2-7B on a pod.
BASE_FILES = {
    "small": "experiments/configs/arithmetic.py",
    "credit": "experiments/configs/arithmetic_credit.py",
    "full": "experiments/configs/eurus2_7b.py",
}


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  variants: tuple[str, ...]
  full_steps: int = 240  # the paper reports Table 1's PRIME / RLOO rows and Table 4 at step 240


TABLES = {
    "table1": Table("PRIME vs outcome-only RLOO (paper Table 1)", ("prime", "rloo")),
    "table4": Table(
        "Advantage estimators with and without PRIME (paper Table 4)",
        (
            "rloo",
            "prime",
            "reinforce",
            "reinforce_prime",
            "grpo",
            "grpo_prime",
            "ppo",
            "ppo_prime",
            "prm_value",
        ),
    ),
    # Table 1 with the arms that say why PRIME does or does not separate (small scales only: the
    # oracle needs the task's step oracle). prime_whole keeps the PRM's judgement but drops its
    # within-response credit; oracle is the ceiling of any dense reward on the task.
    "dense_credit": Table(
        "PRIME vs outcome-only RLOO, with the density control and the oracle ceiling",
        ("rloo", "prime", "prime_whole", "oracle"),
    ),
    # No step is given for the ablations in the spec; they use the tables' 240 too.
    "prm_ablations": Table(
        "Implicit-PRM ablations and the 16-samples run (paper §5 ablations)",
        (
            "prime",
            "prm_offline",
            "prm_from_trained",
            "ref_policy",
            "double_forward",
            "prm_dpo",
            "prime_n16",
        ),
    ),
}

# The paper's numbers, copied from the project's spec (shared/PRIME_SPEC.md §9: "The paper's
# numbers (greedy pass@1, %)", from arXiv 2502.01456 v2 Table 1 and Table 4). Benchmark keys are
# prime_jax.evaluation's names, in Table 1's column order.
PAPER_TABLE1 = {  # row -> (step, {benchmark: %}); "avg" is the paper's own average
    "Eurus-2-7B-SFT": (
        0,
        dict(
            aime24=3.3,
            amc=30.1,
            math500=66.2,
            minerva=32.7,
            olympiadbench=29.8,
            leetcode=21.7,
            livecodebench=17.8,
            avg=28.8,
        ),
    ),
    "RLOO, outcome verifier only": (
        240,
        dict(
            aime24=20.0,
            amc=47.0,
            math500=73.2,
            minerva=36.4,
            olympiadbench=35.4,
            leetcode=28.3,
            livecodebench=26.7,
            avg=36.9,
        ),
    ),
    "PRIME": (
        240,
        dict(
            aime24=20.0,
            amc=50.6,
            math500=78.2,
            minerva=39.3,
            olympiadbench=40.3,
            leetcode=31.1,
            livecodebench=27.5,
            avg=41.0,
        ),
    ),
    "Eurus-2-7B-PRIME": (
        592,
        dict(
            aime24=26.7,
            amc=57.8,
            math500=79.2,
            minerva=38.6,
            olympiadbench=42.1,
            leetcode=33.3,
            livecodebench=28.6,
            avg=43.9,
        ),
    ),
    "Qwen2.5-Math-7B-Instruct": (
        None,
        dict(
            aime24=13.3,
            amc=50.6,
            math500=79.8,
            minerva=34.6,
            olympiadbench=40.7,
            leetcode=11.7,
            livecodebench=11.3,
            avg=34.6,
        ),
    ),
}
PAPER_TABLE1_ROW = {"prime": "PRIME", "rloo": "RLOO, outcome verifier only"}
PAPER_TABLE4_AVG = {  # spec §9: "Table 4 (avg at 240 steps, without -> with PRIME)"
    "rloo": 36.9,
    "prime": 41.0,
    "reinforce": 36.0,
    "reinforce_prime": 37.8,
    "grpo": 36.1,
    "grpo_prime": 37.8,
    "ppo": 35.8,
    "ppo_prime": 39.4,
    "prm_value": 36.6,
}
PAPER_FINDINGS = {  # spec §9's headline ablations: curves in the paper, no table numbers
    "prime": "the reference row",
    "prm_offline": "online PRM beats an offline PRM (whose accuracy decays)",
    "prm_from_trained": "PRM initialised from the SFT model beats a separately trained PRM",
    "ref_policy": "SFT-ref and policy-ref give similar rewards",
    "double_forward": "double forward raises PRM accuracy but not reward",
}

# (baseline, treated) pairs whose gap each small table reports, with confidence intervals.
PAIRS = {
    "table1": (("rloo", "prime"),),
    "table4": (
        ("rloo", "prime"),
        ("reinforce", "reinforce_prime"),
        ("grpo", "grpo_prime"),
        ("ppo", "ppo_prime"),
        ("rloo", "prm_value"),
    ),
    "prm_ablations": tuple(("prime", v) for v in TABLES["prm_ablations"].variants[1:]),
    "dense_credit": (
        ("rloo", "prime"),
        ("rloo", "oracle"),
        ("prime_whole", "prime"),
        ("rloo", "prime_whole"),
    ),
}
EFFICIENCY_METRIC, EFFICIENCY_WINDOW = "rollout/acc_all_samples", 10
TIMING_SKIP_STEPS = 2  # the first steps compile
PHASES = (
    ("time/sampling", "sampling"),
    ("time/grading", "grading"),
    ("time/update", "update"),
    ("time/prm_est", "PRM (est.)"),
    ("time/policy_est", "policy (est.)"),
    ("time/checkpoint", "checkpoint"),
)

CURVE_METRICS = (
    "eval/accuracy_greedy",
    "eval/accuracy_sampled",
    "rollout/acc_all_samples",
    "prm/acc_before",
    # The PRM's process credit on held-out mistake pairs (prime_jax.prm_credit), at every eval.
    "prm_credit/dip_mean",
    "prm_credit/localisation",
    "prm_credit/pair_accuracy",
)
SUMMARY_FILE = "summary.md"


# ----------------------------------------------------------------------------- the runs


@dataclasses.dataclass
class Run:
  variant: str
  seed: int
  workdir: str
  total_steps: int
  command: list[str]
  log: str
  needs: Optional[str] = None  # workdir of a run that must finish first (its trained PRM)

  @property
  def name(self) -> str:
    return f"{self.variant}_seed{self.seed}"


def base_config(scale: str):
  if scale == "small":
    from prime_jax.configs import arithmetic_config

    return arithmetic_config()
  if scale == "credit":
    from prime_jax.configs import arithmetic_credit_config

    return arithmetic_credit_config()
  from experiments.configs import eurus2_7b_prime

  return eurus2_7b_prime.base()


def _join(root: str, *parts: str) -> str:
  return os.fspath(epath.Path(root).joinpath(*parts))


def run_dir_name(variant: str, seed: int, steps: Optional[int]) -> str:
  return f"{variant}_seed{seed}" + (f"_steps{steps}" if steps is not None else "")


def check_train_flags(train_flags: Sequence[str]) -> None:
  owned = (
      "--workdir",
      "--config=",
      "--config.seed",
      "--config.total_steps",
      "--config.sft.checkpoint",
  )
  for flag in train_flags:
    if any(flag == o or flag.startswith(o if o.endswith("=") else o + "=") for o in owned):
      raise SystemExit(
          f"error: {flag.split('=')[0]} is set by run_table.py (use --seeds, "
          "--steps, --workdir_root); leave it out of the trainer flags"
      )


def plan_runs(args, train_flags: Sequence[str]) -> list[Run]:
  table = TABLES[args.table]
  chosen = list(table.variants) if not args.variants else args.variants
  unknown = [v for v in chosen if v not in variants.VARIANTS]
  if unknown:
    raise SystemExit(f"error: unknown variants {unknown}; known: {', '.join(variants.VARIANTS)}")
  if (
      args.scale != "full"
      and any(variants.needs_trained_prm(v) for v in chosen)
      and "prime" not in chosen
  ):
    chosen.insert(0, "prime")  # its exported PRM is the trained PRM
  base = base_config(args.scale)
  steps = (
      args.steps if args.steps is not None else (table.full_steps if args.scale == "full" else None)
  )
  log_dir = (
      _join(args.workdir_root, "logs")
      if not is_remote(args.workdir_root)
      else os.path.join(args.results_dir, "logs")
  )
  runs = []
  for seed in args.seeds:
    for variant in chosen:
      config = variants.apply(base, variant)
      total = steps if steps is not None else config.total_steps
      workdir = _join(args.workdir_root, run_dir_name(variant, seed, args.steps))
      command = [
          args.python,
          "-m",
          "prime_jax.train",
          f"--config={BASE_FILES[args.scale]}:{variant}",
          f"--workdir={workdir}",
          f"--config.seed={seed}",
      ]
      if steps is not None:
        command.append(f"--config.total_steps={steps}")
      if args.scale != "full":
        command.append(f"--config.sft.checkpoint={_join(args.workdir_root, f'sft_seed{seed}')}")
      needs = None
      if variants.needs_trained_prm(variant):
        if args.trained_prm:
          prm = args.trained_prm
        elif args.scale != "full":
          needs = _join(args.workdir_root, run_dir_name("prime", seed, args.steps))
          prm = _join(needs, "export", "prm")
        else:
          prm = None  # the config's placeholder: refused before running (see main)
        if prm:
          command.append(f"--config.prm.checkpoint={prm}")
      command += list(train_flags)
      runs.append(
          Run(
              variant,
              seed,
              workdir,
              total,
              command,
              os.path.join(log_dir, run_dir_name(variant, seed, args.steps) + ".log"),
              needs,
          )
      )
  return runs


def last_step(workdir: str) -> Optional[int]:
  from prime_jax.metrics_log import METRICS_FILE, read_metrics

  if not (epath.Path(workdir) / METRICS_FILE).exists():
    return None
  rows = read_metrics(workdir)
  return rows[-1]["step"] if rows else None


def is_finished(workdir: str, total_steps: int) -> bool:
  """summary.md written (the trainer's last act) and metrics up to total_steps."""
  if not (epath.Path(workdir) / SUMMARY_FILE).exists():
    return False
  step = last_step(workdir)
  return step is not None and step >= total_steps


def _env() -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  return env


def _tail(path: str, n: int = 25) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def execute(runs: Sequence[Run]) -> list[str]:
  """Runs the unfinished runs in order; returns the names of those that failed."""
  failed, failed_dirs = [], set()
  for i, run in enumerate(runs, 1):
    prefix = f"[{i}/{len(runs)}] {run.name}"
    if is_finished(run.workdir, run.total_steps):
      print(f"{prefix}: finished, skipped ({run.workdir})", flush=True)
      continue
    if run.needs and (run.needs in failed_dirs or not is_finished(run.needs, run.total_steps)):
      print(f"{prefix}: not run: it needs the finished run {run.needs}", flush=True)
      failed.append(run.name)
      failed_dirs.add(run.workdir)
      continue
    os.makedirs(os.path.dirname(run.log), exist_ok=True)
    print(f"{prefix}: running, log {run.log}", flush=True)
    with open(run.log, "a") as log:
      log.write("$ " + shlex.join(run.command) + "\n")
      log.flush()
      code = subprocess.run(
          run.command, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT
      ).returncode
    if code != 0 or not is_finished(run.workdir, run.total_steps):
      print(f"{prefix}: FAILED (exit {code}); the end of its log:\n{_tail(run.log)}", flush=True)
      failed.append(run.name)
      failed_dirs.add(run.workdir)
  return failed


# ----------------------------------------------------------------------------- full-scale eval


def eval_dir(run: Run) -> str:
  return _join(run.workdir, "eval")


def eval_command(args, run: Run) -> list[str]:
  return [
      args.python,
      "-m",
      "prime_jax.eval",
      f"--checkpoint={run.workdir}",
      f"--data_dir={args.eval_data_dir}",
      f"--benchmarks={args.benchmarks}",
      f"--mode={args.eval_mode}",
      f"--out={eval_dir(run)}",
      f"--name={run.name}",
  ]


def eval_results(run: Run) -> Optional[dict]:
  path = epath.Path(eval_dir(run)) / "results.json"
  return json.loads(path.read_text()) if path.exists() else None


def run_evals(args, runs: Sequence[Run]) -> list[str]:
  from prime_jax.evaluation import resolve_benchmarks

  wanted = {b.name for b in resolve_benchmarks(args.benchmarks)}
  failed = []
  for run in runs:
    if not is_finished(run.workdir, run.total_steps):
      continue
    done = eval_results(run)
    if done and wanted <= set(done.get("benchmarks", {})):
      print(f"eval {run.name}: done, skipped", flush=True)
      continue
    log = run.log[: -len(".log")] + ".eval.log"
    print(f"eval {run.name}: running, log {log}", flush=True)
    with open(log, "a") as f:
      command = eval_command(args, run)
      f.write("$ " + shlex.join(command) + "\n")
      f.flush()
      code = subprocess.run(
          command, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT
      ).returncode
    if code != 0:
      print(f"eval {run.name}: FAILED (exit {code}):\n{_tail(log)}", flush=True)
      failed.append(f"eval {run.name}")
  return failed


# ----------------------------------------------------------------------------- rendering


def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
  if not values:
    return "–"
  mean, std = _mean_std([v * scale for v in values])
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _rows(run: Run) -> list[dict]:
  from prime_jax.metrics_log import read_metrics

  return read_metrics(run.workdir) if last_step(run.workdir) is not None else []


def _eval_rows(rows: Sequence[dict]) -> list[dict]:
  return [r for r in rows if isinstance(r.get("eval/accuracy_greedy"), (int, float))]


def _window_mean(rows: Sequence[dict], key: str, total_steps: int) -> Optional[float]:
  """Mean of `key` over the last quarter of the RL steps (at least one step)."""
  start = total_steps - max(1, total_steps // 4)
  values = [r[key] for r in rows if r["step"] > start and isinstance(r.get(key), (int, float))]
  return sum(values) / len(values) if values else None


def collect(runs: Sequence[Run]) -> dict[str, list[tuple[Run, list[dict]]]]:
  """{variant: [(run, metrics rows)]} of the finished runs, in table order."""
  out: dict[str, list] = {}
  for run in runs:
    if is_finished(run.workdir, run.total_steps):
      out.setdefault(run.variant, []).append((run, _rows(run)))
  return out


def _paper_cell(table: str, variant: str) -> str:
  if table in ("table1", "dense_credit") and variant in PAPER_TABLE1_ROW:
    row = PAPER_TABLE1_ROW[variant]
    step, scores = PAPER_TABLE1[row]
    return f"{scores['avg']:.1f} ('{row}', step {step})"
  if table == "table4" and variant in PAPER_TABLE4_AVG:
    return f"{PAPER_TABLE4_AVG[variant]:.1f}"
  if table == "prm_ablations":
    return PAPER_FINDINGS.get(variant, "–")
  return "–"


def _paper_header(table: str) -> str:
  return {
      "table1": "paper: Table 1 avg (%)",
      "dense_credit": "paper: Table 1 avg (%)",
      "table4": "paper: Table 4 avg at step 240 (%)",
      "prm_ablations": "paper's finding (spec §9)",
  }[table]


def render_small(args, runs: Sequence[Run], done: dict) -> str:
  table = TABLES[args.table]
  chosen = [v for v in dict.fromkeys(r.variant for r in runs)]
  steps = sorted({r.total_steps for r in runs})
  lines = [
      f"# {args.table} ({args.scale} scale): {table.title}",
      "",
      f"Base `{BASE_FILES[args.scale]}` (`prime_jax.configs."
      f"{'arithmetic_config' if args.scale == 'small' else 'arithmetic_credit_config'}()`), "
      f"{'/'.join(map(str, steps))} RL steps, seeds {','.join(map(str, args.seeds))}. "
      "Held-out accuracy of the synthetic arithmetic task (greedy pass@1, and the mean "
      "accuracy of temperature-1 samples), from each run's metrics.jsonl eval rows: before "
      "RL (step 0) and at the last step, mean ± sample std over seeds. Training accuracy "
      "and PRM pair accuracy: mean over the last quarter of the steps. The paper's column "
      "is Eurus-2-7B on the Table 1 benchmarks: the direction to compare, not the scale.",
      "",
      "| variant | what | seeds | greedy before | greedy final | sampled before | "
      f"sampled final | training acc (all samples) | PRM acc | {_paper_header(args.table)} |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for variant in chosen:
    finished = done.get(variant, [])
    first, last, train, prm = [], [], [], []
    for run, rows in finished:
      evals = _eval_rows(rows)
      if evals:
        first.append(evals[0])
        last.append(evals[-1])
      for key, out in (("rollout/acc_all_samples", train), ("prm/acc_before", prm)):
        value = _window_mean(rows, key, run.total_steps)
        if value is not None:
          out.append(value)
    cells = [
        f"`{variant}`",
        variants.VARIANTS[variant].what,
        f"{len(finished)}/{len(args.seeds)}",
        _fmt([r["eval/accuracy_greedy"] for r in first]),
        _fmt([r["eval/accuracy_greedy"] for r in last]),
        _fmt([r["eval/accuracy_sampled"] for r in first]),
        _fmt([r["eval/accuracy_sampled"] for r in last]),
        _fmt(train),
        _fmt(prm),
        _paper_cell(args.table, variant),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += render_effects(args, done) + render_prm_accuracy(done) + render_timing(args, done)
  return "\n".join(lines) + "\n"


def _curve(rows: Sequence[dict], key: str) -> dict[int, float]:
  """{step: value} of the rows that log `key` with a finite number (the plot tool's series)."""
  from prime_jax.tools.plot import series

  return dict(zip(*series(rows, key)))


def _final_evals(finished, key: str) -> dict[int, float]:
  """{seed: the last eval's value of key}."""
  out = {}
  for run, rows in finished:
    evals = _eval_rows(rows)
    if evals:
      out[run.seed] = evals[-1][key]
  return out


def _gaps(treated, baseline, key: str) -> list[str]:
  """[unpaired, paired] gap cells of one metric."""
  t, b = _final_evals(treated, key), _final_evals(baseline, key)
  welch = table_stats.welch_gap(list(t.values()), list(b.values()))
  paired = table_stats.paired_gap(t, b)
  return [
      welch.format() if welch else "– (needs 2+ seeds each)",
      paired.format() if paired else "– (needs 2+ common seeds)",
  ]


def render_effects(args, done: dict) -> list[str]:
  """The gap of each (baseline, treated) pair of the table, with 95% CIs over seeds, and the
  steps the treated variant takes to reach the baseline's final training accuracy."""
  pairs = [(b, t) for b, t in PAIRS[args.table] if done.get(b) and done.get(t)]
  if not pairs:
    return []
  lines = [
      "",
      "## Effect of each change, with 95% confidence intervals",
      "",
      "Final gap: treated − baseline of the last eval's held-out accuracy. Unpaired: the "
      "difference of the seed means with Welch's t interval. Paired: the mean of the per-seed "
      "differences with the paired t interval; a seed's runs share the SFT model, the prompt "
      "order and the sampling keys, so pairing removes the seed-to-seed spread (mostly the SFT "
      "model's), the larger part of the unpaired interval. Seeds are the unit, so with 2–3 "
      "seeds either interval is wide. Steps to "
      f"reach: the first RL step at which the treated variant's seed-mean `{EFFICIENCY_METRIC}` "
      f"({EFFICIENCY_WINDOW}-step trailing mean) reaches the baseline's value at its last step "
      "(the paper's sample-efficiency measure, its '2.5×'), and baseline steps / that step; the "
      "interval is a percentile bootstrap over seeds (2000 resamples; a seed's two runs are "
      "resampled together when both variants have the same seeds; with 3 seeds it has few "
      "distinct values).",
      "",
      "| baseline → treated | seeds | sampled final gap, unpaired | paired | greedy final gap, "
      "unpaired | paired | steps to reach the baseline's final training acc |",
      "|---|---|---|---|---|---|---|",
  ]
  for base, treated in pairs:
    eff = table_stats.sample_efficiency(
        {run.seed: _curve(rows, EFFICIENCY_METRIC) for run, rows in done[treated]},
        {run.seed: _curve(rows, EFFICIENCY_METRIC) for run, rows in done[base]},
        window=EFFICIENCY_WINDOW,
    )
    cells = [
        f"{base} → {treated}",
        f"{len(done[base])} / {len(done[treated])}",
        *_gaps(done[treated], done[base], "eval/accuracy_sampled"),
        *_gaps(done[treated], done[base], "eval/accuracy_greedy"),
        eff.format() if eff else "–",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _num(value: Optional[float], digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[float]) -> Optional[float]:
  return statistics.median(values) if values else None


def render_timing(args, done: dict) -> list[str]:
  """Median seconds per RL step and per phase, pooled over seeds, eval time left out."""
  if not done:
    return []
  lines = [
      "",
      "## Wall-clock per RL step",
      "",
      f"Median over RL steps > {TIMING_SKIP_STEPS} (the first compile) of every seed's "
      "`time/*` metrics, seconds; step = the trainer's `time/step` minus its `time/eval`. "
      "The fused update is one compiled graph: its PRM / policy split is estimated from "
      "forward-pass counts (`algo.update_step.forward_passes`). × baseline: this step over "
      "the pair's baseline step (PAIRS).",
      "",
      "| variant | steps timed | step | " + " | ".join(n for _, n in PHASES) + " | × baseline |",
      "|---|---|---|" + "---|" * len(PHASES) + "---|",
  ]
  timed = {
      variant: [
          r
          for _, rs in finished
          for r in rs
          if r["step"] > TIMING_SKIP_STEPS and isinstance(r.get("time/step"), (int, float))
      ]
      for variant, finished in done.items()
  }
  medians = {
      variant: _median([r["time/step"] - r.get("time/eval", 0.0) for r in rows])
      for variant, rows in timed.items()
  }
  for variant, rows in timed.items():
    cells = [variant, str(len(rows)), _num(medians[variant], 2)]
    cells += [
        _num(_median([r[k] for r in rows if isinstance(r.get(k), (int, float))]), 2)
        for k, _ in PHASES
    ]
    base = next((b for b, t in PAIRS[args.table] if t == variant), None)
    ratio = medians[variant] / medians[base] if medians.get(base) and medians[variant] else None
    cells.append(f"{ratio:.2f}× {base}" if ratio else "–")
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def render_prm_accuracy(done: dict) -> list[str]:
  """The implicit PRM's pair accuracy on each step's fresh rollouts, by quarter of the run."""
  keyed = [
      (variant, key)
      for variant, finished in done.items()
      for key in ("prm/acc_before", "prm/acc_after")
      if any(_curve(rows, key) for _, rows in finished)
  ]
  if not keyed:
    return []
  lines = [
      "",
      "## Implicit PRM pair accuracy by quarter of the run",
      "",
      "`prm/acc_before`: share of (correct, incorrect) response pairs of a prompt whose "
      "implicit rewards rank the correct one higher, on each step's fresh rollouts, before "
      "that step's PRM update (`prm/acc_after`: after it, double forward only); the released "
      "metric's tie rule (`prime_jax.algo.prm_pair_accuracy`: an untrained PRM scores about 0.5; "
      "runs before it counted ties wrong). Mean over the steps of each quarter, then mean ± std "
      "over seeds. 0.5 is chance.",
      "",
      "| variant | metric | steps 1–25% | 25–50% | 50–75% | 75–100% |",
      "|---|---|---|---|---|---|",
  ]
  for variant, key in keyed:
    quarters = [[] for _ in range(4)]
    for run, rows in done[variant]:
      curve = _curve(rows, key)
      for q in range(4):
        part = [
            v
            for s, v in curve.items()
            if q * run.total_steps / 4 < s <= (q + 1) * run.total_steps / 4
        ]
        if part:
          quarters[q].append(sum(part) / len(part))
    lines.append(f"| {variant} | {key} | " + " | ".join(_fmt(q) for q in quarters) + " |")
  return lines


def render_full(args, runs: Sequence[Run], done: dict) -> str:
  from prime_jax.evaluation import TABLE_ORDER, render_table, table_average

  table = TABLES[args.table]
  chosen = [v for v in dict.fromkeys(r.variant for r in runs)]
  steps = sorted({r.total_steps for r in runs})
  ours, summary = [], []
  for variant in chosen:
    per_seed = [eval_results(run) for run, _ in done.get(variant, [])]
    per_seed = [r for r in per_seed if r]
    scores = {}
    for name in TABLE_ORDER:
      values = [r["benchmarks"][name]["score"] for r in per_seed if name in r["benchmarks"]]
      if values and len(values) == len(per_seed):
        scores[name] = sum(values) / len(values)
    if per_seed:
      ours.append((f"{variant} (ours, {len(per_seed)} seed{'s' * (len(per_seed) > 1)})", scores))
    avgs = [table_average({n: b["score"] for n, b in r["benchmarks"].items()}) for r in per_seed]
    validation = [
        (_eval_rows(rows) or [{}])[-1].get("eval/accuracy_greedy")
        for _, rows in done.get(variant, [])
    ]
    summary.append(
        (
            variant,
            len(done.get(variant, [])),
            len(per_seed),
            [a for a in avgs if a is not None],
            [v for v in validation if v is not None],
        )
    )
  paper_rows = []
  if args.table == "table1":
    paper_rows = [
        (
            f"{row} (paper{', step ' + str(step) if step is not None else ''})",
            {k: v / 100 for k, v in scores.items() if k != "avg"},
        )
        for row, (step, scores) in PAPER_TABLE1.items()
    ]
  lines = [
      f"# {args.table} (full scale): {table.title}",
      "",
      f"Base `{BASE_FILES['full']}` (Eurus-2-7B-SFT, Eurus-2-RL-Data), "
      f"{'/'.join(map(str, steps))} RL steps, seeds {','.join(map(str, args.seeds))}; "
      f"eval harness `prime_jax.eval` ({args.eval_mode}) on each run's exported policy, "
      f"benchmarks {args.benchmarks}. Our rows: the mean over seeds (a benchmark shows only "
      "when every seed has it); the paper's rows from spec §9.",
      "",
  ]
  if ours or paper_rows:
    lines += [render_table(ours + paper_rows), ""]
  if not args.eval_data_dir:
    lines += [
        "No --eval_data_dir: the benchmarks were not run; the summary below has the "
        "training run's own validation accuracy only.",
        "",
    ]
  lines += [
      f"| variant | what | runs finished | evaluated | avg (ours, %, mean ± std) | "
      f"validation greedy (training eval, last step) | {_paper_header(args.table)} |",
      "|---|---|---|---|---|---|---|",
  ]
  for variant, finished, evaluated, avgs, validation in summary:
    lines.append(
        "| "
        + " | ".join(
            [
                f"`{variant}`",
                variants.VARIANTS[variant].what,
                f"{finished}/{len(args.seeds)}",
                f"{evaluated}/{len(args.seeds)}",
                _fmt(avgs, 100, 1),
                _fmt(validation),
                _paper_cell(args.table, variant),
            ]
        )
        + " |"
    )
  return "\n".join(lines) + "\n"


def plot_curves(done: dict, out: str) -> Optional[str]:
  """One panel per metric in CURVE_METRICS that some run logs: per variant the mean over seeds
  against the RL step (steps every seed logs), with a min-max band."""
  from prime_jax.tools.plot import DEFAULT_METRICS, _UNIT_INTERVAL
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  metrics = [
      m for m in CURVE_METRICS if any(_curve(rows, m) for runs in done.values() for _, rows in runs)
  ]
  if not metrics:
    return None
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 4.0), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for i, (variant, runs) in enumerate(done.items()):
      per_seed = [_curve(rows, metric) for _, rows in runs]
      per_seed = [s for s in per_seed if s]
      if not per_seed:
        continue
      steps = sorted(set.intersection(*(set(s) for s in per_seed)))
      if not steps:
        continue
      values = [[s[step] for s in per_seed] for step in steps]
      mean = [sum(v) / len(v) for v in values]
      color = f"C{i % 10}"
      ax.plot(
          steps,
          mean,
          color=color,
          marker="o" if len(steps) <= 40 else None,
          markersize=3,
          linewidth=1.4,
          label=f"{variant} ({len(per_seed)})",
      )
      if len(per_seed) > 1:
        ax.fill_between(
            steps,
            [min(v) for v in values],
            [max(v) for v in values],
            color=color,
            alpha=0.18,
            linewidth=0,
        )
    ax.set_title(
        metric + (f"\n{DEFAULT_METRICS[metric]}" if metric in DEFAULT_METRICS else ""), fontsize=10
    )
    ax.set_xlabel("RL step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if metric in _UNIT_INTERVAL:
      ax.set_ylim(-0.03, 1.03)
  handles, labels = axes[0][0].get_legend_handles_labels()
  for ax in axes[0][1:]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 0.88))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110, format="png")
  plt.close(fig)
  return out


def git_head() -> str:
  try:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout)"


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str]):
  argv = list(argv)
  train_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(
      prog="experiments/run_table.py",
      description=__doc__.split("\n\n")[0],
      epilog="Flags after `--` go to every `python -m prime_jax.train` run.",
  )
  p.add_argument("table", choices=sorted(TABLES))
  p.add_argument("--scale", choices=tuple(BASE_FILES), required=True)
  p.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
  p.add_argument(
      "--workdir_root",
      default=None,
      help="where the runs live (default workdir/experiments/<scale>); runs are named "
      "<variant>_seed<S>, so tables share their common runs",
  )
  p.add_argument(
      "--steps",
      type=int,
      default=None,
      help="total_steps of every run (default: small the base's, full 240)",
  )
  p.add_argument("--variants", default=None, help="only these of the table's variants")
  p.add_argument("--results_dir", default=None, help="default experiments/results/<table>_<scale>")
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  p.add_argument(
      "--eval_data_dir",
      default=None,
      help="full scale: the benchmark files for prime_jax.eval (docs/eval.md)",
  )
  p.add_argument("--benchmarks", default="all", help="full scale: prime_jax.eval --benchmarks")
  p.add_argument("--eval_mode", default="greedy", help="full scale: prime_jax.eval --mode")
  p.add_argument(
      "--trained_prm",
      default=None,
      help="the trained PRM checkpoint of prm_offline and prm_from_trained (required "
      "at full scale; default at small scale: the same seed's PRIME run's "
      "export/prm)",
  )
  p.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if not args.seeds:
    p.error("--seeds is empty")
  if args.steps is not None and args.steps < 1:
    p.error("--steps must be >= 1")
  args.variants = (
      [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
  )
  args.workdir_root = args.workdir_root or os.path.join(REPO, "workdir", "experiments", args.scale)
  args.results_dir = args.results_dir or os.path.join(
      REPO, "experiments", "results", f"{args.table}_{args.scale}"
  )
  # The runs' subprocesses start in the repository: relative paths are made absolute here.
  for name in ("workdir_root", "results_dir", "eval_data_dir", "trained_prm"):
    value = getattr(args, name)
    if value and not is_remote(value):
      setattr(args, name, os.path.abspath(value))
  check_train_flags(train_flags)
  return args, train_flags


def main(argv: Sequence[str]) -> int:
  args, train_flags = parse_args(argv)
  runs = plan_runs(args, train_flags)
  full = args.scale == "full"
  if args.dry_run:
    for run in runs:
      print(shlex.join(run.command))
    if full:
      if not args.eval_data_dir:
        args.eval_data_dir = "EVAL_DATA"
      for run in runs:
        print(shlex.join(eval_command(args, run)))
    return 0
  missing_prm = [
      r.name
      for r in runs
      if variants.needs_trained_prm(r.variant)
      and not any(a.startswith("--config.prm.checkpoint=") for a in r.command)
  ]
  if missing_prm:
    raise SystemExit(
        f"error: {', '.join(missing_prm)} need --trained_prm DIR (a trained PRM "
        "checkpoint) at full scale"
    )
  os.makedirs(args.results_dir, exist_ok=True)
  command_txt = os.path.join(args.results_dir, "command.txt")
  with open(command_txt, "w") as f:
    f.write(shlex.join([sys.executable, sys.argv[0], *argv]) + "\n")
    f.write(f"cwd: {os.getcwd()}\ngit rev-parse HEAD: {git_head()}\n\nruns (cwd {REPO}):\n")
    for run in runs:
      f.write(shlex.join(run.command) + "\n")
    if full and args.eval_data_dir:
      f.write("\nevals:\n")
      for run in runs:
        f.write(shlex.join(eval_command(args, run)) + "\n")
  failed = execute(runs)
  if full and args.eval_data_dir:
    failed += run_evals(args, runs)
  done = collect(runs)
  text = (render_full if full else render_small)(args, runs, done)
  with open(os.path.join(args.results_dir, "results.md"), "w") as f:
    f.write(text)
  curves = plot_curves(done, os.path.join(args.results_dir, "curves.png"))
  print("\n" + text)
  print(
      f"wrote {args.results_dir}: results.md, command.txt"
      + (", curves.png" if curves else " (no curves: no finished run)")
  )
  if failed:
    print(f"{len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
