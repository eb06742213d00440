"""Score functions of the grader fault cases; module-level so that grading workers import them."""

import os
import signal
import time


def quick(response: str, ground_truth: str, timeout_s: float) -> float:
  return float(response == ground_truth)


def stuck(response: str, ground_truth: str, timeout_s: float) -> float:
  """'sleep': sleeps past any limit (the worker's alarm interrupts it); 'hang': blocks the alarm
  and sleeps (only killing the worker ends it); 'pid:PATH': writes the worker's pid to PATH and
  sleeps; anything else: scored as an exact match."""
  if response == "sleep":
    time.sleep(60)
  elif response == "hang":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
  elif response.startswith("pid:"):
    with open(response[4:] + ".tmp", "w") as f:
      f.write(str(os.getpid()))
    os.replace(response[4:] + ".tmp", response[4:])
    time.sleep(60)
  return float(response == ground_truth)
