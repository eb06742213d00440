"""Batch grading entry points: `grade` (scores) and `grade_with_stats` (scores + stats)."""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from prime_jax.verifiers.pool import ITEM_STATUSES, ItemOutcome, WorkerPool
from prime_jax.verifiers.registry import get_ability

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradeStats:
  """What happened while grading one batch.

  statuses: per-item 'ok' | 'timeout' | 'error' | 'worker_died' (only 'ok' items can score
  above 0). item_seconds: per-item grading time. counters: the abilities' own counts summed
  over items (e.g. math 'no_answer', code 'tests_passed', 'test_timeout'). worker_restarts:
  workers killed or lost in this batch. errors: up to 20 distinct error messages, for logs.
  """

  ability: str
  num_items: int
  statuses: tuple[str, ...]
  item_seconds: tuple[float, ...]
  counters: dict[str, int]
  worker_restarts: int
  wall_s: float
  mean_score: float
  errors: tuple[str, ...] = field(default=())

  def count(self, status: str) -> int:
    return sum(s == status for s in self.statuses)

  def as_dict(self) -> dict[str, float]:
    """Flat numbers for a metrics logger, keys prefixed 'verifier/<ability>/'."""
    p = f"verifier/{self.ability}/"
    out = {
        p + "items": self.num_items,
        p + "mean_score": self.mean_score,
        p + "wall_s": self.wall_s,
        p + "worker_restarts": self.worker_restarts,
        p + "items_per_s": self.num_items / self.wall_s if self.wall_s > 0 else 0.0,
        p + "max_item_s": max(self.item_seconds, default=0.0),
    }
    out.update({p + s: self.count(s) for s in ITEM_STATUSES})
    out.update({p + k: v for k, v in sorted(self.counters.items())})
    return out


DEFAULT_MAX_WORKERS = 8  # each worker holds sympy (~150 MB); more rarely pays off
_default_pool: WorkerPool | None = None


def default_pool() -> WorkerPool:
  """The process-wide pool used when none is passed: min(CPUs, 8) workers, made on first use."""
  global _default_pool
  if _default_pool is None:
    set_default_pool(WorkerPool(min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS)))
  return _default_pool


def set_default_pool(pool: WorkerPool) -> None:
  """Use `pool` for `grade`/`grade_with_stats` calls without a pool (closes the old one)."""
  global _default_pool
  if _default_pool is not None and _default_pool is not pool:
    _default_pool.close()
  _default_pool = pool
  atexit.register(pool.close)


def _as_str_list(values, name: str) -> list[str]:
  if isinstance(values, str) or not hasattr(values, "__len__"):
    raise TypeError(f"{name} must be a sequence of strings, got {type(values).__name__}")
  bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
  if bad:
    raise TypeError(f"{name}[{bad[0]}] is {type(values[bad[0]]).__name__}, expected str")
  return list(values)


def grade_with_stats(
    ability: str,
    responses,
    ground_truths,
    *,
    timeout_s: float | None = None,
    pool: WorkerPool | None = None,
    mode: str | None = None,
) -> tuple[np.ndarray, GradeStats]:
  """Score each response against its ground truth with the registered `ability`.

  Args:
    ability: registered ability name ('math', 'code', or one a task registered).
    responses, ground_truths: sequences of str, same length N.
    timeout_s: per-item wall-time limit in seconds (default: the ability's own).
    pool: worker pool to use (default: `default_pool()`).
    mode: one of the ability's modes (math: 'strict' or 'released', docs/math_grading.md);
      None uses the ability's current default (math: 'strict' unless `set_math_grader` chose).
  Returns:
    scores: float32 array [N] in [0, 1]; stats: GradeStats. A timeout, a scorer exception or
    a worker crash scores that item 0 and is counted; it never raises.
  Raises:
    KeyError for an unknown ability, TypeError/ValueError for malformed arguments or an unknown
    mode, and
    whatever the ability's preflight raises (e.g. SandboxUnavailableError: fail closed).
  """
  spec = get_ability(ability)
  score_fn = spec.mode_score_fn(mode)
  responses = _as_str_list(responses, "responses")
  ground_truths = _as_str_list(ground_truths, "ground_truths")
  if len(responses) != len(ground_truths):
    raise ValueError(f"got {len(responses)} responses but {len(ground_truths)} ground truths")
  limit = spec.timeout_s if timeout_s is None else float(timeout_s)
  if not limit > 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
  if spec.preflight is not None and responses:
    spec.preflight()
  pool = pool or default_pool()
  restarts_before = pool.restarts
  start = time.monotonic()
  outcomes: list[ItemOutcome] = (
      pool.map(score_fn, responses, ground_truths, limit, spec.self_timed, not spec.stateless)
      if responses
      else []
  )
  wall = time.monotonic() - start
  scores = np.array([o.score for o in outcomes], dtype=np.float32).reshape(len(outcomes))
  counters: Counter = Counter()
  for o in outcomes:
    counters.update(o.counters)
  errors = tuple(dict.fromkeys(o.message for o in outcomes if o.status != "ok" and o.message))[:20]
  stats = GradeStats(
      ability=ability,
      num_items=len(outcomes),
      statuses=tuple(o.status for o in outcomes),
      item_seconds=tuple(o.seconds for o in outcomes),
      counters=dict(counters),
      worker_restarts=pool.restarts - restarts_before,
      wall_s=wall,
      mean_score=float(scores.mean()) if len(scores) else 0.0,
      errors=errors,
  )
  failed = len(outcomes) - stats.count("ok")
  if failed:
    logger.warning(
        "%s grading: %d/%d items failed (%s); first error: %s",
        ability,
        failed,
        len(outcomes),
        {s: stats.count(s) for s in ITEM_STATUSES if s != "ok"},
        errors[0] if errors else "-",
    )
  return scores, stats


def grade(
    ability: str,
    responses,
    ground_truths,
    *,
    timeout_s: float | None = None,
    mode: str | None = None,
) -> np.ndarray:
  """Scores only: float32 array [N] in [0, 1]. See `grade_with_stats`."""
  return grade_with_stats(ability, responses, ground_truths, timeout_s=timeout_s, mode=mode)[0]


def grade_responses(records: Sequence, texts: Sequence[str], n: int) -> tuple[np.ndarray, dict]:
  """Scores [len(records) * n] of n responses per record (prompt-major), each graded with its
  record's ability against its ground truth (`prime_jax.data.Record` fields); plus the grader
  metrics of every ability graded."""
  truths = np.repeat([r.ground_truth for r in records], n)
  abilities = np.repeat([r.ability for r in records], n)
  scores = np.zeros(len(texts), np.float32)
  metrics: dict = {}
  for ability in sorted(set(abilities)):
    rows = np.flatnonzero(abilities == ability)
    scores[rows], stats = grade_with_stats(ability, [texts[i] for i in rows], truths[rows].tolist())
    metrics.update(stats.as_dict())
  return scores, metrics


def merge_grader_metrics(parts: Sequence[dict]) -> tuple[np.ndarray, dict]:
  """(scores, grader metrics) of a round from each process's {"scores", "abilities",
  "metrics"} for its rows (in process order): what one process grading every row reports.
  Counts add up, times are the slowest process's, mean scores are recomputed from the rows."""
  if len(parts) == 1:
    return np.asarray(parts[0]["scores"], np.float32), dict(parts[0]["metrics"])
  scores = np.concatenate([np.asarray(p["scores"], np.float32) for p in parts])
  abilities = np.asarray([a for p in parts for a in p["abilities"]])
  merged: dict = {}
  for part in parts:
    for key, value in part["metrics"].items():
      field = key.rsplit("/", 1)[1]
      if key not in merged:
        merged[key] = value
      elif field in ("wall_s", "max_item_s"):
        merged[key] = max(merged[key], value)
      elif field not in ("items_per_s", "mean_score"):
        merged[key] += value
  for key in merged:
    prefix, field = key.rsplit("/", 1)
    if field == "mean_score":
      rows = abilities == prefix.split("/", 1)[1]
      merged[key] = float(scores[rows].mean()) if rows.any() else 0.0
    elif field == "items_per_s":
      wall = merged.get(prefix + "/wall_s", 0.0)
      merged[key] = merged[prefix + "/items"] / wall if wall > 0 else 0.0
  return scores, merged
