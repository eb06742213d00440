"""Batch grading: the public API, the ability registry, worker time limits and crash handling."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import verifiers_test_abilities as abilities

from prime_jax.verifiers import (
    WorkerPool,
    default_pool,
    get_ability,
    grade,
    grade_with_stats,
    register_ability,
    registered_abilities,
    set_default_pool,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", autouse=True)
def test_abilities():
  for name in (
      "exact_match",
      "sleepy",
      "uninterruptible_hang",
      "crash_worker",
      "raises",
      "out_of_range",
      "with_counters",
      "worker_pid",
  ):
    register_ability(f"test_{name}", getattr(abilities, name), timeout_s=5.0, replace=True)


def test_builtin_abilities_are_registered():
  assert {"math", "code"} <= set(registered_abilities())
  assert get_ability("code").self_timed and not get_ability("math").self_timed


def test_grade_returns_float32_scores_in_order():
  scores = grade("math", ["\\boxed{2}", "\\boxed{3}", "\\boxed{\\frac{1}{2}}"], ["2", "2", "0.5"])
  assert scores.dtype == np.float32 and scores.shape == (3,)
  np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0])


def test_grade_with_stats_counts_and_logs(pool):
  scores, stats = grade_with_stats("test_with_counters", ["a", "abcd"], ["", ""], pool=pool)
  np.testing.assert_array_equal(scores, [0.5, 0.5])
  assert stats.counters == {"seen": 2, "long": 1}
  assert stats.statuses == ("ok", "ok") and stats.mean_score == 0.5
  logged = stats.as_dict()
  assert logged["verifier/test_with_counters/ok"] == 2
  assert logged["verifier/test_with_counters/seen"] == 2


def test_empty_batch(pool):
  scores, stats = grade_with_stats("math", [], [], pool=pool)
  assert scores.shape == (0,) and stats.num_items == 0


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("nope", ["a"], ["b"]), KeyError, "unknown ability 'nope'"),
        (("math", ["a", "b"], ["a"]), ValueError, "2 responses but 1 ground truths"),
        (("math", "abc", ["a"]), TypeError, "responses must be a sequence"),
        (("math", ["a", 3], ["a", "b"]), TypeError, "responses\\[1\\] is int"),
    ],
)
def test_bad_arguments_are_named(args, error, message):
  with pytest.raises(error, match=message):
    grade(*args)


def test_registry_rejects_unpicklable_duplicates_and_bad_timeouts():
  with pytest.raises(ValueError, match="picklable"):
    register_ability("test_lambda", lambda r, g, t: 1.0)
  with pytest.raises(ValueError, match="already registered"):
    register_ability("math", abilities.exact_match)
  with pytest.raises(ValueError, match="timeout_s"):
    register_ability("test_bad_timeout", abilities.exact_match, timeout_s=0)


def test_soft_timeout_interrupts_without_killing_the_worker(pool):
  restarts = pool.restarts
  scores, stats = grade_with_stats("test_sleepy", ["30", "0"], ["", ""], timeout_s=0.5, pool=pool)
  np.testing.assert_array_equal(scores, [0.0, 1.0])
  assert stats.statuses == ("timeout", "ok")
  assert pool.restarts == restarts  # interrupted in time, not killed


def test_hung_worker_is_killed_and_replaced(pool):
  start = time.monotonic()
  scores, stats = grade_with_stats(
      "test_uninterruptible_hang", ["x"], [""], timeout_s=0.5, pool=pool
  )
  assert stats.statuses == ("timeout",) and stats.worker_restarts == 1
  assert time.monotonic() - start < 0.5 + pool.hard_grace_s + 2.0
  after = grade("test_exact_match", ["a"] * 4, ["a"] * 4)  # the pool still works
  np.testing.assert_array_equal(after, [1.0] * 4)


def test_crash_and_exception_score_zero_and_grading_continues(pool):
  scores, stats = grade_with_stats(
      "test_crash_worker", ["ok", "crash", "ok", "crash", "ok"], [""] * 5, pool=pool
  )
  np.testing.assert_array_equal(scores, [1, 0, 1, 0, 1])
  assert stats.statuses == ("ok", "worker_died", "ok", "worker_died", "ok")
  assert stats.worker_restarts == 2
  scores, stats = grade_with_stats("test_raises", ["a"], [""], pool=pool)
  assert stats.statuses == ("error",) and "scorer bug on 'a'" in stats.errors[0]
  scores, stats = grade_with_stats("test_out_of_range", ["a"], [""], pool=pool)
  assert stats.statuses == ("error",) and "outside [0, 1]" in stats.errors[0]


def test_grade_uses_the_configured_default_pool(pool):
  set_default_pool(pool)
  assert default_pool() is pool
  restarts = pool.restarts
  np.testing.assert_array_equal(grade("test_crash_worker", ["crash"], [""]), [0.0])
  assert pool.restarts == restarts + 1  # the crash happened in this pool's worker


def test_workers_are_recycled_after_max_items():
  with WorkerPool(1, max_items_per_worker=2) as small:
    _, stats = grade_with_stats("test_worker_pid", ["a"] * 5, [""] * 5, pool=small)
  assert len(stats.counters) == 3  # items 1-2, 3-4 and 5 each saw a fresh worker process
  assert small.restarts == 0  # recycling is not a failure


def test_stateless_abilities_keep_their_workers():
  register_ability(
      "test_stateless_pid", abilities.worker_pid, timeout_s=5.0, stateless=True, replace=True
  )
  with WorkerPool(1, max_items_per_worker=2) as small:
    _, stats = grade_with_stats("test_stateless_pid", ["a"] * 5, [""] * 5, pool=small)
    _, again = grade_with_stats("test_worker_pid", ["a"] * 3, [""] * 3, pool=small)
  assert len(stats.counters) == 1  # one worker process scored all five items
  # The same pool still recycles for an ability that keeps state: 5 + 1 items on the first
  # worker (past the limit, so it goes after its next item), then a fresh one for items 2-3.
  assert len(again.counters) == 2 and set(again.counters) & set(stats.counters)
  import prime_jax.tasks  # noqa: F401 (registers "arithmetic")

  assert get_ability("arithmetic").stateless and not get_ability("math").stateless


def test_cli_prints_scores_and_summary(tmp_path):
  rows = [
      {"response": "\\boxed{4}", "ground_truth": "4"},
      {"response": "\\boxed{5}", "ground_truth": "4"},
  ]
  path = tmp_path / "in.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "prime_jax.verifiers",
          "--ability",
          "math",
          "--inputs",
          str(path),
          "--workers",
          "1",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr
  lines = [json.loads(line) for line in out.stdout.splitlines()]
  assert [line["score"] for line in lines[:2]] == [1.0, 0.0]
  assert lines[2]["summary"]["items"] == 2 and lines[2]["summary"]["mean_score"] == 0.5


def test_cli_names_a_bad_input_line(tmp_path):
  path = tmp_path / "in.jsonl"
  path.write_text('{"response": "x", "ground_truth": "1"}\n{"response": 1}\n')
  out = subprocess.run(
      [sys.executable, "-m", "prime_jax.verifiers", "--ability", "math", "--inputs", str(path)],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 2 and "in.jsonl:2" in out.stderr


def test_cli_grades_in_the_mode_it_is_given(tmp_path):
  # `released` keeps what follows the last `=` in the box (docs/math_grading.md), so an equation
  # is graded by its right-hand side: `x^2+y^2=25` against itself is wrong there, right in strict.
  path = tmp_path / "in.jsonl"
  path.write_text('{"response": "\\\\boxed{x^2+y^2=25}", "ground_truth": "x^2+y^2=25"}\n')

  def run(*mode):
    return subprocess.run(
        [sys.executable, "-m", "prime_jax.verifiers", "--ability", "math", "--inputs", str(path)]
        + list(mode),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

  scores = {}
  for mode in ("strict", "released"):
    out = run("--mode", mode)
    assert out.returncode == 0, out.stderr
    scores[mode] = json.loads(out.stdout.splitlines()[0])["score"]
  assert scores == {"strict": 1.0, "released": 0.0}
  out = run("--mode", "lenient")
  assert out.returncode == 2 and "no mode 'lenient'" in out.stderr
