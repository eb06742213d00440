"""The command line of `python -m prime_jax.train`: its flags, a mistyped config override reported
in one line naming it, and the faults that need the user (a full disk, bad data, a damaged
checkpoint) reported in one line instead of a traceback (which stays in the log at INFO).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from prime_jax import console, distributed, model_files
from prime_jax.checkpointing import (
    CheckpointMismatchError,
    CheckpointSaveError,
    NoIntactCheckpointError,
)
from prime_jax.data import DataError
from prime_jax.metrics_log import MetricsFileError

# Faults that stop a run with one line naming the problem (the traceback is logged at INFO, shown
# with --verbosity=0). What was written stays; rerunning resumes from the last intact checkpoint.
_ONE_LINE_STOPS = (
    CheckpointMismatchError,
    CheckpointSaveError,
    NoIntactCheckpointError,
    model_files.DamagedModelError,
    DataError,
    MetricsFileError,
    FloatingPointError,
    OSError,  # a full disk, a file that cannot be read, storage that kept failing
)


@contextlib.contextmanager
def _unknown_override_exits(argv: list[str]):
  """Reports an override of a config field that does not exist (`--config.rl.bta=0.1`) in one
  line naming it, like any bad flag, instead of ml_collections' AttributeError traceback (raised
  where the config file is parsed: when the flag is defined with a default, or later)."""
  try:
    yield
  except (AttributeError, KeyError) as e:
    cause = e.args[0] if e.args else e
    detail = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
    name = detail.splitlines()[0].strip("'\"")
    culprits = [
        a.split("=")[0]
        for a in argv[1:]
        if a.startswith("--config.") and name in a.split("=")[0].split(".")[1:]
    ]
    if not culprits:
      raise  # not an override's fault (e.g. a bug in the config file): keep the traceback
    sys.exit(
        f"FATAL Flags parsing error: {' '.join(culprits)}: no such config field "
        f"{name!r}. " + " ".join(detail.splitlines()[1:])
    )


def _parse_flags(argv: list[str]) -> list[str]:
  with _unknown_override_exits(argv):
    return app.parse_flags_with_usage(argv)


def _main(argv, train: Callable[..., dict]):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.quiet_library_logs()
  try:
    distributed.initialize(
        flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    train(flags.FLAGS.config, flags.FLAGS.workdir)
  except _ONE_LINE_STOPS as e:
    logging.info("the run stopped", exc_info=True)
    console.stop(f"prime_jax.train: {type(e).__name__}: {e}")


def run(train: Callable[..., dict], default_config: str) -> None:
  """Defines the trainer's flags and runs `train(config, workdir)` under absl. Flags are defined
  here, when the command runs, not at import, so library users and tests can import the trainer."""
  with _unknown_override_exits(sys.argv):
    config_flags.DEFINE_config_file(
        "config",
        default_config,
        "Experiment config file (get_config()[:ARG]); overrides as "
        "--config.rl.beta=0.05. Default: the embedded arithmetic PRIME run.",
    )
  flags.DEFINE_string(
      "workdir",
      "workdir/arithmetic_prime",
      "Run directory: checkpoints, metrics, exports. Reused = resumed. With "
      "several processes, one directory all of them see. Local or "
      "gs://BUCKET/PATH (needs gcsfs).",
  )
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "Multi-process runs: host:port of process "
      "0's coordinator, the same on every process (jax.distributed.initialize)."
      " Not needed on Cloud TPU VMs, SLURM or Open MPI (auto-detected).",
  )
  flags.DEFINE_integer(
      "num_processes",
      None,
      "Multi-process runs: how many processes take " "part. 1 forces a single-process run.",
  )
  flags.DEFINE_integer(
      "process_id",
      None,
      "Multi-process runs: this process's index, 0 .. "
      "num_processes - 1; process 0 writes metrics, summaries and exports.",
  )
  app.run(functools.partial(_main, train=train), flags_parser=_parse_flags)
