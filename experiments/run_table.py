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
import os
import shlex
import subprocess
import sys
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: experiments/ is sys.path[0], not the repository
  sys.path.insert(0, REPO)

# The parts, by job (experiments/tables/): what a table is, running its runs, rendering them.
# Names the tests and other scripts reach as run_table.X are imported here.
from experiments import variants  # noqa: E402
from experiments.tables.definitions import BASE_FILES, PAIRS, TABLES  # noqa: E402,F401
from experiments.tables.render import (  # noqa: E402,F401
    collect,
    plot_curves,
    render_full,
    render_small,
)
from experiments.tables.runs import (  # noqa: E402,F401
    check_train_flags,
    eval_command,
    execute,
    is_finished,
    plan_runs,
    run_evals,
)
from prime_jax.paths import is_remote  # noqa: E402


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
