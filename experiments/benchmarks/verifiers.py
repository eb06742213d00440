"""Throughput of the outcome verifiers.

    python experiments/benchmarks/verifiers.py [--workers 2] [--math-items 2000] [--programs 256]

Prints math items/s for a mix of answer forms (right, wrong, missing; integers to matrices) and
code programs/s for short stdin/stdout programs in the strict sandbox, plus a per-program cost
breakdown (sandbox start vs. per-test fork) to show what bounds code throughput.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from prime_jax.verifiers import CodeConfig, WorkerPool, grade_with_stats, register_ability
from prime_jax.verifiers.code_grader import code_ability_kwargs
from prime_jax.verifiers.sandbox import Program, SandboxConfig, check_isolation, run_program

# (model answer, ground truth): right and wrong answers across the forms the grader handles.
MATH_PAIRS = [
    ("42", "42"),
    ("41", "42"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "\\frac34"),
    ("0.3333", "\\frac{1}{3}"),
    ("0.3", "\\frac{1}{3}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("3\\sqrt{2}", "\\sqrt{8}"),
    ("6.2832", "2\\pi"),
    ("(1,2)", "(1, 2)"),
    ("(2,1)", "(1,2)"),
    ("[1,2)", "[1,2)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\{1,2,3\\}", "\\{3,2,1\\}"),
    ("x=3", "3"),
    ("x^2+2x+1", "(x+1)^2"),
    ("x^2+2x", "(x+1)^2"),
    ("50\\%", "0.5"),
    ("30^\\circ", "30"),
    ("5\\text{ cm}", "5"),
    ("1,000", "1000"),
    ("1.5e3", "1500"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\text{Monday}", "\\text{Monday}"),
    ("\\text{(B)}", "\\text{(C)}"),
    ("3+4i", "4i+3"),
]
REASONING = (
    "Let us reason step by step. We expand the expression, collect like terms and "
    "check the boundary cases carefully before simplifying. "
) * 8

SUM_PROBLEM = json.dumps(
    {
        "inputs": [f"{a} {b}\n" for a, b in [(1, 2), (3, 4), (10, -5), (7, 7), (0, 0)]],
        "outputs": [f"{a + b}\n" for a, b in [(1, 2), (3, 4), (10, -5), (7, 7), (0, 0)]],
    }
)
PROGRAMS = [
    "a, b = map(int, input().split())\nprint(a + b)",  # correct
    "import sys\nprint(sum(map(int, sys.stdin.read().split())))",  # correct
    "a, b = map(int, input().split())\nprint(a - b)",  # mostly wrong
    "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)",  # runtime error
]


def math_batch(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
  responses, truths = [], []
  for i in range(n):
    answer, truth = rng.choice(MATH_PAIRS)
    if i % 10 == 9:
      responses.append(REASONING + "I could not finish.")  # no final answer
    else:
      responses.append(f"{REASONING}So the final answer is $\\boxed{{{answer}}}$.")
    truths.append(truth)
  return responses, truths


def bench_math(pool: WorkerPool, n: int) -> None:
  responses, truths = math_batch(n, random.Random(0))
  grade_with_stats("math", responses[:4], truths[:4], pool=pool)  # warm workers (imports)
  start = time.perf_counter()
  scores, stats = grade_with_stats("math", responses, truths, pool=pool)
  wall = time.perf_counter() - start
  print(
      f"math: {n} items in {wall:.2f} s = {n / wall:.1f} items/s "
      f"({pool.num_workers} workers); mean score {scores.mean():.3f}; "
      f"per item median {1e3 * statistics.median(stats.item_seconds):.1f} ms, "
      f"max {1e3 * max(stats.item_seconds):.0f} ms; {stats.counters}"
  )


def bench_sandbox_breakdown(config: SandboxConfig, repeats: int = 20) -> None:
  """Wall time of one program with 1 vs 5 tests: start cost and per-test cost."""

  def timed(n_tests: int) -> float:
    program = Program(PROGRAMS[0], tuple(["1 2\n"] * n_tests))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      run_program(program, config, budget_s=10.0)
      times.append(time.perf_counter() - start)
    return statistics.median(times)

  one, five = timed(1), timed(5)
  per_test = (five - one) / 4
  print(
      f"sandbox (serial, 1 core): {1e3 * one:.0f} ms for a 1-test program, "
      f"{1e3 * five:.0f} ms for 5 tests -> start ~{1e3 * (one - per_test):.0f} ms, "
      f"~{1e3 * per_test:.0f} ms per test"
  )


def bench_code(pool: WorkerPool, n: int, config: CodeConfig) -> None:
  register_ability("code_bench", replace=True, **code_ability_kwargs(config))
  responses = [f"```python\n{PROGRAMS[i % len(PROGRAMS)]}\n```" for i in range(n)]
  truths = [SUM_PROBLEM] * n
  grade_with_stats("code_bench", responses[:2], truths[:2], pool=pool)  # warm
  start = time.perf_counter()
  scores, stats = grade_with_stats("code_bench", responses, truths, pool=pool)
  wall = time.perf_counter() - start
  tests = stats.counters["tests_total"]
  print(
      f"code: {n} programs ({tests} tests) in {wall:.2f} s = {n / wall:.1f} programs/s, "
      f"{tests / wall:.0f} tests/s ({pool.num_workers} workers); mean score "
      f"{scores.mean():.3f}; statuses {set(stats.statuses)}"
  )


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--math-items", type=int, default=2000)
  parser.add_argument("--programs", type=int, default=256)
  args = parser.parse_args()
  config = CodeConfig(max_tests=5)
  check_isolation(config.sandbox)
  start = time.perf_counter()
  with WorkerPool(args.workers) as pool:
    grade_with_stats("math", ["\\boxed{1}"], ["1"], pool=pool)
    print(
        f"pool start ({args.workers} workers, first item): " f"{time.perf_counter() - start:.2f} s"
    )
    bench_math(pool, args.math_items)
    bench_code(pool, args.programs, config)
  bench_sandbox_breakdown(config.sandbox)


if __name__ == "__main__":
  main()
