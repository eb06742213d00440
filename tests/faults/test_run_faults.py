"""Faults of a whole run, on the tiny PRIME run of tests/test_train.py (3 steps, a checkpoint at
every step): each case breaks a run or its files, reruns it, and checks the files on disk and the
metrics, which must equal the uninterrupted run's (`prime_run`), or the one-line error.

The kills run the trainer's command line in a subprocess (tests/faults/faulty_train.py injects
kills and a file size limit from inside); the recoveries run in this process, which saves a
start-up. Every run shares test_train's SFT model and compilation cache fixtures.
"""

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from etils import epath

from fake_gcs import gcs  # noqa: F401 (fixture)
from fault_tools import FlakyGCS, HttpError, largest_file, tree_digest
from test_train import (  # noqa: F401 (base, compile_cache, prime_run: fixtures)
    CONFIG_FILE,
    REPO,
    assert_same_metrics,
    base,
    last_step,
    compile_cache,
    mismatched_checkpoint,
    prime_run,
    tiny_config,
)
from prime_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    NoIntactCheckpointError,
)
import prime_jax.train as train_module
from prime_jax import io_errors, model_files, paths, sft
from prime_jax.metrics_log import read_metrics
from prime_jax.models import load_hf_checkpoint
from prime_jax.train import train

pytestmark = pytest.mark.slow
FAULTY_TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faulty_train.py")


# ---------------------------------------------------------------------------- helpers


def copy_run(prime_run, directory):
  shutil.copytree(prime_run.workdir, directory)
  return directory


def resume(config, workdir):
  """Reruns `workdir` in this process: (wall seconds, printed lines)."""
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()) as out:
    train(config, str(workdir))
  return time.perf_counter() - start, out.getvalue()


def committed_steps(workdir):
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointer.manager.all_steps()
  finally:
    checkpointer.close()


def entries(workdir, prefix):
  return sorted(p for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.startswith(prefix))


def recomputed(start: int) -> str:
  """What a rerun from checkpoint `start` of the 3-step run costs."""
  steps = {3: "", 2: "; step 3 is recomputed"}.get(start, f"; steps {start + 1}-3 are recomputed")
  return "nothing" + steps


def assert_recovered(workdir, prime_run):
  """The finished rerun holds what the uninterrupted run does: metrics, summary, exports and
  the last three checkpoints."""
  assert_same_metrics(read_metrics(str(workdir)), read_metrics(str(prime_run.workdir)))
  assert (workdir / "summary.md").read_text() == (prime_run.workdir / "summary.md").read_text()
  for name in ("policy", "prm"):
    _, got = load_hf_checkpoint(str(workdir / "export" / name))
    _, want = load_hf_checkpoint(str(prime_run.workdir / "export" / name))
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    assert model_files.problems(workdir / "export" / name) == []
  assert committed_steps(workdir) == [1, 2, 3]


@pytest.fixture
def cli(base, compile_cache, tmp_path):
  """run(workdir, fault=None, kill_at=None) -> (return code, output): the trainer's command
  line with `fault` injected (see faulty_train.py), or, with kill_at=(step, seconds), SIGKILLed
  with its grader workers `seconds` after its metrics row of `step` appeared."""
  config_file = tmp_path / "tiny_prime.py"
  config_file.write_text(CONFIG_FILE.format(overrides={k: v for k, v in base.items()}))
  env = {
      **os.environ,
      "PYTHONPATH": REPO,
      "JAX_COMPILATION_CACHE_DIR": compile_cache,
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }
  started = []

  def run(workdir, *, fault=None, kill_at=None):
    log_path = tmp_path / f"cli{len(started)}.log"
    command = [sys.executable, FAULTY_TRAIN, f"--config={config_file}", f"--workdir={workdir}"]
    # Output through a pipe, copied to the log here: a file size limit set in the child does
    # not reach the log, and the child's last line (its error) gets through.
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=dict(env, PRIME_JAX_FAULT=json.dumps(fault or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started.append(process)
    with open(log_path, "wb") as log:
      copier = threading.Thread(target=shutil.copyfileobj, args=(process.stdout, log))
      copier.start()
      if kill_at is not None:
        step, seconds = kill_at
        while process.poll() is None and (last_step(str(workdir)) or -1) < step:
          time.sleep(0.01)
        time.sleep(seconds)
        if process.poll() is None:
          os.killpg(process.pid, signal.SIGKILL)
      process.wait()
      copier.join()
    return process.returncode, log_path.read_text()

  yield run
  for process in started:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()


# ---------------------------------------------------------------------------- kills


def test_kills_between_the_metrics_write_and_the_save_and_inside_a_save_lose_nothing(
    cli, prime_run, base, tmp_path, figures
):
  """Killed right after step 1's metrics row (before its save), then, resumed, killed inside
  step 2's asynchronous save (files written, not committed): the third run finishes as the
  uninterrupted one did."""
  workdir = tmp_path / "run"
  code, out = cli(workdir, fault={"kill_before_save": 1})
  assert code == -signal.SIGKILL, out[-3000:]
  assert [r["step"] for r in read_metrics(str(workdir))] == [0, 1]
  assert committed_steps(workdir) == [0]

  code, out = cli(workdir, fault={"kill_in_commit": 2})
  assert code == -signal.SIGKILL, out[-3000:]
  assert "resumed from step 0" in out
  # The commit runs in the background while step 3 goes on: its row may be written too.
  assert [r["step"] for r in read_metrics(str(workdir))][:3] == [0, 1, 2]
  assert committed_steps(workdir) == [0, 1]
  assert entries(workdir, "2.") == ["2.orbax-checkpoint-tmp"]  # the uncommitted save
  checkpoints = tree_digest(workdir / "checkpoints")

  seconds, out = resume(tiny_config(base), workdir)
  assert "resumed from step 1" in out
  assert_recovered(workdir, prime_run)
  assert entries(workdir, "2.") == [] and entries(workdir, "corrupt") == []
  after = tree_digest(workdir / "checkpoints")
  assert all(after.get(p) == d for p, d in checkpoints.items() if p.startswith("1/"))
  figures(
      fault="SIGKILL between a step's metrics write and its save, then SIGKILL inside the "
      "next asynchronous save (files written, commit not done)",
      outcome="the rerun resumes from the last committed checkpoint (step 1); orbax replaces "
      "the uncommitted save; metrics rows of the rerun steps are rewritten",
      recover_s=seconds,
      lost="nothing; steps 2-3 are recomputed",
  )


# Seeds of the kill time; the soak (experiments/benchmarks/reliability.py --soak) sets many.
KILL_SEEDS = [int(s) for s in os.environ.get("PRIME_JAX_KILL_SEEDS", "0,1").split(",")]


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_a_kill_at_a_random_time_loses_nothing(cli, prime_run, base, tmp_path, seed, figures):
  """SIGKILL of the run and its grader workers at a random time: 0-3 s after the metrics row
  of a random step (0: the eval before RL; 3: the last one, then its save, export, summary).
  A time within a step, not within the run, so that the kills spread over the run however
  slow the machine. The rerun ends as the uninterrupted run did."""
  workdir = tmp_path / "run"
  rng = random.Random(seed)
  kill_at = (rng.randrange(4), rng.uniform(0.0, 3.0))
  code, out = cli(workdir, kill_at=kill_at)
  assert code in (0, -signal.SIGKILL), out[-3000:]
  at = last_step(str(workdir))
  committed = committed_steps(workdir)
  seconds, out = resume(tiny_config(base), workdir)
  resumed = re.search(r"resumed from step (\d+)", out)
  start = int(resumed.group(1)) if resumed else -1  # -1: started anew
  assert start == (committed[-1] if committed else -1), out[-3000:]
  assert_recovered(workdir, prime_run)
  assert entries(workdir, "corrupt") == []
  figures(
      details=dict(
          seed=seed,
          kill_at_step=kill_at[0],
          kill_after_s=round(kill_at[1], 2),
          killed=code == -signal.SIGKILL,
          last_metrics_row=at,
          resumed_from=start,
      ),
      fault=f"SIGKILL at a random time ({kill_at[1]:.1f} s after step {kill_at[0]}'s metrics "
      "row)",
      outcome=(
          f"killed after step {at}'s metrics; the rerun resumes from step {start}, the last "
          "committed checkpoint"
          if resumed
          else f"killed after step {at}'s metrics, before a checkpoint was committed: the "
          "rerun starts anew"
      ),
      recover_s=seconds,
      lost=recomputed(start),
  )


def test_a_full_disk_during_a_save_stops_in_one_line_and_keeps_the_last_checkpoint(
    cli, prime_run, base, tmp_path, figures
):
  """From step 2's save on no file may pass 1 kB (RLIMIT_FSIZE; the checkpoint holds ~130 kB
  of arrays of up to 8 kB each, so some file must pass it however orbax packs them): the save
  fails like on a full disk."""
  workdir = tmp_path / "run"
  code, out = cli(workdir, fault={"file_size_limit": [2, 1_000]})
  assert code == 1, out[-3000:]
  last = out.strip().splitlines()[-1]
  assert re.fullmatch(
      r"prime_jax\.train: CheckpointSaveError: saving checkpoint step 2 to \S+ failed: .*File too "
      r"large.*\. The last committed checkpoint, step 1, is kept",
      last,
  ), last
  assert committed_steps(workdir) == [0, 1]
  assert not (workdir / "export").exists()
  seconds, out = resume(tiny_config(base), workdir)
  assert "resumed from step 1" in out
  assert_recovered(workdir, prime_run)
  figures(
      fault="disk full during a checkpoint save (RLIMIT_FSIZE 1 kB from step 2's save)",
      outcome="the run stops with one line naming the step, the file system's error and the "
      "kept checkpoint (step 1); the rerun resumes from it",
      recover_s=seconds,
      lost="nothing; steps 2-3 are recomputed",
  )


# ---------------------------------------------------------------------------- checkpoints


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_one_before_resumes(
    prime_run, base, tmp_path, figures
):
  """The issue's case: a file of the latest checkpoint's policy state cut to 100 bytes."""
  workdir = copy_run(prime_run, tmp_path / "run")
  victim = largest_file(workdir / "checkpoints" / "3" / "policy")
  with open(victim, "r+b") as f:
    f.truncate(100)
  damaged = tree_digest(workdir / "checkpoints" / "3")
  seconds, out = resume(tiny_config(base), workdir)
  aside = entries(workdir, "corrupt-3-")
  assert len(aside) == 1
  line = next(l for l in out.splitlines() if l.startswith("checkpoint step 3"))
  assert re.fullmatch(
      r"checkpoint step 3 is damaged \(OUT_OF_RANGE: Error reading .* is not valid for value of "
      rf"size 100\): moved aside to \S+/checkpoints/{aside[0]}",
      line,
  ), line
  assert "resumed from step 2" in out
  assert tree_digest(workdir / "checkpoints" / aside[0]) == damaged  # kept as it was
  assert_recovered(workdir, prime_run)
  figures(
      fault="a file of the latest checkpoint cut to 100 bytes",
      outcome="one line names the checkpoint and the read error; it is moved to "
      "checkpoints/corrupt-3-<time>/ and the run resumes from step 2",
      recover_s=seconds,
      lost="nothing; step 3 is recomputed",
  )


def test_no_intact_checkpoint_stops_naming_each_and_moves_nothing(
    prime_run, base, tmp_path, figures
):
  workdir = copy_run(prime_run, tmp_path / "run")
  checkpoints = workdir / "checkpoints"
  with open(largest_file(checkpoints / "3" / "prm"), "r+b") as f:
    f.truncate(0)
  (checkpoints / "2" / "commit_success.txt").unlink()
  (checkpoints / "1" / "run_state" / "metadata").write_text('{"iterator": ')
  before = tree_digest(workdir)
  start = time.perf_counter()
  with pytest.raises(NoIntactCheckpointError) as e:
    train(tiny_config(base), str(workdir))
  seconds = time.perf_counter() - start
  message = str(e.value)
  assert "\n" not in message
  assert re.fullmatch(
      r"no checkpoint in \S+/checkpoints restores: step 3: OUT_OF_RANGE: .* size 0; "
      r"step 2: it has no commit_success.txt: its save was never committed; "
      r"step 1: .*JSONDecodeError.*\. Nothing was moved: .*",
      message,
  ), message
  assert tree_digest(workdir) == before
  figures(
      fault="every checkpoint damaged (an empty file, no commit marker, cut run state)",
      outcome="the run stops with one line naming each checkpoint and its reason; nothing is "
      "moved or written",
      recover_s=seconds,
      lost="nothing on disk; the run needs the user (move the checkpoints aside to restart)",
  )


def test_a_checkpoint_of_another_model_stops_and_moves_nothing(prime_run, base, tmp_path, figures):
  workdir = copy_run(prime_run, tmp_path / "run")
  other = mismatched_checkpoint(base, tmp_path / "hidden48")
  before = tree_digest(workdir)
  start = time.perf_counter()
  with pytest.raises(CheckpointMismatchError, match=r"^checkpoint step 3 .* does not fit"):
    train(tiny_config(base, **{"sft.enabled": False, "policy.checkpoint": other}), str(workdir))
  seconds = time.perf_counter() - start
  assert tree_digest(workdir) == before
  figures(
      fault="the checkpoints belong to another model (hidden size 32, the config says 48)",
      outcome="the run stops with one line naming the entries and both shapes; nothing is moved",
      recover_s=seconds,
      lost="nothing",
  )


# ---------------------------------------------------------------------------- logs


def read_events(path):
  """(step, kind, tags) of each whole record of a TensorBoard event file; stops at a torn one."""
  from tensorboardX.proto import event_pb2

  data, at, events = path.read_bytes(), 0, []
  while at + 12 <= len(data):
    length = int.from_bytes(data[at : at + 8], "little")
    if at + 12 + length + 4 > len(data):
      break
    event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
    events.append((event.step, event.WhichOneof("what"), {v.tag for v in event.summary.value}))
    at += 12 + length + 4
  return events


def test_logs_that_lost_their_tails_rerun_the_steps_they_lost(prime_run, base, tmp_path, figures):
  """A crash lost the unsynced tails of metrics.jsonl (cut inside step 2's row) and of the
  TensorBoard event file, while the checkpoints of steps 2 and 3 (which orbax syncs) are on
  disk. The run resumes from checkpoint 1 so that steps 2 and 3 log again; the newer
  checkpoints and the cut event file are kept as they are."""
  workdir = copy_run(prime_run, tmp_path / "run")
  lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
  (workdir / "metrics.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
  (events,) = (workdir / "tensorboard").iterdir()
  events.write_bytes(events.read_bytes()[: events.stat().st_size * 2 // 3])
  cut_events = events.read_bytes()
  newer = {s: tree_digest(workdir / "checkpoints" / str(s)) for s in (2, 3)}
  seconds, out = resume(tiny_config(base), workdir)
  assert "resumed from step 1" in out
  for step in (2, 3):
    aside = entries(workdir, f"superseded-{step}-")
    assert len(aside) == 1 and tree_digest(workdir / "checkpoints" / aside[0]) == newer[step]
    assert re.search(
        rf"^checkpoint step {step} is newer than step 1, where the metrics on disk end: "
        rf"moved aside to \S+{aside[0]}$",
        out,
        re.M,
    ), out
  assert events.read_bytes() == cut_events
  (new,) = [p for p in (workdir / "tensorboard").iterdir() if p != events]
  logged = read_events(new)
  assert (2, "session_log", set()) in logged  # TensorBoard drops older events of steps >= 2
  assert {s for s, _, tags in logged if "policy/loss" in tags} == {2, 3}
  assert_recovered(workdir, prime_run)
  figures(
      fault="metrics.jsonl cut inside a row (step 2's), checkpoints of steps 2-3 on disk",
      outcome="the run resumes from the newest checkpoint at or before the last whole row "
      "(step 1); the newer ones go to checkpoints/superseded-<step>-<time>/",
      recover_s=seconds,
      lost="nothing; steps 2-3 are recomputed and log again",
  )
  figures(
      fault="a TensorBoard event file cut mid-record (same crash)",
      outcome="the cut file is kept; the rerun writes a new one that starts with a purge "
      "marker at the first rerun step, so TensorBoard drops the older events of steps 2-3",
      recover_s=seconds,
      lost="nothing; the events of steps 2-3 are written again",
  )


# ---------------------------------------------------------------------------- models


def test_a_damaged_sft_checkpoint_is_moved_aside_and_trained_again(base, tmp_path, figures):
  """SFT is a function of the config and the seed: the retrained model is the same, byte for
  byte, so a run resumed on it continues as before. (tokenizer.model records the directory it
  was trained in; its vocabulary, tokenizer.vocab, is compared.)"""
  directory = tmp_path / "sft"
  shutil.copytree(base["sft.checkpoint"], directory)
  original = tree_digest(directory)
  with open(directory / "model.safetensors", "r+b") as f:
    f.truncate(1000)
  damaged = tree_digest(directory)
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()) as out:
    sft.run_sft(tiny_config(base, **{"sft.checkpoint": str(directory)}), tmp_path)
  seconds = time.perf_counter() - start
  (aside,) = [p for p in os.listdir(tmp_path) if p.startswith("corrupt-sft-")]
  assert re.search(
      rf"^the SFT checkpoint {directory} is damaged \(model.safetensors is 1000 bytes long, not "
      rf"\d+\): moved aside to {tmp_path / aside}; training it again$",
      out.getvalue(),
      re.M,
  ), out.getvalue()
  assert tree_digest(tmp_path / aside) == damaged
  rebuilt = tree_digest(directory)
  for name in ("model.safetensors", "config.json", "tokenizer.vocab"):
    assert rebuilt[name] == original[name], name
  figures(
      fault="the SFT checkpoint's model.safetensors cut to 1000 bytes",
      outcome="one line names the file and both sizes; the directory goes to "
      "corrupt-sft-<time>/ and SFT trains again, to the same bytes",
      recover_s=seconds,
      lost="nothing; the SFT steps are recomputed",
  )


def test_a_damaged_export_read_back_stops_in_one_line(prime_run, base, tmp_path, figures):
  export = tmp_path / "policy"
  shutil.copytree(prime_run.workdir / "export" / "policy", export)
  (export / "tokenizer.model").unlink()
  with open(export / "model.safetensors", "r+b") as f:
    f.truncate(f.seek(0, 2) - 8)
  start = time.perf_counter()
  config = tiny_config(base, **{"sft.enabled": False, "policy.checkpoint": str(export)})
  with pytest.raises(model_files.DamagedModelError) as e:
    train(config, str(tmp_path / "run"))
  seconds = time.perf_counter() - start
  assert re.fullmatch(
      rf"policy.checkpoint {export} is damaged: model.safetensors is \d+ bytes long, not \d+; "
      r"tokenizer.model is missing",
      str(e.value),
  ), str(e.value)
  assert list((tmp_path / "run").iterdir()) == []  # nothing built
  figures(
      fault="an export read back (policy.checkpoint) with a file cut short and one missing",
      outcome="the run stops before building anything, with one line naming each file",
      recover_s=seconds,
      lost="nothing",
  )


# ---------------------------------------------------------------------------- remote


def test_a_remote_run_rides_out_transient_storage_errors(
    prime_run, base, gcs, tmp_path, monkeypatch, figures
):
  """prime_run killed between step 3's metrics write and its save, on a gs:// workdir (the fake
  GCS; checkpoints stay local: orbax writes arrays through tensorstore, which the fake does not
  reach). Its rerun meets transient errors reading and writing metrics.jsonl and copying an
  export up, retries each, and ends as the uninterrupted run."""
  workdir = "gs://bucket/run"
  local = copy_run(prime_run, tmp_path / "local")
  shutil.rmtree(local / "checkpoints" / "3")
  epath.Path(local / "metrics.jsonl").copy(f"{workdir}/metrics.jsonl")
  paths.copy_tree(local / "tensorboard", f"{workdir}/tensorboard")
  real_checkpointer = train_module.Checkpointer
  monkeypatch.setattr(
      train_module,
      "Checkpointer",
      lambda directory, **kwargs: real_checkpointer(str(local / "checkpoints"), **kwargs),
  )
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(io_errors, "FIRST_DELAY_S", 0.05)
  flaky = FlakyGCS(monkeypatch)
  flaky.fail("metrics.jsonl", "rb", TimeoutError("read timed out"), times=2)
  flaky.fail("metrics.jsonl", "wb", HttpError(503, "Service Unavailable"))
  flaky.fail("model.safetensors", "wb", ConnectionError("connection reset by peer"))
  seconds, out = resume(tiny_config(base), workdir)
  assert "resumed from step 2" in out
  assert all(rule["left"] == 0 for rule in flaky.rules)  # every error was met, and retried
  assert_same_metrics(read_metrics(workdir), read_metrics(str(prime_run.workdir)))
  for name in ("policy", "prm"):
    down = tmp_path / "down" / name
    paths.copy_tree(f"{workdir}/export/{name}", down)
    _, got = load_hf_checkpoint(str(down))
    _, want = load_hf_checkpoint(str(prime_run.workdir / "export" / name))
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    assert model_files.problems(down) == []
  figures(
      fault="remote (gs://) workdir: transient errors reading and writing metrics.jsonl and "
      "copying an export up, during a resume",
      outcome="each operation is retried with backoff (1, 2 s; scaled here to 0.05, 0.1 s) and "
      "the run ends as the uninterrupted one",
      recover_s=seconds,
      lost="nothing; step 3 is recomputed (it was killed before its save)",
  )
