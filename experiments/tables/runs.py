"""The runs behind a table: one `python -m prime_jax.train` per (variant, seed) planned from the
command line (`plan_runs`), run one at a time in subprocesses, finished ones skipped (`execute`);
at full scale each run's export through `python -m prime_jax.eval` (`run_evals`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
from typing import Optional, Sequence

from etils import epath

from experiments import variants
from experiments.tables.definitions import BASE_FILES, SUMMARY_FILE, TABLES
from prime_jax.paths import is_remote

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
