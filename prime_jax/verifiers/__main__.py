"""CLI: grade a JSONL file of {"response", "ground_truth"} rows and print scores and a summary.

python -m prime_jax.verifiers --ability math --inputs FILE.jsonl [--mode released] [--timeout-s 10]
    [--workers 2]

--mode picks one of the ability's grading modes (math: strict, the default, or released;
docs/math_grading.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from prime_jax.verifiers.grading import grade_with_stats
from prime_jax.verifiers.pool import WorkerPool
from prime_jax.verifiers.registry import get_ability, registered_abilities


def read_rows(path: str) -> tuple[list[str], list[str]]:
  """Responses and ground truths from a JSONL file; errors name the offending line."""
  responses, truths = [], []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as exc:
        raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
      if not isinstance(row, dict) or not isinstance(row.get("response"), str):
        raise ValueError(f'{path}:{lineno}: expected an object with string "response"')
      truth = row.get("ground_truth")
      if not isinstance(truth, str):  # code ground truths may be given as JSON objects
        truth = json.dumps(truth) if isinstance(truth, (dict, list)) else None
      if truth is None:
        raise ValueError(f'{path}:{lineno}: missing "ground_truth"')
      responses.append(row["response"])
      truths.append(truth)
  return responses, truths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m prime_jax.verifiers",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--ability", required=True, choices=registered_abilities())
  parser.add_argument("--inputs", required=True, help="JSONL with response, ground_truth")
  parser.add_argument("--timeout-s", type=float, default=None, help="per-item limit")
  parser.add_argument("--workers", type=int, default=None, help="worker processes")
  parser.add_argument("--mode", default=None, help="grading mode (math: strict | released)")
  args = parser.parse_args(argv)
  try:
    get_ability(args.ability).mode_score_fn(args.mode)  # an unknown mode: a usage error, up front
    responses, truths = read_rows(args.inputs)
  except (OSError, ValueError) as exc:
    parser.error(str(exc))
  with WorkerPool(args.workers) as pool:
    scores, stats = grade_with_stats(
        args.ability, responses, truths, timeout_s=args.timeout_s, pool=pool, mode=args.mode
    )
  for i, (score, status) in enumerate(zip(scores, stats.statuses, strict=True)):
    print(json.dumps({"index": i, "score": round(float(score), 6), "status": status}))
  summary = {k.split("/", 2)[2]: v for k, v in stats.as_dict().items()}
  print(json.dumps({"summary": summary, "errors": list(stats.errors)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
