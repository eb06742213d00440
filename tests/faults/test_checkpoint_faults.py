"""Damaged checkpoints, on small states (no model, no training): `Checkpointer.restore_latest`
takes the newest one that restores completely, moves the damaged ones aside untouched, stops
on a checkpoint of another model, and retries storage that fails for a moment."""

import os
import re
import shutil
import time

import jax
import numpy as np
import pytest

from fault_tools import largest_file, tree_digest
from prime_jax import io_errors
from prime_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    NoIntactCheckpointError,
)

SIZE = 8192  # float32s per array: ~32 kB files, as a small model's


def state(step: int) -> dict:
  rng = np.random.default_rng(step)
  return {"w": rng.normal(size=SIZE).astype(np.float32), "step": np.int32(step)}


def abstract(tree):
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=device), tree
  )


@pytest.fixture
def directory(tmp_path):
  """Checkpoints of steps 1, 2, 3, each a policy, a PRM and a run state that name the step."""
  path = tmp_path / "checkpoints"
  checkpointer = Checkpointer(str(path))
  for step in (1, 2, 3):
    checkpointer.save(step, state(step), state(10 + step), {"step": step})
  checkpointer.wait()
  checkpointer.close()
  return path


def restore_latest(directory, **kwargs):
  checkpointer = Checkpointer(str(directory))
  try:
    return checkpointer.restore_latest(abstract(state(0)), abstract(state(0)), **kwargs)
  finally:
    checkpointer.close()


def truncate(path, size):
  with open(path, "r+b") as f:
    f.truncate(size)


DAMAGE = {
    "truncated file": (
        lambda d: truncate(largest_file(d / "policy"), 100),
        r"OUT_OF_RANGE: Error reading .* is not valid for value of size 100",
    ),
    "zero-length file": (
        lambda d: truncate(largest_file(d / "prm"), 0),
        r"OUT_OF_RANGE: Error reading .* is not valid for value of size 0",
    ),
    "missing file": (
        lambda d: largest_file(d / "policy").unlink(),
        r"FAILED_PRECONDITION: Error reading .*",
    ),
    "missing commit marker": (
        lambda d: (d / "commit_success.txt").unlink(),
        r"it has no commit_success.txt: its save was never committed",
    ),
    "run state cut short": (
        lambda d: truncate(d / "run_state" / "metadata", 5),
        r"JSONDecodeError: .*",
    ),
    "lost model directory": (
        lambda d: shutil.rmtree(d / "prm"),
        r"its prm state was saved but cannot be read",
    ),
    "unreadable model metadata": (
        lambda d: (d / "policy" / "_METADATA").unlink(),
        r"its policy state was saved but cannot be read",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_one_before_restores(
    directory, damage, figures
):
  hurt, reason = DAMAGE[damage]
  hurt(directory / "3")
  damaged = tree_digest(directory / "3")
  start = time.perf_counter()
  restored = restore_latest(directory)
  seconds = time.perf_counter() - start
  assert restored.step == 2 and restored.run_state == {"step": 2}
  np.testing.assert_array_equal(restored.policy["w"], state(2)["w"])
  np.testing.assert_array_equal(restored.prm["w"], state(12)["w"])
  (aside,) = [p for p in os.listdir(directory) if p.startswith("corrupt-")]
  assert re.fullmatch(r"corrupt-3-\d{8}T\d{6}Z", aside)
  (line,) = restored.set_aside
  assert re.fullmatch(
      rf"checkpoint step 3 is damaged \({reason}\): moved aside to {directory / aside}", line
  ), line
  assert tree_digest(directory / aside) == damaged  # never changed, never deleted
  # The run goes on: orbax sees steps 1 and 2 only, and saves step 3 again.
  checkpointer = Checkpointer(str(directory))
  assert checkpointer.all_steps() == [1, 2]
  checkpointer.save(3, state(3), state(13), {"step": 3})
  checkpointer.wait()
  checkpointer.close()
  assert restore_latest(directory).step == 3
  figures(
      fault=f"latest checkpoint: {damage}",
      outcome="one line names it and why; moved to corrupt-3-<time>/; the one before restores",
      recover_s=seconds,
      lost="nothing but the steps after the restored checkpoint",
  )


def test_when_none_restores_each_is_named_and_nothing_moves(directory):
  truncate(largest_file(directory / "3" / "policy"), 10)
  (directory / "2" / "commit_success.txt").unlink()
  shutil.rmtree(directory / "1" / "prm")
  before = tree_digest(directory)
  with pytest.raises(NoIntactCheckpointError) as e:
    restore_latest(directory)
  assert re.fullmatch(
      rf"no checkpoint in {directory} restores: step 3: OUT_OF_RANGE: .*; step 2: it has no "
      r"commit_success.txt: its save was never committed; step 1: its prm state was saved but "
      r"cannot be read\. Nothing was moved: move them aside \(or the whole directory\) to start "
      r"the run anew",
      str(e.value),
  ), str(e.value)
  assert tree_digest(directory) == before


def test_a_checkpoint_of_another_shape_is_a_mismatch_and_nothing_moves(directory):
  before = tree_digest(directory)
  checkpointer = Checkpointer(str(directory))
  wider = dict(state(0), w=np.zeros(2 * SIZE, np.float32))
  with pytest.raises(CheckpointMismatchError) as e:
    checkpointer.restore_latest(abstract(wider), abstract(state(0)))
  checkpointer.close()
  assert str(e.value) == (
      f"checkpoint step 3 in {directory} does not fit the config: policy/w: checkpoint has "
      f"shape ({SIZE},), the config expects ({2 * SIZE},)"
  )
  assert tree_digest(directory) == before


def test_a_checkpoint_with_an_entry_the_config_lacks_is_a_mismatch(directory):
  """Another algorithm's checkpoint (e.g. PPO's, with a value head) restored by a run without
  it: orbax would fail on the tree structure, which must not read as damage."""
  before = tree_digest(directory)
  checkpointer = Checkpointer(str(directory))
  with pytest.raises(CheckpointMismatchError) as e:
    checkpointer.restore_latest(abstract({"w": state(0)["w"]}), abstract(state(0)))
  checkpointer.close()
  assert str(e.value) == (
      f"checkpoint step 3 in {directory} does not fit the config: policy/step: in the "
      "checkpoint, not in the config"
  )
  assert tree_digest(directory) == before


def test_a_model_never_saved_is_a_mismatch_not_damage(tmp_path):
  checkpointer = Checkpointer(str(tmp_path))
  checkpointer.save(1, state(1), None, {"step": 1})  # an outcome-only run: no PRM
  checkpointer.wait()
  with pytest.raises(CheckpointMismatchError, match="prm: missing from the checkpoint"):
    checkpointer.restore_latest(abstract(state(0)), abstract(state(0)))
  checkpointer.close()
  assert sorted(os.listdir(tmp_path)) == ["1"]


def test_checkpoints_ahead_of_the_metrics_are_superseded(directory):
  """With metrics on disk only up to step 1, the run resumes from checkpoint 1 so that steps 2
  and 3 log again; their checkpoints are moved aside, intact."""
  newer = {s: tree_digest(directory / str(s)) for s in (2, 3)}
  restored = restore_latest(directory, last_logged_step=1)
  assert restored.step == 1
  for step, line in zip((2, 3), restored.set_aside):
    (aside,) = [p for p in os.listdir(directory) if p.startswith(f"superseded-{step}-")]
    assert line == (
        f"checkpoint step {step} is newer than step 1, where the metrics on disk end: moved "
        f"aside to {directory / aside}"
    )
    assert tree_digest(directory / aside) == newer[step]
  # None at or before the metrics' end: the newest intact one, and nothing is superseded.
  assert restore_latest(directory, last_logged_step=0).step == 1


def test_a_rerun_removes_the_checkpoints_beyond_keep(directory):
  """A kill between a save's commit and orbax's removal of the oldest step leaves keep + 1
  committed steps (here 1-4, keep 3); restoring removes the oldest, intact ones untouched."""
  checkpointer = Checkpointer(str(directory), keep=4)
  checkpointer.save(4, state(4), state(14), {"step": 4})
  checkpointer.close()
  kept = {s: tree_digest(directory / str(s)) for s in (2, 3, 4)}
  assert restore_latest(directory).step == 4
  assert sorted(os.listdir(directory)) == ["2", "3", "4"]
  assert {s: tree_digest(directory / str(s)) for s in (2, 3, 4)} == kept


def flaky(real, failures: int, error: Exception):
  """`real` that raises `error` on its first `failures` calls; `.calls` counts them all."""

  def call(*args, **kwargs):
    call.calls += 1
    if call.calls <= failures:
      raise error
    return real(*args, **kwargs)

  call.calls = 0
  return call


def test_transient_read_errors_are_retried_with_backoff(directory, monkeypatch, figures):
  monkeypatch.setattr(io_errors, "FIRST_DELAY_S", 0.05)
  checkpointer = Checkpointer(str(directory))
  restore = flaky(checkpointer.manager.restore, 2, ValueError("UNAVAILABLE: connection reset"))
  monkeypatch.setattr(checkpointer.manager, "restore", restore)
  start = time.perf_counter()
  restored = checkpointer.restore_latest(abstract(state(0)), abstract(state(0)))
  seconds = time.perf_counter() - start
  checkpointer.close()
  assert restored.step == 3 and restored.set_aside == [] and restore.calls == 3
  assert seconds >= 0.05 + 0.1  # waited 0.05 s, then 0.1 s
  figures(
      fault="checkpoint read: two transient storage errors (UNAVAILABLE)",
      outcome="retried after 1 s and 2 s (here scaled to 0.05 s, 0.1 s); the read succeeds",
      recover_s=seconds,
      lost="nothing",
  )


def test_persistent_read_errors_stop_clearly_and_move_nothing(directory, monkeypatch, figures):
  monkeypatch.setattr(io_errors, "FIRST_DELAY_S", 0.01)
  before = tree_digest(directory)
  checkpointer = Checkpointer(str(directory))
  restore = flaky(checkpointer.manager.restore, 99, ValueError("UNAVAILABLE: no route to host"))
  monkeypatch.setattr(checkpointer.manager, "restore", restore)
  start = time.perf_counter()
  with pytest.raises(io_errors.RemoteIOError) as e:
    checkpointer.restore_latest(abstract(state(0)), abstract(state(0)))
  seconds = time.perf_counter() - start
  checkpointer.close()
  assert re.fullmatch(
      rf"reading checkpoint step 3 in {directory} failed 5 times over [\d.]+ s with transient "
      r"errors; last: UNAVAILABLE: no route to host",
      str(e.value),
  ), str(e.value)
  assert restore.calls == io_errors.ATTEMPTS
  assert tree_digest(directory) == before  # storage trouble is not damage
  figures(
      fault="checkpoint read: storage keeps failing (UNAVAILABLE)",
      outcome="5 tries with backoff (1+2+4+8 s; scaled here), then one line naming the step "
      "and the error; nothing is moved",
      recover_s=seconds,
      lost="nothing",
  )
