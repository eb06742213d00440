"""Worker processes that score items in parallel under per-item time limits.

Each worker (a fresh interpreter: the trainer may hold threads and accelerators, so no fork)
scores one item at a time. An item that overruns its limit is interrupted by an alarm in the
worker (unless its ability times itself); a worker that still has not answered `hard_grace_s`
later is killed and replaced. The limit counts from when the worker starts on the item, which it
reports: a fresh worker's start-up (an interpreter, its imports, the scorer's module: seconds,
a minute and more on a loaded machine) is not the item's time. A worker that has not started on
its item within `start_timeout_s` is killed and replaced like a hung one. A worker is also
replaced after `max_items_per_worker` items (sympy caches grow) or when it dies. No item outcome
ever raises in the caller: timeouts, scorer exceptions and worker deaths score 0 and are reported
in the outcome's status.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from prime_jax.verifiers import cgroups
from prime_jax.verifiers.registry import ItemResult

ITEM_STATUSES = ("ok", "timeout", "error", "worker_died")
_STARTED = "started"  # a worker's note that it has the item and starts its clock


class _ItemTimeout(BaseException):
  """Raised by the worker's alarm; a BaseException so scorers' `except Exception` miss it."""


def _on_alarm(signum, frame):
  raise _ItemTimeout()


@dataclass(frozen=True)
class ItemOutcome:
  """What happened to one item. score is 0.0 unless status == 'ok'."""

  status: str
  score: float = 0.0
  counters: dict[str, int] = field(default_factory=dict)
  message: str = ""
  seconds: float = 0.0


def _score_one(score_fn, response, ground_truth, timeout_s, self_timed) -> tuple:
  start = time.monotonic()
  if not self_timed:
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
  try:
    result = score_fn(response, ground_truth, timeout_s)
    if not isinstance(result, ItemResult):
      result = ItemResult(float(result))
    if not 0.0 <= result.score <= 1.0:
      raise ValueError(f"score {result.score} is outside [0, 1]")
    return "ok", result.score, dict(result.counters), "", time.monotonic() - start
  except _ItemTimeout:
    return "timeout", 0.0, {}, f"over {timeout_s:g} s", time.monotonic() - start
  except Exception as exc:
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
    return "error", 0.0, {}, message, time.monotonic() - start
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_main(conn, address_space_bytes: int | None) -> None:
  """Worker loop: receive (score_fn, response, ground_truth, timeout_s, self_timed), reply."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
  signal.signal(signal.SIGALRM, _on_alarm)
  if address_space_bytes:
    resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))
  while True:
    try:
      task = conn.recv()
    except (EOFError, OSError):
      return
    if task is None:
      return
    conn.send(_STARTED)  # the task is unpickled (the scorer's module imported): the clock runs
    try:
      reply = _score_one(*task)
    except _ItemTimeout:  # the alarm fired just after the scorer returned
      reply = ("timeout", 0.0, {}, "alarm after completion", 0.0)
    conn.send(reply)


_BOOTSTRAP = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from prime_jax.verifiers.pool import _worker_entry; _worker_entry()"
)


def _worker_entry() -> None:
  """Entry point of a worker process: argv = [-c, sys.path json, socket fd, RLIMIT_AS]."""
  conn = Connection(int(sys.argv[2]))
  _worker_main(conn, int(sys.argv[3]) or None)


class _Worker:
  """One worker process, started with a plain exec (not multiprocessing's spawn, which would
  re-import the caller's __main__ module, e.g. a whole trainer, in every worker)."""

  def __init__(self, address_space_bytes: int | None):
    ours, theirs = socket.socketpair()
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    self.process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _BOOTSTRAP,
            json.dumps(paths),
            str(theirs.fileno()),
            str(address_space_bytes or 0),
        ],
        pass_fds=(theirs.fileno(),),
        close_fds=True,
    )
    theirs.close()
    self.conn = Connection(ours.detach())
    self.sentinel = os.pidfd_open(self.process.pid)  # readable once the process exits
    self.items_done = 0
    self.index = None  # item being scored, when it started, when the worker will be killed
    self.started = self.deadline = None
    self.running = False  # whether the worker reported it started on the item

  def kill(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()
    self.conn.close()
    os.close(self.sentinel)

  def stop(self) -> None:
    try:
      self.conn.send(None)
      self.process.wait(timeout=5.0)
    except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
      pass
    self.kill()


class WorkerPool:
  """A set of grading worker processes, reused across batches.

  num_workers: parallel workers (default: CPU count). max_items_per_worker: recycle period.
  hard_grace_s: how long past its time limit a worker may stay silent before it is killed.
  start_timeout_s: how long a worker may take to start on an item (start-up included).
  address_space_bytes: RLIMIT_AS of each worker (bounds sympy blow-ups; None for no limit).
  """

  def __init__(
      self,
      num_workers: int | None = None,
      *,
      max_items_per_worker: int = 1000,
      hard_grace_s: float = 2.0,
      start_timeout_s: float = 300.0,
      address_space_bytes: int | None = 8 << 30,
  ):
    self.num_workers = num_workers or os.cpu_count() or 1
    if (
        self.num_workers < 1
        or max_items_per_worker < 1
        or hard_grace_s <= 0
        or start_timeout_s <= 0
    ):
      raise ValueError(
          "num_workers and max_items_per_worker must be >= 1, hard_grace_s and start_timeout_s > 0"
      )
    self.max_items_per_worker = max_items_per_worker
    self.hard_grace_s = hard_grace_s
    self.start_timeout_s = start_timeout_s
    self.address_space_bytes = address_space_bytes
    self._workers: list[_Worker] = []
    self._lock = threading.Lock()  # one batch at a time; callers may share a pool
    self.restarts = 0  # workers replaced after a hang or death (lifetime total)

  def _spawn(self) -> _Worker:
    return _Worker(self.address_space_bytes)

  def _replace(self, worker: _Worker, *, killed: bool) -> None:
    worker.kill()
    if killed:
      self.restarts += 1
      cgroups.sweep_stale()  # sandbox cgroups the dead worker could not clean up
    self._workers[self._workers.index(worker)] = self._spawn()

  def map(
      self,
      score_fn,
      responses,
      ground_truths,
      timeout_s: float,
      self_timed: bool,
      recycle: bool = True,
  ) -> list[ItemOutcome]:
    """Score items in parallel; outcome i belongs to (responses[i], ground_truths[i]).
    `recycle=False` (a stateless scorer) keeps workers past `max_items_per_worker`."""
    with self._lock:
      return self._map(score_fn, responses, ground_truths, timeout_s, self_timed, recycle)

  def _map(self, score_fn, responses, ground_truths, timeout_s, self_timed, recycle):
    n = len(responses)
    while len(self._workers) < min(self.num_workers, max(n, 1)):
      self._workers.append(self._spawn())
    outcomes: list[ItemOutcome | None] = [None] * n
    pending = deque(range(n))
    busy: dict = {}
    try:
      while pending or busy:
        for worker in self._workers:
          if worker.index is None and pending:
            i = pending.popleft()
            worker.index, worker.running = i, False
            worker.started = time.monotonic()
            worker.deadline = worker.started + self.start_timeout_s
            try:
              worker.conn.send((score_fn, responses[i], ground_truths[i], timeout_s, self_timed))
            except (BrokenPipeError, OSError):
              pass  # noticed as a death below
            busy[worker.conn] = worker
        if not busy:
          continue
        next_deadline = min(w.deadline for w in busy.values())
        ready = wait(
            list(busy) + [w.sentinel for w in busy.values()],
            timeout=max(0.0, next_deadline - time.monotonic()),
        )
        for worker in list(busy.values()):
          i = worker.index
          if worker.conn in ready or worker.conn.poll():
            try:
              reply = worker.conn.recv()
            except (EOFError, OSError):
              outcomes[i] = ItemOutcome(
                  "worker_died", message="worker exited", seconds=time.monotonic() - worker.started
              )
              self._finish(worker, busy, killed=True)
              continue
            if reply == _STARTED:
              worker.running = True
              worker.started = time.monotonic()
              worker.deadline = worker.started + timeout_s + self.hard_grace_s
              continue
            status, score, counters, message, seconds = reply
            outcomes[i] = ItemOutcome(status, score, counters, message, seconds)
            worker.items_done += 1
            self._finish(
                worker,
                busy,
                killed=False,
                recycle=recycle and worker.items_done >= self.max_items_per_worker,
            )
          elif worker.sentinel in ready:
            code = worker.process.poll()
            outcomes[i] = ItemOutcome(
                "worker_died",
                message=f"worker exited with code {code}",
                seconds=time.monotonic() - worker.started,
            )
            self._finish(worker, busy, killed=True)
          elif time.monotonic() >= worker.deadline:
            message = (
                f"worker hung past {timeout_s:g} s + {self.hard_grace_s:g} s grace; killed"
                if worker.running
                else f"worker did not start on the item within {self.start_timeout_s:g} s; killed"
            )
            outcomes[i] = ItemOutcome(
                "timeout", message=message, seconds=time.monotonic() - worker.started
            )
            self._finish(worker, busy, killed=True)
    except BaseException:  # e.g. KeyboardInterrupt: leave no half-used workers behind
      for worker in self._workers:
        worker.kill()
      self._workers = []
      raise
    return outcomes

  def _finish(self, worker: _Worker, busy: dict, *, killed: bool, recycle: bool = False) -> None:
    del busy[worker.conn]
    worker.index = worker.deadline = None
    if killed:
      self._replace(worker, killed=True)
    elif recycle:
      worker.stop()
      self._workers[self._workers.index(worker)] = self._spawn()

  def close(self) -> None:
    """Stop all workers (a later `map` starts fresh ones)."""
    with self._lock:
      for worker in self._workers:
        worker.stop()
      self._workers = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
