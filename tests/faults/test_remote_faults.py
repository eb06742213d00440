"""A remote workdir (the in-memory fake GCS of tests/fake_gcs.py) that fails: a transient error
on a write or a read is retried with backoff and the run's files end up as if nothing happened;
a persistent one stops with one line naming the object; an error that is not transient (no
permission) is not retried. Backoff delays are scaled down here (1 s -> 0.05 s)."""

import re
import time

import pytest

from fake_gcs import gcs  # noqa: F401 (fixture)
from fault_tools import FlakyGCS, HttpError
from prime_jax import io_errors, paths
from prime_jax.metrics_log import MetricsLog, read_metrics

WORKDIR = "gs://bucket/run"


@pytest.fixture
def flaky(gcs, monkeypatch):
  monkeypatch.setattr(io_errors, "FIRST_DELAY_S", 0.05)
  return FlakyGCS(monkeypatch)


@pytest.fixture
def log(flaky):
  """A remote metrics log holding steps 0 and 1."""
  log = MetricsLog(WORKDIR, tensorboard=False)
  log.write(0, {"loss": 1.0})
  log.write(1, {"loss": 0.5})
  return log


def steps():
  return [row["step"] for row in read_metrics(WORKDIR)]


def test_transient_write_errors_are_retried_with_backoff(log, flaky, figures):
  flaky.fail("metrics.jsonl", "wb", ConnectionError("connection reset by peer"), times=2)
  flaky.fail("metrics.jsonl", "wb", HttpError(503, "Service Unavailable"))
  start = time.perf_counter()
  log.write(2, {"loss": 0.25})
  seconds = time.perf_counter() - start
  assert steps() == [0, 1, 2]
  assert seconds >= 0.05 + 0.1 + 0.2
  figures(
      fault="remote workdir: a metrics write fails 3 times (connection reset, HTTP 503)",
      outcome="retried after 1, 2, 4 s (scaled here to 0.05, 0.1, 0.2 s); the row is written "
      "once",
      recover_s=seconds,
      lost="nothing",
  )


def test_transient_read_errors_are_retried_with_backoff(log, flaky, figures):
  flaky.fail("metrics.jsonl", "rb", TimeoutError("read timed out"), times=2)
  start = time.perf_counter()
  log.truncate_after(0)  # a resume reads the file back
  seconds = time.perf_counter() - start
  assert steps() == [0]
  figures(
      fault="remote workdir: reading metrics.jsonl back on resume times out twice",
      outcome="retried after 1 and 2 s (scaled); the resume goes on",
      recover_s=seconds,
      lost="nothing",
  )


def test_a_write_whose_reply_was_lost_is_not_appended_twice(log, flaky):
  flaky.fail("metrics.jsonl", "wb", ConnectionError("reply lost"), after=True)
  log.write(2, {"loss": 0.25})
  assert steps() == [0, 1, 2]


def test_a_persistent_error_stops_in_one_line_and_keeps_the_file(log, flaky, figures):
  flaky.fail("metrics.jsonl", "wb", HttpError(503, "Service Unavailable"), times=99)
  start = time.perf_counter()
  with pytest.raises(io_errors.RemoteIOError) as e:
    log.write(2, {"loss": 0.25})
  seconds = time.perf_counter() - start
  assert re.fullmatch(
      rf"appending step 2 to {WORKDIR}/metrics.jsonl failed 5 times over [\d.]+ s with transient "
      r"errors; last: HttpError: Service Unavailable",
      str(e.value),
  ), str(e.value)
  assert flaky.opens["metrics.jsonl", "wb"] == 2 + io_errors.ATTEMPTS
  flaky.rules.clear()
  assert steps() == [0, 1]  # what was written is still there
  figures(
      fault="remote workdir: storage keeps answering HTTP 503",
      outcome="5 tries over 1+2+4+8 s (scaled here), then the run stops with one line naming "
      "the object and the last error; the file keeps its rows",
      recover_s=seconds,
      lost="nothing written; the run waits for the user (rerunning resumes)",
  )


def test_an_error_that_is_not_transient_is_not_retried(log, flaky):
  flaky.fail("metrics.jsonl", "wb", PermissionError("403 Forbidden"), times=99)
  with pytest.raises(PermissionError, match="403"):
    log.write(2, {"loss": 0.25})
  assert flaky.opens["metrics.jsonl", "wb"] == 2 + 1


def test_copies_up_are_retried_file_by_file(flaky, tmp_path):
  for name in ("a.bin", "b.bin", "done.json"):
    (tmp_path / name).write_text(name)
  flaky.fail("b.bin", "wb", ConnectionError("reset"), times=2)
  paths.copy_tree(tmp_path, f"{WORKDIR}/up", last=("done.json",))
  for name in ("a.bin", "b.bin", "done.json"):
    assert paths.epath.Path(f"{WORKDIR}/up/{name}").read_text() == name


def test_moving_aside_on_gcs_keeps_every_object(flaky):
  """GCS has no rename: moving a damaged directory aside copies its objects, then removes the
  originals; nothing is lost on the way."""
  for name in ("a", "sub/b"):
    paths.epath.Path(f"{WORKDIR}/checkpoints/3/{name}").parent.mkdir(parents=True, exist_ok=True)
    paths.epath.Path(f"{WORKDIR}/checkpoints/3/{name}").write_text(name)
  moved = paths.move_aside(f"{WORKDIR}/checkpoints/3", "corrupt-3")
  assert re.fullmatch(rf"{WORKDIR}/checkpoints/corrupt-3-\d{{8}}T\d{{6}}Z", str(moved)), moved
  assert not paths.epath.Path(f"{WORKDIR}/checkpoints/3").exists()
  assert (moved / "a").read_text() == "a" and (moved / "sub" / "b").read_text() == "sub/b"
