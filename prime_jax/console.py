"""What a run shows in the terminal: progress bars with ETA, one line per event, warnings and
errors, and no library INFO flood (orbax logs ~40 INFO lines per checkpoint) unless asked.

Only process 0 of a multi-process run draws bars and prints lines (the others log warnings).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import jax
from absl import flags, logging
from tqdm import tqdm


def quiet_library_logs() -> None:
  """Shows warnings and errors only, unless --verbosity was given on the command line (then
  absl's level as given: `--verbosity=0` shows every INFO line, ours and the libraries')."""
  if not _verbosity_given():
    logging.set_verbosity(logging.WARNING)


def stop(line: str) -> NoReturn:
  """Ends the process with exit status 1 and `line` as the last line of its output.

  A run that stops on a known fault (a failed save, damaged data) may leave library threads
  behind, e.g. orbax's writes of the failed save, whose tracebacks and "never retrieved" /
  "never awaited" warnings print as the interpreter exits and would bury the reason. Unless
  --verbosity was given, standard error is closed to them first and the line written last.
  """
  if _verbosity_given():
    sys.exit(line)
  sys.stdout.flush()
  sys.stderr.flush()
  reason = os.dup(2)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  os.write(reason, (line + "\n").encode())
  sys.exit(1)


def _verbosity_given() -> bool:
  return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present


def progress(total: int, desc: str, initial: int = 0) -> tqdm:
  """A progress bar with rate and ETA, drawn by process 0 only."""
  return tqdm(
      total=total,
      initial=initial,
      desc=desc,
      dynamic_ncols=True,
      disable=jax.process_index() != 0,
  )


def say(line: str) -> None:
  """One line on the terminal (above any progress bar), from process 0 only; also logged."""
  logging.info(line)
  if jax.process_index() == 0:
    tqdm.write(line)
