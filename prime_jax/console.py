"""What a run shows in the terminal: progress bars with ETA, one line per event, warnings and
errors, and no library INFO flood (orbax logs ~40 INFO lines per checkpoint) unless asked.

Only process 0 of a multi-process run draws bars and prints lines (the others log warnings).
"""

from __future__ import annotations

import jax
from absl import flags, logging
from tqdm import tqdm


def quiet_library_logs() -> None:
  """Shows warnings and errors only, unless --verbosity was given on the command line (then
  absl's level as given: `--verbosity=0` shows every INFO line, ours and the libraries')."""
  if not (flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present):
    logging.set_verbosity(logging.WARNING)


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
