"""Orbax checkpoints of a PRIME run: policy and PRM TrainStates plus JSON run state.

The JSON part holds what makes a resumed run continue exactly: the step, the data iterator's
position and the refill buffer (per-step PRNG keys are derived from the seed and the step, so
they need no saving). Saves are asynchronous; orbax commits a step only once it is complete, so a
run killed mid-save resumes from the previous step.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from prime_jax import paths


class CheckpointMismatchError(ValueError):
  """A checkpoint whose arrays do not fit the configured model."""


def _key_names(path) -> tuple[str, ...]:
  """A tree path as plain names, so a dataclass field and a saved dict key compare equal."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shape_mismatches(saved, expected, prefix: str) -> list[str]:
  saved_leaves = {_key_names(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved)}
  problems = []
  for path, want in jax.tree_util.tree_leaves_with_path(expected):
    name = prefix + "/" + "/".join(_key_names(path))
    got = saved_leaves.get(_key_names(path))
    if got is None:
      problems.append(f"{name}: missing from the checkpoint")
    elif tuple(got.shape) != tuple(want.shape):
      problems.append(
          f"{name}: checkpoint has shape {tuple(got.shape)}, "
          f"the config expects {tuple(want.shape)}"
      )
  return problems


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory` (local or gs://...)."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    # A local path is made absolute; os.path.abspath would turn gs://b/x into CWD/gs:/b/x.
    self.manager = ocp.CheckpointManager(
        directory if paths.is_remote(directory) else os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save
        ),
        item_handlers={
            "policy": ocp.StandardCheckpointHandler(),
            "prm": ocp.StandardCheckpointHandler(),
            "run_state": ocp.JsonCheckpointHandler(),
        },
    )

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, policy, prm, run_state: dict[str, Any]) -> None:
    """`prm` may be None (outcome-only runs train no PRM)."""
    items = dict(policy=ocp.args.StandardSave(policy), run_state=ocp.args.JsonSave(run_state))
    if prm is not None:
      items["prm"] = ocp.args.StandardSave(prm)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, abstract_policy, abstract_prm):
    """Restores (policy, prm, run_state) onto the shardings of the abstract targets
    (`jax.ShapeDtypeStruct`s with `.sharding`); a shape mismatch names the entry."""
    meta = self.manager.item_metadata(step)
    targets = {"policy": abstract_policy, "prm": abstract_prm}
    problems = []
    for name, target in targets.items():
      if target is not None:
        if meta.get(name) is None:
          problems.append(f"{name}: missing from the checkpoint")
        else:
          problems += _shape_mismatches(meta[name], target, name)
    if problems:
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.manager.directory} does not fit the config: "
          + "; ".join(problems[:5])
      )
    items = {k: ocp.args.StandardRestore(v) for k, v in targets.items() if v is not None}
    out = self.manager.restore(
        step, args=ocp.args.Composite(run_state=ocp.args.JsonRestore(), **items)
    )
    return out["policy"], out.get("prm"), out["run_state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
