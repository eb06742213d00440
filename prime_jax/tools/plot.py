r"""Training curves of one or more runs, as a PNG.

  python -m prime_jax.tools.plot DIR [DIR...] [--out curves.png] [--metrics 'acc_mean,eval/*']

Reads each DIR/metrics.jsonl (written by `prime_jax.train`) and draws one panel per metric against
the RL step, one line per run, labelled by the run directory's name. Default panels: reward (the
outcome accuracy of the kept groups), accuracy of all sampled responses, held-out greedy and
sampled accuracy, PRM accuracy and response length. `--metrics` takes comma-separated metric names
or shell-style patterns; a run that does not log a metric (an outcome-only run has no PRM) simply
has no line in that panel. Eval metrics exist only on eval steps, so sparse series get markers.
"""

from __future__ import annotations

import fnmatch
import math
import os
import sys
from typing import Optional, Sequence

from absl import app, flags

from prime_jax.metrics_log import METRICS_FILE, read_metrics

DEFAULT_METRICS = {
    "acc_mean": "reward: accuracy of kept groups",
    "rollout/acc_all_samples": "training accuracy, all samples",
    "eval/accuracy_greedy": "held-out greedy pass@1",
    "eval/accuracy_sampled": "held-out accuracy, T=1 samples",
    "prm/acc_before": "implicit PRM accuracy",
    "response_length_mean": "response length (tokens)",
}
# Metrics that are fractions: their panels' y axis is [0, 1] (here and in experiments/tables).
UNIT_INTERVAL_METRICS = (
    "acc_mean",
    "rollout/acc_all_samples",
    "eval/accuracy_greedy",
    "eval/accuracy_sampled",
    "prm/acc_before",
)
_MAX_MARKED_POINTS = 40  # series with fewer points (eval steps) are drawn with markers
_COLUMNS = 3


class PlotError(ValueError):
  """Bad input (a missing run directory, metrics file or metric); printed without a traceback."""


def run_labels(dirs: Sequence[str]) -> list[str]:
  """Each directory's name; the full path where two runs share a name."""
  names = [os.path.basename(os.path.normpath(d)) for d in dirs]
  return [name if names.count(name) == 1 else os.path.normpath(d) for name, d in zip(names, dirs)]


def load_runs(dirs: Sequence[str]) -> dict[str, list[dict]]:
  """{label: metrics rows} for each run directory, in the order given."""
  if not dirs:
    raise PlotError("give at least one run directory (a prime_jax.train --workdir)")
  runs = {}
  for label, d in zip(run_labels(dirs), dirs):
    if not os.path.isdir(d):
      raise PlotError(f"run directory {d!r} does not exist")
    if not os.path.isfile(os.path.join(d, METRICS_FILE)):
      raise PlotError(f"{d!r} has no {METRICS_FILE} (is it a prime_jax.train --workdir?)")
    try:
      rows = read_metrics(d)
    except ValueError as e:
      raise PlotError(str(e)) from None
    if not rows:
      raise PlotError(f"{os.path.join(d, METRICS_FILE)} holds no steps yet")
    runs[label] = rows
  return runs


def _numeric(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def series(rows: Sequence[dict], metric: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the rows that log `metric` with a finite number."""
  points = [
      (row["step"], float(row[metric]))
      for row in rows
      if _numeric(row.get(metric)) and math.isfinite(row[metric])
  ]
  return [s for s, _ in points], [v for _, v in points]


def select_metrics(
    runs: dict[str, list[dict]], patterns: Optional[Sequence[str]]
) -> tuple[list[str], list[str]]:
  """(metrics to plot, default metrics left out because no run logs them).

  With `patterns`, each must match at least one numeric metric of some run (else PlotError);
  matches keep the order of the patterns, then the order of first appearance.
  """
  logged = list(
      dict.fromkeys(
          k
          for rows in runs.values()
          for row in rows
          for k, v in row.items()
          if k != "step" and _numeric(v)
      )
  )
  if patterns is None:
    chosen = [m for m in DEFAULT_METRICS if m in logged]
    return chosen, [m for m in DEFAULT_METRICS if m not in logged]
  chosen = []
  for pattern in patterns:
    matches = [m for m in logged if fnmatch.fnmatchcase(m, pattern)]
    if not matches:
      raise PlotError(
          f"no run logs a metric matching {pattern!r}; logged metrics: "
          + ", ".join(logged[:30])
          + (" ..." if len(logged) > 30 else "")
      )
    chosen += [m for m in matches if m not in chosen]
  return chosen, []


def plot_runs(runs: dict[str, list[dict]], metrics: Sequence[str], out: str) -> str:
  """Writes the PNG `out` (one panel per metric, one line per run); returns its path."""
  import matplotlib

  matplotlib.use("Agg")  # files only: no display needed
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  if not metrics:
    raise PlotError("no metric to plot: none of the runs logs any of " + ", ".join(DEFAULT_METRICS))
  if not out.lower().endswith(".png"):
    raise PlotError(f"--out must name a .png file, got {out!r}")
  cols = min(_COLUMNS, len(metrics))
  rows = math.ceil(len(metrics) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows + 0.6), squeeze=False)
  for ax, metric in zip(axes.flat, metrics):
    for i, (label, run_rows) in enumerate(runs.items()):
      steps, values = series(run_rows, metric)
      if steps:
        marker = "o" if len(steps) <= _MAX_MARKED_POINTS else None
        ax.plot(steps, values, color=f"C{i % 10}", marker=marker, markersize=3.5, linewidth=1.4)
    title = metric + (f"\n{DEFAULT_METRICS[metric]}" if metric in DEFAULT_METRICS else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("RL step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if metric in UNIT_INTERVAL_METRICS:
      ax.set_ylim(-0.03, 1.03)
  for ax in list(axes.flat)[len(metrics) :]:
    ax.set_visible(False)
  handles = [plt.Line2D([], [], color=f"C{i % 10}", linewidth=2) for i in range(len(runs))]
  fig.legend(handles, list(runs), loc="upper center", ncol=min(len(runs), 4), frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110, format="png")
  plt.close(fig)
  return out


def main(argv):
  try:
    runs = load_runs(argv[1:])
    metrics, missing = select_metrics(runs, flags.FLAGS.metrics)
    out = plot_runs(runs, metrics, flags.FLAGS.out)
  except PlotError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  for metric in missing:
    print(f"note: no run logs {metric}; panel left out", file=sys.stderr)
  print(f"wrote {out}: {len(metrics)} panels, {len(runs)} runs")


if __name__ == "__main__":
  # Flags are defined here, not at import: the other tools define their own --out.
  flags.DEFINE_string("out", "curves.png", "Output PNG file.")
  flags.DEFINE_list(
      "metrics",
      None,
      "Metric names or shell-style patterns to plot, "
      "comma-separated; default: reward, training accuracy, eval accuracy, PRM "
      "accuracy, response length.",
  )
  app.run(main)
