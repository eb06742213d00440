"""Agreement and throughput of the math grader's modes (strict, released).

    python experiments/benchmarks/math_grading.py [--inputs FILE.jsonl] [--workers 2] [--repeat 3]

Grades every row of a labelled JSONL file (default: tests/verifiers/math_grading_corpus.jsonl;
rows {"category", "response", "ground_truth", "strict"?, "released"?}) with each mode, prints per
category how many of that mode's labels it reproduces, and items/s over `--repeat` passes (the
first, warm-up pass of each mode is not timed). A file labelled by the released PRIME grader
(key "released", or the one `--released_key` names) measures `released` against it on pairs it
has never seen.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time

from prime_jax.verifiers import WorkerPool, grade_with_stats

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_INPUTS = os.path.join(REPO, "tests", "verifiers", "math_grading_corpus.jsonl")
MODES = ("strict", "released")


def load(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _cell(agree: int, labelled: int) -> str:
  pct = f"{100 * agree / labelled:.1f}%" if labelled else "-"
  return f"{f'{agree}/{labelled} ({pct})':>22}"


def agreement_table(rows: list[dict], scores: dict[str, list[float]]) -> str:
  """One line per category and one for all: n and, per labelled mode, agreed/labelled (%)."""
  modes = [m for m in MODES if any(m in r for r in rows)]
  groups = collections.defaultdict(list)
  for i, row in enumerate(rows):
    groups[row.get("category", "all")].append(i)
  groups = dict(sorted(groups.items()))
  groups["all"] = list(range(len(rows)))
  header = f"{'category':<16}{'n':>5}" + "".join(f"{m:>22}" for m in modes)
  lines = [header, "-" * len(header)]
  for category, indices in groups.items():
    line = f"{category:<16}{len(indices):>5}"
    for m in modes:
      labelled = [i for i in indices if m in rows[i]]
      line += _cell(sum(scores[m][i] == rows[i][m] for i in labelled), len(labelled))
    lines.append(line)
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--inputs", default=DEFAULT_INPUTS)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--repeat", type=int, default=3, help="timed passes over the file")
  parser.add_argument(
      "--released_key",
      default="released",
      help="the key of the labels `released` is measured against (e.g. released_alarm)",
  )
  args = parser.parse_args()
  rows = load(args.inputs)
  for row in rows:
    label = row.get(args.released_key)
    row.pop("released", None)
    if label is not None:
      row["released"] = label
  responses = [r["response"] for r in rows]
  truths = [r["ground_truth"] for r in rows]
  scores = {}
  with WorkerPool(args.workers) as pool:
    for mode in MODES:
      first, _ = grade_with_stats("math", responses, truths, pool=pool, mode=mode)  # warm
      scores[mode] = first.tolist()
      start = time.perf_counter()
      statuses = collections.Counter()
      for _ in range(args.repeat):
        _, stats = grade_with_stats("math", responses, truths, pool=pool, mode=mode)
        statuses.update(stats.statuses)
      wall = time.perf_counter() - start
      n = args.repeat * len(rows)
      print(
          f"{mode}: {n} items in {wall:.2f} s = {n / wall:.1f} items/s "
          f"({1e3 * wall / n * args.workers:.1f} ms/item/worker, {args.workers} workers); "
          f"statuses {dict(statuses)}"
      )
  print(f"\nagreement with the labels of {os.path.relpath(args.inputs, REPO)}:")
  print(agreement_table(rows, scores))


if __name__ == "__main__":
  main()
