"""Registry of abilities: how a response of one task type is scored against its ground truth.

An ability's `score_fn(response, ground_truth, timeout_s)` runs in a worker process, so it must
be picklable by reference (a module-level function, or a functools.partial of one with picklable
arguments). It returns a score in [0, 1], or an `ItemResult` that also carries counters for the
grading stats (e.g. {"no_answer": 1}).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ItemResult:
  """Score of one item in [0, 1] plus ability-specific counters summed into the stats."""

  score: float
  counters: dict[str, int] = field(default_factory=dict)


ScoreFn = Callable[[str, str, float], "float | ItemResult"]


@dataclass(frozen=True)
class Ability:
  """A registered ability.

  timeout_s: default per-item wall-time limit. self_timed: score_fn keeps to timeout_s on its
  own (e.g. the code runner's sandbox deadlines); otherwise the worker interrupts it with an
  alarm at timeout_s. Either way the pool kills a worker that overruns by its grace period.
  preflight: called once in the caller's process before a batch (e.g. the sandbox isolation
  check); it raises to refuse grading rather than letting every item fail.
  modes: named alternative score functions (math: 'strict', 'released'), chosen per call with
  `grade(..., mode=...)`; `score_fn` is the one used without a mode.
  stateless: score_fn keeps nothing between items (no cache that grows, unlike sympy's), so the
  pool need not replace its workers every `max_items_per_worker` items: a replacement costs a
  fresh interpreter's start-up, seconds in which a batch waits.
  """

  name: str
  score_fn: ScoreFn
  timeout_s: float
  self_timed: bool = False
  preflight: Callable[[], None] | None = None
  modes: Mapping[str, ScoreFn] = field(default_factory=dict)
  stateless: bool = False

  def mode_score_fn(self, mode: str | None) -> ScoreFn:
    """The score function of `mode` (None: the default `score_fn`)."""
    if mode is None:
      return self.score_fn
    if mode not in self.modes:
      known = ", ".join(sorted(self.modes)) or "none"
      raise ValueError(f"ability {self.name!r} has no mode {mode!r}; its modes: {known}")
    return self.modes[mode]


_REGISTRY: dict[str, Ability] = {}


def register_ability(
    name: str,
    score_fn: ScoreFn,
    *,
    timeout_s: float = 10.0,
    self_timed: bool = False,
    preflight: Callable[[], None] | None = None,
    modes: Mapping[str, ScoreFn] | None = None,
    stateless: bool = False,
    replace: bool = False,
) -> Ability:
  """Register (or with replace=True, re-register) an ability under `name`; returns it."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"ability name must be a non-empty string, got {name!r}")
  if name in _REGISTRY and not replace:
    raise ValueError(f"ability {name!r} is already registered (pass replace=True to override)")
  modes = dict(modes or {})
  for fn in (score_fn, *modes.values()):
    if not callable(fn):
      raise TypeError(f"score_fn for ability {name!r} must be callable, got {type(fn)}")
  if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
    raise ValueError(
        f"timeout_s for ability {name!r} must be a positive number, " f"got {timeout_s!r}"
    )
  try:
    pickle.dumps((score_fn, modes))
  except Exception as exc:
    raise ValueError(
        f"score_fn for ability {name!r} must be picklable (a module-level function or a "
        f"functools.partial of one), because items are graded in worker processes: "
        f"{exc}"
    ) from exc
  ability = Ability(name, score_fn, float(timeout_s), self_timed, preflight, modes, stateless)
  _REGISTRY[name] = ability
  return ability


def get_ability(name: str) -> Ability:
  """The ability registered under `name` (built-ins: 'math', 'code')."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown ability {name!r}; registered: {sorted(_REGISTRY)}") from None


def registered_abilities() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))
