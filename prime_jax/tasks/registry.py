"""A registry of built-in synthetic tasks, looked up by `config.task.name`.

A task makes its own prompts and ground truths (no files needed), writes demonstrations for the
SFT stage and trains the tokenizer its text needs. Grading goes through the verifier registry
under the task's `ability`, like any other data. A task may also build matched correct / one-mistake
response pairs, `mistake_pairs(task_config, records, seed, num_pairs) -> rows` (see
`prime_jax.tasks.arithmetic`), for measuring a PRM's process credit (`prime_jax.prm_credit`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import ml_collections
import numpy as np

from prime_jax.data.records import Record


class Task(Protocol):
  name: str
  ability: str

  def make_splits(
      self, task_config: ml_collections.ConfigDict, seed: int
  ) -> dict[str, list[Record]]:
    """{"train": [...], "eval": [...]} of validated records (store them with
    `prime_jax.data.write_records`): deterministic in `seed`; no eval prompt is in train."""

  def demonstration(
      self, task_config: ml_collections.ConfigDict, record: Record, rng: np.random.Generator
  ) -> str:
    """A response text (without EOS) for `record`, for SFT; may contain the task's mistakes."""

  def train_tokenizer(
      self, task_config: ml_collections.ConfigDict, out_dir: str | os.PathLike, seed: int
  ) -> Path:
    """Trains a tokenizer on the task's text into `out_dir`; returns the path load_tokenizer takes."""


class StepOracle(Protocol):
  """What a task offers beyond `Task` when it can judge the steps of a response itself (the
  arithmetic task can): the source of `rl.process_reward="oracle"` (`prime_jax.oracle_rewards`)."""

  def first_wrong_step(self, record: Record, response: str) -> tuple[int, int] | None:
    """The character span [start, stop) of `response`'s first wrong step (empty at the end of
    the response when it stops before that step), or None when every step is right."""


class PairMaker(Protocol):
  """What a task offers beyond `Task` when it can build matched correct / one-mistake response
  pairs (the arithmetic task can): the pairs `prime_jax.prm_credit` scores a PRM on."""

  def mistake_pairs(
      self, task_config: ml_collections.ConfigDict, records: list[Record], seed: int, num_pairs: int
  ) -> list[dict]:
    """`num_pairs` rows {"id", "prompt", "good", "bad", ...} built from `records`, deterministic
    in `seed`."""


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
  if task.name in _TASKS:
    raise ValueError(f"task {task.name!r} is already registered")
  _TASKS[task.name] = task
  return task


def get_task(name: str) -> Task:
  if name not in _TASKS:
    raise KeyError(f"unknown task {name!r}; built-in tasks: {sorted(_TASKS)}")
  return _TASKS[name]


def task_names() -> list[str]:
  return sorted(_TASKS)


def tasks_with(capability: str) -> list[str]:
  """The built-in tasks that offer `capability` (a method name such as "mistake_pairs")."""
  return sorted(n for n, t in _TASKS.items() if hasattr(t, capability))


def _capable(name: str, capability: str, what: str, wanted_by: str):
  if name not in tasks_with(capability):
    raise ValueError(
        f"{wanted_by} needs a task with a {what}; task {name!r} has no {what} (tasks with one: "
        f"{tasks_with(capability)})"
    )
  return _TASKS[name]


def step_oracle(name: str) -> StepOracle:
  """Task `name` as a step oracle; a ValueError naming the tasks that are one otherwise."""
  return _capable(name, "first_wrong_step", "step oracle", "rl.process_reward='oracle'")


def pair_maker(name: str) -> PairMaker:
  """Task `name` as a mistake-pair builder; a ValueError naming the tasks that are one otherwise."""
  return _capable(name, "mistake_pairs", "mistake-pair builder", "--task")
