"""Labels (response, ground truth) pairs with the verdict of PRIME's released math grader.

    pip download verl==0.9.1 --no-deps -d /tmp/verl_dl      # the reference: verl's prime_math
    python experiments/benchmarks/label_with_released_reference.py \
        --verl_wheel /tmp/verl_dl/verl-0.9.1-py3-none-any.whl \
        --inputs pairs.jsonl --out labelled.jsonl

`--verl_wheel` is the wheel or the directory it was unpacked into. Each input row
{"response", "ground_truth", ...} is written back with "released" = 1.0 if
`verl.utils.reward_score.prime_math.compute_score(response, ground_truth)` says correct, else
0.0, and "released_extracted" = the answer it extracted (a label already in the row is kept
as "released_before"). Only prime_math is loaded (see released_reference.py); the grader runs
in a worker process that is killed and replaced when an item overruns `--time_limit`; a
timeout, a crash or an exception scores 0 (compute_score itself scores an exception in its
tolerant test 0). The answer text is evaluated by the released code (`eval`, `parse_expr`):
label only pairs you trust.

`--timeout_shim alarm` makes `timeout_limit` usable as a context manager too (a SIGALRM limit
per step, as docs/math_grading.md describes the released grader's sympy steps); the default, `verl`, keeps verl 0.9.1's semantics, where the context-manager use
in `symbolic_equal` fails and that step never accepts (see results.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from released_reference import SHIMS, load_prime_math  # noqa: E402


def _worker(conn, verl_wheel: str, shim: str) -> None:
  """Grades (response, ground truth) pairs received on `conn` until it receives None."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top

  prime_math = load_prime_math(verl_wheel, shim)
  conn.send("ready")
  while (item := conn.recv()) is not None:
    response, ground_truth = item
    try:
      # The released code prints on some failures; keep the labeller's output readable.
      with contextlib.redirect_stdout(io.StringIO()):
        correct, _, extracted = prime_math.compute_score(response, ground_truth)
      conn.send((1.0 if correct else 0.0, extracted, None))
    except Exception as e:  # pylint: disable=broad-except
      conn.send((0.0, None, f"{type(e).__name__}: {e}"))


class ReferenceGrader:
  """One grading process; restarted after an item overruns the time limit or kills it."""

  def __init__(self, verl_wheel: str, shim: str, time_limit: float):
    self.verl_wheel, self.shim, self.time_limit = verl_wheel, shim, time_limit
    self.proc = None
    self._start()

  def _start(self) -> None:
    # fork: the worker needs no pickling and starts in milliseconds.
    ctx = mp.get_context("fork")
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(child, self.verl_wheel, self.shim), daemon=True)
    self.proc.start()
    if not self.conn.poll(120) or self.conn.recv() != "ready":
      raise RuntimeError("the reference grader did not start")

  def _restart(self) -> None:
    self.proc.kill()
    self.proc.join()
    self._start()

  def grade(self, response: str, ground_truth: str) -> tuple[float, str | None, str | None]:
    """(label, extracted answer, failure or None)."""
    self.conn.send((response, ground_truth))
    try:
      if self.conn.poll(self.time_limit):
        return self.conn.recv()
      failure = f"timeout after {self.time_limit} s"
    except EOFError:
      failure = f"worker died (exit code {self.proc.exitcode})"
    self._restart()
    return 0.0, None, failure

  def close(self) -> None:
    self.conn.send(None)
    self.proc.join(5)
    if self.proc.is_alive():
      self.proc.kill()


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--verl_wheel", required=True, help="verl wheel or its unpacked directory")
  parser.add_argument("--inputs", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--time_limit", type=float, default=30.0, help="seconds per item")
  parser.add_argument("--timeout_shim", choices=SHIMS, default="verl")
  parser.add_argument("--key", default="released", help="the label's key in the output rows")
  args = parser.parse_args()
  with open(args.inputs, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  grader = ReferenceGrader(args.verl_wheel, args.timeout_shim, args.time_limit)
  start, failures = time.perf_counter(), 0
  try:
    for row in rows:
      label, extracted, failure = grader.grade(row["response"], row["ground_truth"])
      if args.key in row:  # a label written by hand (the corpus): kept for comparison
        row[f"{args.key}_before"] = row[args.key]
      row[args.key] = label
      row[f"{args.key}_extracted"] = extracted
      if failure is not None:
        failures += 1
        row[f"{args.key}_failure"] = failure
  finally:
    grader.close()
  with open(args.out, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  accepted = sum(r[args.key] for r in rows)
  print(
      f"{len(rows)} rows labelled in {time.perf_counter() - start:.1f} s: "
      f"{accepted:.0f} accepted, {failures} timeouts/failures -> {args.out}"
  )


if __name__ == "__main__":
  main()
