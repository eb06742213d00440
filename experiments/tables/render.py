"""A table's results from its finished runs' metrics.jsonl (and, at full scale, eval results):
results.md at small scale (`render_small`: accuracies, gaps with confidence intervals, sample
efficiency, step timing, PRM accuracy) or in the paper's Table 1 layout (`render_full`), and
curves.png (`plot_curves`)."""

from __future__ import annotations

import math
import os
import statistics
from typing import Optional, Sequence

from experiments import table_stats, variants
from experiments.tables.definitions import (
    BASE_FILES,
    CURVE_METRICS,
    EFFICIENCY_METRIC,
    EFFICIENCY_WINDOW,
    PAIRS,
    PAPER_FINDINGS,
    PAPER_TABLE1,
    PAPER_TABLE1_ROW,
    PAPER_TABLE4_AVG,
    PHASES,
    TABLES,
    TIMING_SKIP_STEPS,
)
from experiments.tables.runs import Run, eval_results, is_finished, last_step


def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
  if not values:
    return "–"
  mean, std = _mean_std([v * scale for v in values])
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _rows(run: Run) -> list[dict]:
  from prime_jax.metrics_log import read_metrics

  return read_metrics(run.workdir) if last_step(run.workdir) is not None else []


def _eval_rows(rows: Sequence[dict]) -> list[dict]:
  return [r for r in rows if isinstance(r.get("eval/accuracy_greedy"), (int, float))]


def _window_mean(rows: Sequence[dict], key: str, total_steps: int) -> Optional[float]:
  """Mean of `key` over the last quarter of the RL steps (at least one step)."""
  start = total_steps - max(1, total_steps // 4)
  values = [r[key] for r in rows if r["step"] > start and isinstance(r.get(key), (int, float))]
  return sum(values) / len(values) if values else None


def collect(runs: Sequence[Run]) -> dict[str, list[tuple[Run, list[dict]]]]:
  """{variant: [(run, metrics rows)]} of the finished runs, in table order."""
  out: dict[str, list] = {}
  for run in runs:
    if is_finished(run.workdir, run.total_steps):
      out.setdefault(run.variant, []).append((run, _rows(run)))
  return out


def _paper_cell(table: str, variant: str) -> str:
  if table in ("table1", "dense_credit") and variant in PAPER_TABLE1_ROW:
    row = PAPER_TABLE1_ROW[variant]
    step, scores = PAPER_TABLE1[row]
    return f"{scores['avg']:.1f} ('{row}', step {step})"
  if table == "table4" and variant in PAPER_TABLE4_AVG:
    return f"{PAPER_TABLE4_AVG[variant]:.1f}"
  if table == "prm_ablations":
    return PAPER_FINDINGS.get(variant, "–")
  return "–"


def _paper_header(table: str) -> str:
  return {
      "table1": "paper: Table 1 avg (%)",
      "dense_credit": "paper: Table 1 avg (%)",
      "table4": "paper: Table 4 avg at step 240 (%)",
      "prm_ablations": "paper's finding (spec §9)",
  }[table]


def render_small(args, runs: Sequence[Run], done: dict) -> str:
  table = TABLES[args.table]
  chosen = [v for v in dict.fromkeys(r.variant for r in runs)]
  steps = sorted({r.total_steps for r in runs})
  lines = [
      f"# {args.table} ({args.scale} scale): {table.title}",
      "",
      f"Base `{BASE_FILES[args.scale]}` (`prime_jax.configs."
      f"{'arithmetic_config' if args.scale == 'small' else 'arithmetic_credit_config'}()`), "
      f"{'/'.join(map(str, steps))} RL steps, seeds {','.join(map(str, args.seeds))}. "
      "Held-out accuracy of the synthetic arithmetic task (greedy pass@1, and the mean "
      "accuracy of temperature-1 samples), from each run's metrics.jsonl eval rows: before "
      "RL (step 0) and at the last step, mean ± sample std over seeds. Training accuracy "
      "and PRM pair accuracy: mean over the last quarter of the steps. The paper's column "
      "is Eurus-2-7B on the Table 1 benchmarks: the direction to compare, not the scale.",
      "",
      "| variant | what | seeds | greedy before | greedy final | sampled before | "
      f"sampled final | training acc (all samples) | PRM acc | {_paper_header(args.table)} |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for variant in chosen:
    finished = done.get(variant, [])
    first, last, train, prm = [], [], [], []
    for run, rows in finished:
      evals = _eval_rows(rows)
      if evals:
        first.append(evals[0])
        last.append(evals[-1])
      for key, out in (("rollout/acc_all_samples", train), ("prm/acc_before", prm)):
        value = _window_mean(rows, key, run.total_steps)
        if value is not None:
          out.append(value)
    cells = [
        f"`{variant}`",
        variants.VARIANTS[variant].what,
        f"{len(finished)}/{len(args.seeds)}",
        _fmt([r["eval/accuracy_greedy"] for r in first]),
        _fmt([r["eval/accuracy_greedy"] for r in last]),
        _fmt([r["eval/accuracy_sampled"] for r in first]),
        _fmt([r["eval/accuracy_sampled"] for r in last]),
        _fmt(train),
        _fmt(prm),
        _paper_cell(args.table, variant),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += render_effects(args, done) + render_prm_accuracy(done) + render_timing(args, done)
  return "\n".join(lines) + "\n"


def _curve(rows: Sequence[dict], key: str) -> dict[int, float]:
  """{step: value} of the rows that log `key` with a finite number (the plot tool's series)."""
  from prime_jax.tools.plot import series

  return dict(zip(*series(rows, key)))


def _final_evals(finished, key: str) -> dict[int, float]:
  """{seed: the last eval's value of key}."""
  out = {}
  for run, rows in finished:
    evals = _eval_rows(rows)
    if evals:
      out[run.seed] = evals[-1][key]
  return out


def _gaps(treated, baseline, key: str) -> list[str]:
  """[unpaired, paired] gap cells of one metric."""
  t, b = _final_evals(treated, key), _final_evals(baseline, key)
  welch = table_stats.welch_gap(list(t.values()), list(b.values()))
  paired = table_stats.paired_gap(t, b)
  return [
      welch.format() if welch else "– (needs 2+ seeds each)",
      paired.format() if paired else "– (needs 2+ common seeds)",
  ]


def render_effects(args, done: dict) -> list[str]:
  """The gap of each (baseline, treated) pair of the table, with 95% CIs over seeds, and the
  steps the treated variant takes to reach the baseline's final training accuracy."""
  pairs = [(b, t) for b, t in PAIRS[args.table] if done.get(b) and done.get(t)]
  if not pairs:
    return []
  lines = [
      "",
      "## Effect of each change, with 95% confidence intervals",
      "",
      "Final gap: treated − baseline of the last eval's held-out accuracy. Unpaired: the "
      "difference of the seed means with Welch's t interval. Paired: the mean of the per-seed "
      "differences with the paired t interval; a seed's runs share the SFT model, the prompt "
      "order and the sampling keys, so pairing removes the seed-to-seed spread (mostly the SFT "
      "model's), the larger part of the unpaired interval. Seeds are the unit, so with 2–3 "
      "seeds either interval is wide. Steps to "
      f"reach: the first RL step at which the treated variant's seed-mean `{EFFICIENCY_METRIC}` "
      f"({EFFICIENCY_WINDOW}-step trailing mean) reaches the baseline's value at its last step "
      "(the paper's sample-efficiency measure, its '2.5×'), and baseline steps / that step; the "
      "interval is a percentile bootstrap over seeds (2000 resamples; a seed's two runs are "
      "resampled together when both variants have the same seeds; with 3 seeds it has few "
      "distinct values).",
      "",
      "| baseline → treated | seeds | sampled final gap, unpaired | paired | greedy final gap, "
      "unpaired | paired | steps to reach the baseline's final training acc |",
      "|---|---|---|---|---|---|---|",
  ]
  for base, treated in pairs:
    eff = table_stats.sample_efficiency(
        {run.seed: _curve(rows, EFFICIENCY_METRIC) for run, rows in done[treated]},
        {run.seed: _curve(rows, EFFICIENCY_METRIC) for run, rows in done[base]},
        window=EFFICIENCY_WINDOW,
    )
    cells = [
        f"{base} → {treated}",
        f"{len(done[base])} / {len(done[treated])}",
        *_gaps(done[treated], done[base], "eval/accuracy_sampled"),
        *_gaps(done[treated], done[base], "eval/accuracy_greedy"),
        eff.format() if eff else "–",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _num(value: Optional[float], digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[float]) -> Optional[float]:
  return statistics.median(values) if values else None


def render_timing(args, done: dict) -> list[str]:
  """Median seconds per RL step and per phase, pooled over seeds, eval time left out."""
  if not done:
    return []
  lines = [
      "",
      "## Wall-clock per RL step",
      "",
      f"Median over RL steps > {TIMING_SKIP_STEPS} (the first compile) of every seed's "
      "`time/*` metrics, seconds; step = the trainer's `time/step` minus its `time/eval`. "
      "The fused update is one compiled graph: its PRM / policy split is estimated from "
      "forward-pass counts (`algo.update_step.forward_passes`). × baseline: this step over "
      "the pair's baseline step (PAIRS).",
      "",
      "| variant | steps timed | step | " + " | ".join(n for _, n in PHASES) + " | × baseline |",
      "|---|---|---|" + "---|" * len(PHASES) + "---|",
  ]
  timed = {
      variant: [
          r
          for _, rs in finished
          for r in rs
          if r["step"] > TIMING_SKIP_STEPS and isinstance(r.get("time/step"), (int, float))
      ]
      for variant, finished in done.items()
  }
  medians = {
      variant: _median([r["time/step"] - r.get("time/eval", 0.0) for r in rows])
      for variant, rows in timed.items()
  }
  for variant, rows in timed.items():
    cells = [variant, str(len(rows)), _num(medians[variant], 2)]
    cells += [
        _num(_median([r[k] for r in rows if isinstance(r.get(k), (int, float))]), 2)
        for k, _ in PHASES
    ]
    base = next((b for b, t in PAIRS[args.table] if t == variant), None)
    ratio = medians[variant] / medians[base] if medians.get(base) and medians[variant] else None
    cells.append(f"{ratio:.2f}× {base}" if ratio else "–")
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def render_prm_accuracy(done: dict) -> list[str]:
  """The implicit PRM's pair accuracy on each step's fresh rollouts, by quarter of the run."""
  keyed = [
      (variant, key)
      for variant, finished in done.items()
      for key in ("prm/acc_before", "prm/acc_after")
      if any(_curve(rows, key) for _, rows in finished)
  ]
  if not keyed:
    return []
  lines = [
      "",
      "## Implicit PRM pair accuracy by quarter of the run",
      "",
      "`prm/acc_before`: share of (correct, incorrect) response pairs of a prompt whose "
      "implicit rewards rank the correct one higher, on each step's fresh rollouts, before "
      "that step's PRM update (`prm/acc_after`: after it, double forward only); the released "
      "metric's tie rule (`prime_jax.algo.prm_pair_accuracy`: an untrained PRM scores about 0.5; "
      "runs before it counted ties wrong). Mean over the steps of each quarter, then mean ± std "
      "over seeds. 0.5 is chance.",
      "",
      "| variant | metric | steps 1–25% | 25–50% | 50–75% | 75–100% |",
      "|---|---|---|---|---|---|",
  ]
  for variant, key in keyed:
    quarters = [[] for _ in range(4)]
    for run, rows in done[variant]:
      curve = _curve(rows, key)
      for q in range(4):
        part = [
            v
            for s, v in curve.items()
            if q * run.total_steps / 4 < s <= (q + 1) * run.total_steps / 4
        ]
        if part:
          quarters[q].append(sum(part) / len(part))
    lines.append(f"| {variant} | {key} | " + " | ".join(_fmt(q) for q in quarters) + " |")
  return lines


def render_full(args, runs: Sequence[Run], done: dict) -> str:
  from prime_jax.evaluation import TABLE_ORDER, render_table, table_average

  table = TABLES[args.table]
  chosen = [v for v in dict.fromkeys(r.variant for r in runs)]
  steps = sorted({r.total_steps for r in runs})
  ours, summary = [], []
  for variant in chosen:
    per_seed = [eval_results(run) for run, _ in done.get(variant, [])]
    per_seed = [r for r in per_seed if r]
    scores = {}
    for name in TABLE_ORDER:
      values = [r["benchmarks"][name]["score"] for r in per_seed if name in r["benchmarks"]]
      if values and len(values) == len(per_seed):
        scores[name] = sum(values) / len(values)
    if per_seed:
      ours.append((f"{variant} (ours, {len(per_seed)} seed{'s' * (len(per_seed) > 1)})", scores))
    avgs = [table_average({n: b["score"] for n, b in r["benchmarks"].items()}) for r in per_seed]
    validation = [
        (_eval_rows(rows) or [{}])[-1].get("eval/accuracy_greedy")
        for _, rows in done.get(variant, [])
    ]
    summary.append(
        (
            variant,
            len(done.get(variant, [])),
            len(per_seed),
            [a for a in avgs if a is not None],
            [v for v in validation if v is not None],
        )
    )
  paper_rows = []
  if args.table == "table1":
    paper_rows = [
        (
            f"{row} (paper{', step ' + str(step) if step is not None else ''})",
            {k: v / 100 for k, v in scores.items() if k != "avg"},
        )
        for row, (step, scores) in PAPER_TABLE1.items()
    ]
  lines = [
      f"# {args.table} (full scale): {table.title}",
      "",
      f"Base `{BASE_FILES['full']}` (Eurus-2-7B-SFT, Eurus-2-RL-Data), "
      f"{'/'.join(map(str, steps))} RL steps, seeds {','.join(map(str, args.seeds))}; "
      f"eval harness `prime_jax.eval` ({args.eval_mode}) on each run's exported policy, "
      f"benchmarks {args.benchmarks}. Our rows: the mean over seeds (a benchmark shows only "
      "when every seed has it); the paper's rows from spec §9.",
      "",
  ]
  if ours or paper_rows:
    lines += [render_table(ours + paper_rows), ""]
  if not args.eval_data_dir:
    lines += [
        "No --eval_data_dir: the benchmarks were not run; the summary below has the "
        "training run's own validation accuracy only.",
        "",
    ]
  lines += [
      f"| variant | what | runs finished | evaluated | avg (ours, %, mean ± std) | "
      f"validation greedy (training eval, last step) | {_paper_header(args.table)} |",
      "|---|---|---|---|---|---|---|",
  ]
  for variant, finished, evaluated, avgs, validation in summary:
    lines.append(
        "| "
        + " | ".join(
            [
                f"`{variant}`",
                variants.VARIANTS[variant].what,
                f"{finished}/{len(args.seeds)}",
                f"{evaluated}/{len(args.seeds)}",
                _fmt(avgs, 100, 1),
                _fmt(validation),
                _paper_cell(args.table, variant),
            ]
        )
        + " |"
    )
  return "\n".join(lines) + "\n"


def plot_curves(done: dict, out: str) -> Optional[str]:
  """One panel per metric in CURVE_METRICS that some run logs: per variant the mean over seeds
  against the RL step (steps every seed logs), with a min-max band."""
  from prime_jax.tools.plot import DEFAULT_METRICS, UNIT_INTERVAL_METRICS
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  metrics = [
      m for m in CURVE_METRICS if any(_curve(rows, m) for runs in done.values() for _, rows in runs)
  ]
  if not metrics:
    return None
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 4.0), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for i, (variant, runs) in enumerate(done.items()):
      per_seed = [_curve(rows, metric) for _, rows in runs]
      per_seed = [s for s in per_seed if s]
      if not per_seed:
        continue
      steps = sorted(set.intersection(*(set(s) for s in per_seed)))
      if not steps:
        continue
      values = [[s[step] for s in per_seed] for step in steps]
      mean = [sum(v) / len(v) for v in values]
      color = f"C{i % 10}"
      ax.plot(
          steps,
          mean,
          color=color,
          marker="o" if len(steps) <= 40 else None,
          markersize=3,
          linewidth=1.4,
          label=f"{variant} ({len(per_seed)})",
      )
      if len(per_seed) > 1:
        ax.fill_between(
            steps,
            [min(v) for v in values],
            [max(v) for v in values],
            color=color,
            alpha=0.18,
            linewidth=0,
        )
    ax.set_title(
        metric + (f"\n{DEFAULT_METRICS[metric]}" if metric in DEFAULT_METRICS else ""), fontsize=10
    )
    ax.set_xlabel("RL step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if metric in UNIT_INTERVAL_METRICS:
      ax.set_ylim(-0.03, 1.03)
  handles, labels = axes[0][0].get_legend_handles_labels()
  for ax in axes[0][1:]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 0.88))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110, format="png")
  plt.close(fig)
  return out
