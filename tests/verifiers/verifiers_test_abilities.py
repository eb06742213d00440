"""Score functions used by the verifier tests; module-level so grading workers can import them."""

import os
import signal
import time

from prime_jax.verifiers.registry import ItemResult


def exact_match(response: str, ground_truth: str, timeout_s: float) -> float:
  return float(response.strip() == ground_truth.strip())


def sleepy(response: str, ground_truth: str, timeout_s: float) -> float:
  """Sleeps `response` seconds (interruptible by the worker's alarm), then scores 1."""
  time.sleep(float(response))
  return 1.0


def uninterruptible_hang(response: str, ground_truth: str, timeout_s: float) -> float:
  """Blocks the worker's alarm and sleeps: only killing the worker ends it."""
  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
  time.sleep(60)
  return 1.0


def crash_worker(response: str, ground_truth: str, timeout_s: float) -> float:
  """Kills its own worker process for response 'crash'; otherwise scores 1."""
  if response == "crash":
    os._exit(3)
  return 1.0


def raises(response: str, ground_truth: str, timeout_s: float) -> float:
  raise RuntimeError(f"scorer bug on {response!r}")


def out_of_range(response: str, ground_truth: str, timeout_s: float) -> float:
  return 2.0


def with_counters(response: str, ground_truth: str, timeout_s: float) -> ItemResult:
  return ItemResult(0.5, {"seen": 1, "long": int(len(response) > 3)})


def worker_pid(response: str, ground_truth: str, timeout_s: float) -> ItemResult:
  return ItemResult(1.0, {f"pid_{os.getpid()}": 1})
