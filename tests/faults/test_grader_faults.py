"""The grader pool under faults: a worker killed mid-batch, a storm of timeouts, a worker that
does not start. Each item at fault scores 0 and says why, the others are graded, grading (and so
training) goes on, and the pool serves the next batch with fresh workers."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import fault_scorers
from prime_jax.data.records import Record
from prime_jax.verifiers import WorkerPool, grade_with_stats, grading, register_ability


@pytest.fixture(scope="module", autouse=True)
def abilities():
  register_ability("fault_quick", fault_scorers.quick, replace=True)
  register_ability("fault_stuck", fault_scorers.stuck, timeout_s=0.5, replace=True)


@pytest.fixture(scope="module")
def pool():
  """Two workers for the module (a worker starts in seconds on a loaded machine)."""
  with WorkerPool(2, hard_grace_s=0.5) as p:
    yield p


def alive(pool):
  return [w.process.poll() is None for w in pool._workers]  # pylint: disable=protected-access


def test_a_worker_killed_mid_batch_scores_its_item_0_and_is_replaced(pool, tmp_path, figures):
  pid_file = tmp_path / "pid"
  responses = ["a", f"pid:{pid_file}", "b", "c"]
  out = {}
  batch = threading.Thread(
      target=lambda: out.update(
          zip(
              ("scores", "stats"),
              grade_with_stats(
                  "fault_stuck", responses, ["a", "", "b", "c"], timeout_s=30, pool=pool
              ),
          )
      )
  )
  batch.start()
  deadline = time.monotonic() + 60
  while not pid_file.exists():
    assert time.monotonic() < deadline, "the item never started"
    time.sleep(0.01)
  start = time.perf_counter()
  os.kill(int(pid_file.read_text()), signal.SIGKILL)
  batch.join(timeout=60)
  seconds = time.perf_counter() - start
  np.testing.assert_array_equal(out["scores"], [1, 0, 1, 1])
  assert out["stats"].statuses == ("ok", "worker_died", "ok", "ok")
  assert out["stats"].worker_restarts == 1
  after, stats = grade_with_stats("fault_quick", ["x"] * 4, ["x"] * 4, pool=pool)
  np.testing.assert_array_equal(after, [1] * 4)
  assert stats.statuses == ("ok",) * 4 and all(alive(pool))
  figures(
      fault="a grading worker SIGKILLed mid-batch",
      outcome="its item scores 0 (worker_died), the batch's other items are graded, a fresh "
      "worker takes its place",
      recover_s=seconds,
      lost="that item's score (0, counted in verifier/*/worker_died)",
  )


def test_a_storm_of_timeouts_scores_0_and_the_pool_recovers(pool, figures):
  responses = ["sleep", "hang"] * 2 + ["ok"]
  start = time.perf_counter()
  scores, stats = grade_with_stats("fault_stuck", responses, ["x"] * 4 + ["ok"], pool=pool)
  seconds = time.perf_counter() - start
  np.testing.assert_array_equal(scores, [0] * 4 + [1])
  assert stats.statuses == ("timeout",) * 4 + ("ok",)
  assert stats.worker_restarts == 2  # the hung ones; the sleeping ones were interrupted
  # 4 stuck items on 2 workers: 2 rounds of at most 0.5 s + 0.5 s grace, plus restarts.
  assert seconds < 2 * (0.5 + 0.5) + 30
  after, stats = grade_with_stats("fault_quick", ["y"] * 6, ["y"] * 6, pool=pool)
  np.testing.assert_array_equal(after, [1] * 6)
  assert all(alive(pool))
  figures(
      fault="a storm of timeouts: 4 items over their 0.5 s limit, 2 ignoring the alarm",
      outcome="each scores 0 (timeout); hung workers are killed after the 0.5 s grace and "
      "replaced; the next batch is graded normally",
      recover_s=seconds,
      lost="those items' scores (0, counted in verifier/*/timeout)",
  )


def test_a_fresh_workers_start_up_does_not_count_against_the_item_limit():
  """Start-up (an interpreter and its imports: seconds on a loaded machine) once counted
  against the item's limit, so a quick item could time out in a fresh pool."""
  with WorkerPool(2, hard_grace_s=0.05) as fresh:
    scores, stats = grade_with_stats("fault_quick", ["z"] * 4, ["z"] * 4, timeout_s=0.1, pool=fresh)
  assert stats.statuses == ("ok",) * 4
  np.testing.assert_array_equal(scores, [1] * 4)


def test_a_worker_that_does_not_start_in_time_is_replaced(pool):
  with WorkerPool(1, start_timeout_s=0.01) as slow:
    scores, stats = grade_with_stats("fault_quick", ["z"], ["z"], pool=slow)
    assert stats.statuses == ("timeout",) and scores[0] == 0
    assert "did not start on the item within 0.01 s" in stats.errors[0]
    slow.start_timeout_s = 60.0
    scores, stats = grade_with_stats("fault_quick", ["z"], ["z"], pool=slow)
    assert stats.statuses == ("ok",) and stats.worker_restarts == 0


def test_rollout_grading_goes_on_through_a_storm(pool, monkeypatch):
  """What a training step does with a batch whose grader times out on some responses: the
  scores are 0 where due and the step's grader metrics count the timeouts."""
  monkeypatch.setattr(grading, "_default_pool", pool)
  record = Record.from_chat(
      id="r0",
      data_source="t",
      ability="fault_stuck",
      messages=[{"role": "user", "content": "q"}],
      ground_truth="42",
  )
  scores, metrics = grading.grade_responses([record, record], ["42", "sleep", "hang", "42"], 2)
  np.testing.assert_array_equal(scores, [1, 0, 0, 1])
  assert metrics["verifier/fault_stuck/timeout"] == 2
  assert metrics["verifier/fault_stuck/ok"] == 2
