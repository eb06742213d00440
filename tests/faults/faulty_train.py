"""The trainer's command line with one fault injected from inside: the fault suite's subprocesses.

    PRIME_JAX_FAULT='{"kill_before_save": 2}' python tests/faults/faulty_train.py --config=... ...

The fault (a JSON object in $PRIME_JAX_FAULT; none: the plain trainer) is one of
  kill_before_save: N    SIGKILL between step N's metrics write and its save (the save of step
                         N - 1 committed first, so the state on disk is exactly known);
  kill_in_commit: N      SIGKILL inside the asynchronous save of step N: its files are written,
                         the commit (orbax's rename of the temporary directory) is not done;
  file_size_limit: [N, BYTES]
                         from step N's save on, no file may grow past BYTES (RLIMIT_FSIZE, with
                         SIGXFSZ ignored): writes fail with EFBIG as they would on a full disk.
                         Step N's save is waited for, so its error comes from that save, before
                         the trainer writes anything else (metrics, events) under the limit.
"""

import json
import os
import resource
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orbax.checkpoint._src.path import atomicity  # noqa: E402

from prime_jax import checkpointing  # noqa: E402

FAULT_ENV = "PRIME_JAX_FAULT"


def _kill_self() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def _around_save(step: int, before, after=lambda checkpointer: None) -> None:
  """Runs `before(checkpointer)` when the trainer is about to save `step`, `after` once the
  save has been started."""
  real = checkpointing.Checkpointer.save

  def save(self, at, *args, **kwargs):
    if at != step:
      return real(self, at, *args, **kwargs)
    before(self)
    real(self, at, *args, **kwargs)
    after(self)

  checkpointing.Checkpointer.save = save


def _kill_in_commit(step: int) -> None:
  real = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self):
    if self.get_final().name == str(step):  # the step's directory, not one of its items
      _kill_self()
    return await real(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize


def _limit_file_size(limit: int) -> None:
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def install(fault: dict) -> None:
  if "kill_before_save" in fault:

    def kill(checkpointer):
      checkpointer.wait()  # the previous save committed: the state on disk is known
      _kill_self()

    _around_save(fault["kill_before_save"], kill)
  if "kill_in_commit" in fault:
    _kill_in_commit(fault["kill_in_commit"])
  if "file_size_limit" in fault:
    step, limit = fault["file_size_limit"]

    def limit_files(checkpointer):
      checkpointer.wait()  # only this save and later writes meet the limit
      _limit_file_size(limit)

    _around_save(step, limit_files, after=lambda checkpointer: checkpointer.wait())


if __name__ == "__main__":
  install(json.loads(os.environ.get(FAULT_ENV) or "{}"))
  runpy.run_module("prime_jax.train", run_name="__main__", alter_sys=True)
