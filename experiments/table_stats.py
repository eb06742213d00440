"""Statistics over seeds for the small-scale tables: gaps with confidence intervals, and the
paper's sample-efficiency measure (steps for a method to reach a baseline's final accuracy).

All functions are pure and take plain per-seed lists, so they are tested against scipy / numpy
by hand. A "curve" is {RL step: value} for one seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import stats

Curve = Mapping[int, float]


@dataclasses.dataclass(frozen=True)
class Interval:
  estimate: float
  low: float
  high: float

  def format(self, digits: int = 3, signed: bool = True) -> str:
    sign = "+" if signed else ""
    return (
        f"{self.estimate:{sign}.{digits}f} "
        f"[{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]"
    )


def welch_gap(
    treated: Sequence[float], baseline: Sequence[float], level: float = 0.95
) -> Optional[Interval]:
  """mean(treated) - mean(baseline) with Welch's t confidence interval (unequal variances).

  None with fewer than 2 values on either side. With identical values on both sides (zero
  variance) the interval is the point itself.
  """
  a, b = np.asarray(treated, float), np.asarray(baseline, float)
  if len(a) < 2 or len(b) < 2:
    return None
  gap = float(a.mean() - b.mean())
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0.0:
    return Interval(gap, gap, gap)
  dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
  return Interval(gap, gap - half, gap + half)


def paired_gap(
    treated: Mapping[int, float], baseline: Mapping[int, float], level: float = 0.95
) -> Optional[Interval]:
  """Mean of treated[s] - baseline[s] over the seeds s both have, with the paired t interval.

  Runs of one seed share the SFT model, the prompt order and the sampling keys, so the per-seed
  difference removes the seed-to-seed spread that dominates `welch_gap`. None with fewer than 2
  common seeds.
  """
  seeds = sorted(set(treated) & set(baseline))
  if len(seeds) < 2:
    return None
  d = np.array([treated[s] - baseline[s] for s in seeds], float)
  gap, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
  half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * se
  return Interval(gap, gap - half, gap + half)


def trailing_mean(curve: Curve, window: int) -> dict[int, float]:
  """Each step's value replaced by the mean of the last `window` logged steps up to it."""
  steps = sorted(curve)
  values = np.array([curve[s] for s in steps], float)
  sums = np.concatenate([[0.0], np.cumsum(values)])
  out = {}
  for i, step in enumerate(steps):
    lo = max(0, i + 1 - window)
    out[step] = float((sums[i + 1] - sums[lo]) / (i + 1 - lo))
  return out


def mean_curve(curves: Sequence[Curve]) -> dict[int, float]:
  """The mean over seeds at the steps every seed logs."""
  common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
  return {s: float(np.mean([c[s] for c in curves])) for s in common}


def steps_to_reach(curve: Curve, target: float) -> Optional[int]:
  """The first step at which `curve` is >= target, None if it never is."""
  return next((s for s in sorted(curve) if curve[s] >= target), None)


@dataclasses.dataclass(frozen=True)
class Efficiency:
  """How many steps the treated method takes to reach the baseline's final (smoothed) value.

  `steps` is None when the treated mean curve never reaches it within its run. `ratio` is the
  baseline's steps over `steps` (the paper's "2.5x"), None when not reached. The interval is a
  percentile bootstrap over seeds: a bound of None means "not reached" in that share of resamples.
  """

  target: float
  baseline_steps: int
  steps: Optional[int]
  steps_low: Optional[int]
  steps_high: Optional[int]
  resamples: int
  paired: bool  # the bootstrap resampled the two methods' seeds jointly

  @property
  def ratio(self) -> Optional[float]:
    return self.baseline_steps / self.steps if self.steps else None

  def format(self) -> str:
    def steps(s):
      return f">{self.baseline_steps}" if s is None else str(s)

    def ratio(s):
      return "<1" if s is None else f"{self.baseline_steps / s:.2f}×"

    # Fewer steps is a higher ratio: the steps interval's upper end is the ratio's lower end.
    return (
        f"{steps(self.steps)} steps ({ratio(self.steps)}); 95% CI {steps(self.steps_low)} "
        f"to {steps(self.steps_high)} steps ({ratio(self.steps_high)} to "
        f"{ratio(self.steps_low)})"
    )


def sample_efficiency(
    treated: Mapping[int, Curve],
    baseline: Mapping[int, Curve],
    *,
    window: int = 10,
    resamples: int = 2000,
    seed: int = 0,
) -> Optional[Efficiency]:
  """Steps for the treated method's seed-mean curve to reach the baseline's final value.

  `treated` / `baseline`: {seed: curve}. Both methods' curves are smoothed with a `window`-step
  trailing mean; the target is the baseline's seed-mean smoothed curve at its last step. The
  bootstrap resamples seeds with replacement and repeats the whole computation: jointly (the
  same seeds for both methods, as `paired_gap` pairs them) when both have the same seeds,
  otherwise within each method. None if either side has no curve.
  """
  treated = {s: trailing_mean(c, window) for s, c in treated.items() if c}
  baseline = {s: trailing_mean(c, window) for s, c in baseline.items() if c}
  if not treated or not baseline:
    return None
  t_seeds, b_seeds = sorted(treated), sorted(baseline)
  paired = t_seeds == b_seeds

  def measure(t_idx, b_idx):
    base = mean_curve([baseline[b_seeds[i]] for i in b_idx])
    if not base:
      return None, None
    target = base[max(base)]
    return target, steps_to_reach(mean_curve([treated[t_seeds[i]] for i in t_idx]), target)

  target, steps = measure(range(len(t_seeds)), range(len(b_seeds)))
  if target is None:
    return None
  rng = np.random.default_rng(seed)
  # Not reached counts as infinitely many steps, so the percentiles order it last.
  draws = []
  for _ in range(resamples):
    t_idx = rng.integers(len(t_seeds), size=len(t_seeds))
    _, s = measure(t_idx, t_idx if paired else rng.integers(len(b_seeds), size=len(b_seeds)))
    draws.append(math.inf if s is None else s)
  low = float(np.percentile(draws, 2.5, method="lower"))
  high = float(np.percentile(draws, 97.5, method="higher"))

  def as_steps(x):
    return None if math.isinf(x) else int(x)

  base_steps = max(mean_curve(list(baseline.values())))
  return Efficiency(target, base_steps, steps, as_steps(low), as_steps(high), resamples, paired)
