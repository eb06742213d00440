"""experiments/table_stats.py against scipy / numpy and hand-built curves."""

import numpy as np
import pytest
from scipy import stats

from experiments import table_stats as ts


def test_welch_gap_matches_scipys_welch_interval():
  a, b = [0.52, 0.61, 0.47, 0.58], [0.44, 0.50, 0.41]
  got = ts.welch_gap(a, b)
  want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert got.estimate == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
  assert (got.low, got.high) == (
      pytest.approx(want.low, abs=1e-9),
      pytest.approx(want.high, abs=1e-9),
  )
  assert ts.welch_gap([0.5], b) is None and ts.welch_gap(a, [0.4]) is None
  flat = ts.welch_gap([0.5, 0.5], [0.3, 0.3])  # no spread: the interval is the point
  assert flat.low == flat.estimate == flat.high == pytest.approx(0.2)
  assert ts.welch_gap(a, b).format() == f"{got.estimate:+.3f} [{got.low:+.3f}, {got.high:+.3f}]"


def test_paired_gap_matches_scipys_paired_interval_on_common_seeds():
  treated, baseline = {0: 0.443, 1: 0.580, 2: 0.424, 5: 0.9}, {0: 0.445, 1: 0.605, 2: 0.426}
  got = ts.paired_gap(treated, baseline)  # seed 5 has no baseline: left out
  t, b = [0.443, 0.580, 0.424], [0.445, 0.605, 0.426]
  want = stats.ttest_rel(t, b).confidence_interval(0.95)
  assert got.estimate == pytest.approx(np.mean(np.subtract(t, b)), abs=1e-12)
  assert (got.low, got.high) == (
      pytest.approx(want.low, abs=1e-9),
      pytest.approx(want.high, abs=1e-9),
  )
  # The seed-to-seed spread cancels: much narrower than the unpaired interval.
  welch = ts.welch_gap(t, b)
  assert got.high - got.low < (welch.high - welch.low) / 4
  assert ts.paired_gap({0: 0.5, 1: 0.6}, {1: 0.5}) is None


def test_trailing_mean_is_a_running_window_mean():
  rng = np.random.default_rng(0)
  values = rng.random(30)
  curve = {s: float(v) for s, v in zip(range(1, 31), values)}
  got = ts.trailing_mean(curve, 7)
  want = [values[max(0, i - 6) : i + 1].mean() for i in range(30)]
  np.testing.assert_allclose([got[s] for s in range(1, 31)], want, rtol=1e-12)


def _line(slope, steps=100):
  return {s: min(1.0, slope * s) for s in range(1, steps + 1)}


def test_sample_efficiency_of_a_twice_as_fast_method_is_two():
  # Baseline reaches 0.5 at step 100; the treated line (twice the slope) reaches it at step 50.
  eff = ts.sample_efficiency(
      dict(enumerate([_line(0.01)] * 3)), dict(enumerate([_line(0.005)] * 3)), window=1
  )
  assert (eff.target, eff.steps, eff.baseline_steps) == (pytest.approx(0.5), 50, 100)
  assert eff.ratio == pytest.approx(2.0)
  assert (eff.steps_low, eff.steps_high) == (50, 50)  # identical seeds: no spread
  assert eff.format() == "50 steps (2.00×); 95% CI 50 to 50 steps (2.00× to 2.00×)"


def test_sample_efficiency_not_reached_and_the_bootstrap_spread():
  never = ts.sample_efficiency(
      {0: _line(0.001), 1: _line(0.001)}, {0: _line(0.005), 1: _line(0.005)}, window=1
  )
  assert never.steps is None and never.ratio is None and never.steps_low is None
  assert never.format().startswith(">100 steps (<1)")
  # Seeds of different speed: the interval brackets the estimate and spans the seed extremes.
  treated = {0: _line(0.006), 1: _line(0.01), 2: _line(0.02)}
  baseline = {0: _line(0.005), 1: _line(0.005), 2: _line(0.005)}
  eff = ts.sample_efficiency(treated, baseline, window=1, resamples=500)
  assert eff.paired and eff.steps == ts.steps_to_reach(ts.mean_curve(list(treated.values())), 0.5)
  assert eff.steps_low <= eff.steps <= eff.steps_high
  assert eff.steps_low >= 25 and eff.steps_high <= 84  # all-fast / all-slow resamples
  assert eff == ts.sample_efficiency(treated, baseline, window=1, resamples=500)
  # Different seeds on the two sides: resampled independently.
  assert not ts.sample_efficiency(treated, {7: _line(0.005)}, window=1, resamples=50).paired


def test_paired_bootstrap_keeps_a_seeds_runs_together():
  # Seed 1 is fast under both methods, seed 0 slow; the treated run is always 2x its own
  # baseline. Paired resampling keeps the ratio near 2; unpaired mixes fast and slow seeds.
  treated = {0: _line(0.004), 1: _line(0.04)}
  baseline = {0: _line(0.002), 1: _line(0.02)}
  paired = ts.sample_efficiency(treated, baseline, window=1, resamples=400)
  unpaired = ts.sample_efficiency(
      treated, {2: baseline[0], 3: baseline[1]}, window=1, resamples=400
  )
  assert paired.paired and not unpaired.paired
  assert paired.steps == unpaired.steps
  # Unpaired, a resample of slow treated seeds against fast baselines never reaches the target.
  assert paired.steps_high is not None and paired.steps_high <= 50
  assert unpaired.steps_high is None
