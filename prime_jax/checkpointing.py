"""Orbax checkpoints of a PRIME run: policy and PRM TrainStates plus JSON run state.

The JSON part holds what makes a resumed run continue exactly: the step, the data iterator's
position and the refill buffer (per-step PRNG keys are derived from the seed and the step, so
they need no saving). Saves are asynchronous; orbax commits a step only once it is complete
(writing `commit_success.txt` into it last), so a run killed mid-save resumes from the previous
step.

Resuming takes the newest checkpoint that restores completely (`restore_latest`): policy, PRM,
optimiser states and run state together. One that is damaged (a truncated, empty or missing
file, no commit marker, unreadable run state) is named in one line with the reason and moved
aside to `corrupt-<step>-<time>/` beside the others; nothing is deleted. One that does not fit
the config (other shapes, a model missing) stops the run instead: it is not damaged, and the
older ones of the same run would not fit either. A save that fails (a full disk) stops the run
with one line; the checkpoints committed before it are untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from prime_jax import distributed, io_errors, paths

COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a step directory as it commits it
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's record of the items a step holds


class CheckpointMismatchError(ValueError):
  """A checkpoint whose arrays do not fit the configured model."""


class DamagedCheckpointError(RuntimeError):
  """A checkpoint that cannot be restored completely; `reason` says why in one line."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"checkpoint step {step} is damaged: {reason}")
    self.step, self.reason = step, reason


class NoIntactCheckpointError(RuntimeError):
  """Checkpoints exist, but none of them restores."""


class CheckpointSaveError(RuntimeError):
  """A save that failed (a full disk, lost storage); the earlier checkpoints are kept."""


@dataclasses.dataclass
class Restored:
  """What `restore_latest` brought back, and one line per checkpoint it moved aside."""

  step: int
  policy: Any
  prm: Any
  run_state: dict
  set_aside: list[str]


def _key_names(path) -> tuple[str, ...]:
  """A tree path as plain names, so a dataclass field and a saved dict key compare equal."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shape_mismatches(saved, expected, prefix: str) -> list[str]:
  """Entries missing from the checkpoint, of another shape, or in it but not in the config
  (another model or algorithm: e.g. PPO's value head)."""
  saved_leaves = {_key_names(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved)}
  expected_leaves = {_key_names(p): v for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  problems = []
  for path, want in expected_leaves.items():
    name = prefix + "/" + "/".join(path)
    got = saved_leaves.get(path)
    if got is None:
      problems.append(f"{name}: missing from the checkpoint")
    elif tuple(got.shape) != tuple(want.shape):
      problems.append(
          f"{name}: checkpoint has shape {tuple(got.shape)}, "
          f"the config expects {tuple(want.shape)}"
      )
  for path in saved_leaves.keys() - expected_leaves.keys():
    problems.append(f"{prefix}/{'/'.join(path)}: in the checkpoint, not in the config")
  return problems


def _agreed(reason: Optional[str]) -> Optional[str]:
  """The first process's reason why a step did not restore, if any process has one: every
  process then treats the step alike (a shard may be damaged for one process only)."""
  return next((r for r in distributed.process_group().allgather(reason) if r), None)


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory` (local or gs://...)."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    # A local path is made absolute; os.path.abspath would turn gs://b/x into CWD/gs:/b/x.
    self.directory = epath.Path(
        directory if paths.is_remote(directory) else os.path.abspath(directory)
    )
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save
        ),
        item_handlers={
            "policy": ocp.StandardCheckpointHandler(),
            "prm": ocp.StandardCheckpointHandler(),
            "run_state": ocp.JsonCheckpointHandler(),
        },
    )
    self.keep = keep
    self._saving: Optional[int] = None  # the step of the save in flight
    self._failed = False  # a failed save was raised as CheckpointSaveError

  def latest_step(self) -> Optional[int]:
    """The newest committed step."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every step with a directory here, committed or not (on GCS orbax lists only the
    committed ones; locally it lists a step whose commit marker is gone)."""
    named = []
    if self.directory.exists():
      named = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]
    return sorted(set(named) | set(self.manager.all_steps()))

  # -------------------------------------------------------------------------- saving

  def save(self, step: int, policy, prm, run_state: dict[str, Any]) -> None:
    """`prm` may be None (outcome-only runs train no PRM). Raises `CheckpointSaveError` when
    this save, or the previous one still in flight, fails."""
    self.wait()  # orbax would wait anyway; this way a failure is blamed on the right step
    items = dict(policy=ocp.args.StandardSave(policy), run_state=ocp.args.JsonSave(run_state))
    if prm is not None:
      items["prm"] = ocp.args.StandardSave(prm)
    self._saving = step
    try:
      self.manager.save(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e) from e

  def wait(self) -> None:
    """Blocks until the save in flight is committed; raises `CheckpointSaveError` if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e) from e
    self._saving = None

  def _save_error(self, error: Exception) -> CheckpointSaveError:
    step, self._saving = self._saving, None
    self._failed = True
    self.manager.reload()  # what is committed now
    kept = self.manager.latest_step()
    return CheckpointSaveError(
        f"saving checkpoint step {step} to {self.directory} failed: "
        f"{io_errors.describe(error)}. "
        + (
            f"The last committed checkpoint, step {kept}, is kept"
            if kept is not None
            else "No checkpoint was committed before it"
        )
    )

  # -------------------------------------------------------------------------- restoring

  def restore(self, step: int, abstract_policy, abstract_prm):
    """Restores (policy, prm, run_state) of `step` onto the shardings of the abstract targets
    (`jax.ShapeDtypeStruct`s with `.sharding`). Raises `CheckpointMismatchError` naming the
    entries that do not fit, `DamagedCheckpointError` saying why it cannot be read, and
    `io_errors.RemoteIOError` when storage kept failing with transient errors."""
    step_dir = self.directory / str(step)
    if not (step_dir / COMMIT_MARKER).exists():
      raise DamagedCheckpointError(step, f"it has no {COMMIT_MARKER}: its save was never committed")
    what = f"reading checkpoint step {step} in {self.directory}"
    targets = {"policy": abstract_policy, "prm": abstract_prm}
    try:
      meta = io_errors.retry(lambda: self.manager.item_metadata(step), what)
    except io_errors.RemoteIOError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(step, io_errors.describe(e)) from e
    problems = []
    for name, target in targets.items():
      if target is None:
        continue
      if meta.get(name) is not None:
        problems += _shape_mismatches(meta[name], target, name)
      elif name in self._saved_items(step_dir):
        raise DamagedCheckpointError(step, f"its {name} state was saved but cannot be read")
      else:
        problems.append(f"{name}: missing from the checkpoint")
    if problems:
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} does not fit the config: "
          + "; ".join(problems[:5])
      )
    items = {k: ocp.args.StandardRestore(v) for k, v in targets.items() if v is not None}
    args = ocp.args.Composite(run_state=ocp.args.JsonRestore(), **items)
    try:
      out = io_errors.retry(lambda: self.manager.restore(step, args=args), what)
    except io_errors.RemoteIOError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(step, io_errors.describe(e)) from e
    if not isinstance(out.get("run_state"), dict):
      raise DamagedCheckpointError(step, "its run state is not a JSON object")
    return out["policy"], out.get("prm"), out["run_state"]

  @staticmethod
  def _saved_items(step_dir: epath.Path) -> set[str]:
    """The items a step was saved with: orbax's record of them, else the directories there
    (so a lost item directory reads as damage, a model never saved as a mismatch)."""
    try:
      return set(json.loads((step_dir / _STEP_METADATA).read_text())["item_handlers"])
    except (OSError, ValueError, KeyError, TypeError):
      return {p.name for p in step_dir.iterdir() if p.is_dir()}

  def restore_latest(
      self, abstract_policy, abstract_prm, *, last_logged_step: Optional[int] = None
  ) -> Optional[Restored]:
    """The newest checkpoint that restores completely, or None when there is none at all.

    `last_logged_step`: the last step whose metrics are all on disk (None: no constraint).
    A checkpoint at or before it is preferred, so that rerunning the steps after it rewrites
    the metrics that were lost; a newer intact one is then moved aside to
    `superseded-<step>-<time>/`. Damaged checkpoints are moved aside to
    `corrupt-<step>-<time>/`. Nothing is moved when none restores: that raises
    `NoIntactCheckpointError` naming each and why. `CheckpointMismatchError` and
    `io_errors.RemoteIOError` (see `restore`) stop the search.
    """
    newest_first = self.all_steps()[::-1]
    if not newest_first:
      return None
    preferred = [s for s in newest_first if last_logged_step is None or s <= last_logged_step]
    damaged: dict[int, str] = {}
    for step in preferred + [s for s in newest_first if s not in preferred]:
      reason, restored = None, None
      try:
        restored = self.restore(step, abstract_policy, abstract_prm)
      except DamagedCheckpointError as e:
        reason = e.reason
      reason = _agreed(reason)
      if reason:
        damaged[step] = reason
        continue
      lines = self._set_aside(step, damaged, last_logged_step)
      self._remove_beyond_keep()
      return Restored(step, *restored, set_aside=lines)
    raise NoIntactCheckpointError(
        f"no checkpoint in {self.directory} restores: "
        + "; ".join(f"step {s}: {r}" for s, r in damaged.items())
        + ". Nothing was moved: move them aside (or the whole directory) to start the run anew"
    )

  def _set_aside(self, chosen: int, damaged: dict[int, str], last_logged_step) -> list[str]:
    """Moves the damaged checkpoints and those newer than `chosen` out of orbax's sight (it
    would refuse to save those steps again); returns one line about each (process 0)."""
    lines = []
    for step in self.all_steps():
      if step in damaged:
        name, why = f"corrupt-{step}", f"is damaged ({damaged[step]})"
      elif step > chosen:
        name = f"superseded-{step}"
        why = f"is newer than step {last_logged_step}, where the metrics on disk end"
      else:
        continue
      if distributed.is_primary():
        moved = paths.move_aside(self.directory / str(step), name)
        lines.append(f"checkpoint step {step} {why}: moved aside to {moved}")
    distributed.barrier("checkpoints_set_aside")
    self.manager.reload()
    return lines

  def _remove_beyond_keep(self) -> None:
    """Removes the committed steps older than the newest `keep`. Orbax removes them after a
    save commits; a kill between the commit and the removal leaves one too many, and a rerun of
    a finished run saves nothing that would remove it."""
    for step in self.manager.all_steps()[: -self.keep]:
      self.manager.delete(step)

  def close(self) -> None:
    """Waits for the save in flight and closes. Orbax raises an asynchronous save's error again
    here: once `CheckpointSaveError` has told it, close stays quiet (so the error a run stops with
    is that one line, not this repeat); a failure not raised before is a `CheckpointSaveError`."""
    try:
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if not self._failed:
        raise self._save_error(e) from e


def abstract_state(state):
  """`jax.ShapeDtypeStruct`s (with shardings) of a TrainState's arrays: a restore
  target (None for None)."""
  if state is None:
    return None
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )


def refill_buffer(state: dict, num_records: int) -> list[int]:
  """The refill buffer of a checkpoint's run state: positions of records in the train split."""
  buffer = state["buffer"]
  if not all(isinstance(i, int) and 0 <= i < num_records for i in buffer):
    raise ValueError(
        "the checkpoint's refill buffer is not a list of train-split positions "
        f"(got {str(buffer)[:120]}); it was written by an older prime-jax, whose "
        "buffer held whole prompts: resume it with that version or start anew"
    )
  return list(buffer)
