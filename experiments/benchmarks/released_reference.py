"""Loads PRIME's released math grader (`prime_math` in the user's verl wheel) for labelling.

Only `verl/utils/reward_score/prime_math` is loaded: importing `verl` itself would pull torch,
ray and the rest. Its one verl dependency, `verl.utils.py_functional.timeout_limit`, is replaced
by `timeout_limit` below. Nothing here is used by prime_jax or its tests: the reference is read
from the user's own copy of verl when a benchmark script runs, never vendored.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
import types
import zipfile

PACKAGE = "verl/utils/reward_score/prime_math"
SHIMS = ("verl", "alarm")


def timeout_limit(seconds: float, use_signals: bool = False):
  """verl 0.9.1's `timeout_limit` as its callers see it: a decorator factory.

  verl's default runs the function in a forked process and raises TimeoutError when it
  overruns; a SIGALRM timer gives the same result (value, exception, or TimeoutError) in the
  labelling worker, which grades in its main thread. Like verl's, the returned object is a plain
  function: `with timeout_limit(...)` (prime_math's grader.py does this in `symbolic_equal`)
  raises TypeError, which `symbolic_equal` catches, exactly as in verl.
  """
  del use_signals

  def decorator(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
      def handler(signum, frame):
        raise TimeoutError(f"Function {func.__name__} timed out after {seconds} seconds")

      old = signal.signal(signal.SIGALRM, handler)
      signal.setitimer(signal.ITIMER_REAL, seconds)
      try:
        return func(*args, **kwargs)
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)

    return wrapper

  return decorator


class _AlarmLimit:
  """`timeout_limit` usable both as a decorator factory and as a context manager.

  Used only with `--timeout_shim alarm`, to see which labels depend on the context-manager use
  failing in verl 0.9.1: as a context manager it sets a SIGALRM limit (`seconds=True`, what
  compute_score passes, is 1 s), so `symbolic_equal` runs its parse, simplify and N steps with
  per-step limits, the behaviour docs/math_grading.md describes for the released grader.
  """

  def __init__(self, seconds: float, use_signals: bool = False):
    del use_signals
    self.seconds = float(seconds)
    self._old = None

  def __call__(self, func):
    return timeout_limit(self.seconds)(func)

  def __enter__(self):
    def handler(signum, frame):
      raise TimeoutError(f"timed out after {self.seconds} seconds")

    self._old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, self.seconds)

  def __exit__(self, *exc):
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, self._old)
    return False


def _package_dir(verl_wheel: str) -> str:
  """The directory holding `verl/`: the unpacked wheel, or the wheel's files extracted."""
  if os.path.isdir(verl_wheel):
    root = verl_wheel
  else:
    root = tempfile.mkdtemp(prefix="verl_prime_math_")
    with zipfile.ZipFile(verl_wheel) as wheel:
      for name in wheel.namelist():
        if name.startswith(PACKAGE + "/"):
          wheel.extract(name, root)
  if not os.path.isfile(os.path.join(root, PACKAGE, "__init__.py")):
    raise FileNotFoundError(f"no {PACKAGE}/__init__.py under {verl_wheel}")
  return root


def load_prime_math(verl_wheel: str, shim: str = "verl") -> types.ModuleType:
  """Imports `verl.utils.reward_score.prime_math` from `verl_wheel` with the timeout shim.

  Parent packages are empty stand-ins whose `__path__` points into the wheel, so their own
  `__init__.py` files (which import the rest of verl) never run.
  """
  if shim not in SHIMS:
    raise ValueError(f"shim must be one of {SHIMS}, got {shim!r}")
  root = _package_dir(verl_wheel)
  for name in ("verl", "verl.utils", "verl.utils.reward_score"):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = module
  functional = types.ModuleType("verl.utils.py_functional")
  functional.timeout_limit = timeout_limit if shim == "verl" else _AlarmLimit
  sys.modules["verl.utils.py_functional"] = functional
  import importlib  # pylint: disable=g-import-not-at-top

  return importlib.import_module("verl.utils.reward_score.prime_math")
