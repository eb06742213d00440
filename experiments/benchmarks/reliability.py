r"""The reliability table, from the fault suite's own runs: docs/reliability.md, and the kill soak.

    .venv/bin/python experiments/benchmarks/reliability.py            # docs/reliability.md
    .venv/bin/python experiments/benchmarks/reliability.py --soak=20  # results/kill_soak
    .venv/bin/python experiments/benchmarks/reliability.py -- --timeout=3600  # pytest flags

Runs `pytest tests/faults` with $PRIME_JAX_RELIABILITY_OUT set: every case that passes appends
its figures (the fault, what happened, the time to recover, what was lost) as a JSON line, and
pytest's JUnit report says which cases passed. Writes the table only when every case passed.

--soak=N runs only the random-time kill case, over kill-time seeds 0 .. N-1 (a longer variant
than CI's two seeds), and writes each seed's kill time, where it landed and the recovery to
experiments/results/kill_soak/. Minutes per seed on a 2-core CPU: a script, not a test.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES_ENV = "PRIME_JAX_RELIABILITY_OUT"  # tests/faults/conftest.py
SEEDS_ENV = "PRIME_JAX_KILL_SEEDS"  # tests/faults/test_run_faults.py

flags.DEFINE_integer("soak", 0, "Run only the random-time kill case over this many seeds.")
flags.DEFINE_string(
    "out",
    "",
    "Output folder or file (default: docs/reliability.md, or "
    "experiments/results/kill_soak for --soak).",
)


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_suite(pytest_args: list[str], env: dict) -> tuple[list[dict], dict, dict]:
  """(figures rows, {case: outcome}, run facts) of one pytest run of the fault suite."""
  with tempfile.TemporaryDirectory() as scratch:
    figures_path, junit = os.path.join(scratch, "figures.jsonl"), os.path.join(scratch, "j.xml")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/faults",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *pytest_args,
    ]
    load_before, start, cpu = os.getloadavg(), time.perf_counter(), _children_cpu_s()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **env, FIGURES_ENV: figures_path})
    facts = dict(
        command=" ".join(["pytest", "tests/faults", *pytest_args]),
        wall_s=round(time.perf_counter() - start, 1),
        # User + system CPU of pytest and the processes it waited for: what load does not move.
        cpu_s=round(_children_cpu_s() - cpu, 1),
        load_avg_before=[round(x, 2) for x in load_before],
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        cpus=os.cpu_count(),
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        date=date,  # when it started
        returncode=done.returncode,
    )
    rows = []
    if os.path.exists(figures_path):
      with open(figures_path) as f:
        rows = [json.loads(line) for line in f]
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
      name = f"{case.get('classname')}::{case.get('name')}"
      failed = case.find("failure") is not None or case.find("error") is not None
      outcomes[name] = (
          "skipped" if case.find("skipped") is not None else ("failed" if failed else "passed")
      )
  return rows, outcomes, facts


def cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def table_markdown(rows: list[dict], facts: dict) -> str:
  lines = [
      "# Reliability: faults survived, and what they cost",
      "",
      "Every row is one case of the fault suite (`tests/faults`), measured in the run that "
      "produced this file: `python experiments/benchmarks/reliability.py` "
      f"(`{facts['command']}`, {facts['date']}, {facts['cpus']} CPUs, load average "
      f"{facts['load_avg_before'][0]} before and {facts['load_avg_after'][0]} after; the whole "
      f"suite took {facts['wall_s']} s, {facts['cpu_s']} CPU-seconds). A case records its row "
      "only after its checks passed: "
      "the files on disk (damaged ones kept byte for byte, nothing deleted) and the metrics "
      "of the recovered run, equal to the uninterrupted run's apart from wall-clock fields.",
      "",
      "*Time to recover* is the wall time of the recovering action on this machine: for a "
      "resumed run, the whole rerun (start-up, compile from the cache, the steps rerun, eval, "
      "export) of the tiny 3-step run; for a stop, the time until the one-line error; for "
      "storage retries, the backoff waited (the suite scales the 1 s first delay down to "
      "0.05 s or less). It depends on the load; the *lost* column does not.",
      "",
      "| fault | what happens | time to recover | what is lost |",
      "|---|---|---|---|",
  ]
  for row in rows:
    lines.append(
        f"| {cell(row['fault'])} | {cell(row['outcome'])} | {row['recover_s']:.2f} s | "
        f"{cell(row['lost'])} |"
    )
  lines += [
      "",
      "The kill soak (many random kill times, `--soak`) is in "
      "`experiments/results/kill_soak/results.md`.",
      "",
      "## What the trainer does",
      "",
      "- **Resuming** (`prime_jax.checkpointing.Checkpointer.restore_latest`) restores policy, "
      "PRM, optimiser states and run state together from the newest checkpoint that restores "
      "completely, preferring one at or before the last whole row of `metrics.jsonl`, so that "
      "the steps after it log again; `metrics.jsonl` is then cut after the restored step, as "
      "before.",
      "- A checkpoint that fails to restore (a file cut short, empty or missing, no "
      "`commit_success.txt`, a run state that is not JSON) is named in one line with the reason "
      "and moved to `checkpoints/corrupt-<step>-<time>/`; intact checkpoints newer than the "
      "metrics go to `checkpoints/superseded-<step>-<time>/`. Nothing is deleted: look at them, "
      "or delete them, by hand.",
      "- When no checkpoint restores, or one belongs to another model or config, the run stops "
      "with one line naming each checkpoint and why, and moves nothing.",
      "- A failed save (a full disk) stops the run with one line naming the step, the file "
      "system's error and the last committed checkpoint, which is untouched.",
      "- The SFT checkpoint and the exports carry `manifest.json` (each file's size and SHA-256). "
      "A damaged SFT checkpoint is moved aside and trained again (it is a function of the config "
      "and the seed); a damaged export given as `policy.checkpoint` / `prm.checkpoint` stops the "
      "run with one line naming each bad file.",
      "- Prepared data is validated as it is read: a bad row or shard stops the run with one line "
      "naming the shard file and the row (malformed *input* rows are skipped and counted by "
      "`prime_jax.data.prepare`).",
      "- Grading never raises: a dead or hung worker, or an item over its limit, scores 0 and is "
      "counted (`verifier/<ability>/timeout`, `worker_died`); the item's limit counts from when "
      "its worker starts on it, not from the worker's start-up.",
      "- Storage errors (`prime_jax.io_errors`): a transient one (connection reset, timeout, "
      "HTTP 408/429/5xx, tensorstore UNAVAILABLE) met reading or writing `metrics.jsonl`, copying "
      "files to or from a `gs://` workdir, or reading a checkpoint is retried 4 times, after 1, "
      "2, 4 and 8 s; after that, or on any other error, the run stops with one line. (Orbax "
      "writes checkpoint arrays through tensorstore, which retries GCS requests itself.)",
      "",
  ]
  return "\n".join(lines)


def soak_markdown(rows: list[dict], outcomes: dict, facts: dict) -> str:
  passed = sum(o == "passed" for o in outcomes.values())
  lines = [
      "# Kill soak: SIGKILL at random times, then a rerun",
      "",
      f"`python experiments/benchmarks/reliability.py --soak={len(outcomes)}` ({facts['date']}, "
      f"{facts['cpus']} CPUs, load average {facts['load_avg_before'][0]} before, "
      f"{facts['load_avg_after'][0]} after, {facts['wall_s']} s in all). Each seed runs the "
      "tiny 3-step PRIME run's command line, SIGKILLs it and its grader workers 0-3 s after "
      "the metrics row of a random step (0: the eval before RL, 3: the last step, then its "
      "save, export and summary), reruns it, and checks that metrics, summary, exports and "
      "checkpoints equal the uninterrupted run's. The test polls metrics.jsonl every 10 ms; "
      "on a loaded machine it sees a row late, so a kill can land later than scheduled: *last "
      "metrics row* and *resumed from* say where it landed (-1: no checkpoint had been "
      "committed, the rerun started anew).",
      "",
      f"**{passed} of {len(outcomes)} seeds recovered with nothing lost.**",
      "",
      "| seed | kill scheduled at | killed? | last metrics row | resumed from | rerun time |",
      "|---|---|---|---|---|---|",
  ]
  for row in sorted(rows, key=lambda r: r["details"]["seed"]):
    d = row["details"]
    lines.append(
        f"| {d['seed']} | step {d['kill_at_step']} row + {d['kill_after_s']:.1f} s | "
        f"{'yes' if d['killed'] else 'no (had finished)'}"
        f" | {d['last_metrics_row']} | {d['resumed_from']} | {row['recover_s']:.1f} s |"
    )
  failed = sorted(c for c, o in outcomes.items() if o != "passed")
  if failed:
    lines += ["", "Failed: " + ", ".join(f"`{c}`" for c in failed)]
  return "\n".join(lines) + "\n"


def main(argv):
  pytest_args = argv[1:]  # after "--": e.g. a longer --timeout on a loaded machine
  if flags.FLAGS.soak:
    seeds = ",".join(str(s) for s in range(flags.FLAGS.soak))
    rows, outcomes, facts = run_suite(["-k", "random_time", *pytest_args], {SEEDS_ENV: seeds})
    out = flags.FLAGS.out or os.path.join(REPO, "experiments", "results", "kill_soak")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump(dict(facts=facts, outcomes=outcomes, figures=rows), f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
      f.write(soak_markdown(rows, outcomes, facts))
    print(f"wrote {out}/results.md")
    return
  rows, outcomes, facts = run_suite(pytest_args, {})
  failed = sorted(c for c, o in outcomes.items() if o == "failed")
  if failed or facts["returncode"] != 0:
    sys.exit(
        f"the fault suite did not pass ({', '.join(failed) or 'see its output'}); "
        "no table written"
    )
  out = flags.FLAGS.out or os.path.join(REPO, "docs", "reliability.md")
  with open(out, "w") as f:
    f.write(table_markdown(rows, facts))
  raw = os.path.join(REPO, "experiments", "results", "reliability")
  os.makedirs(raw, exist_ok=True)
  with open(os.path.join(raw, "figures.json"), "w") as f:
    json.dump(dict(facts=facts, outcomes=outcomes, figures=rows), f, indent=1)
  print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
  app.run(main)
