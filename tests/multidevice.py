"""Runs a snippet in a fresh interpreter with N simulated CPU devices (the count is fixed at start)."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_devices(code: str, n: int = 8, timeout: int = 600) -> str:
  """Executes `code` with XLA_FLAGS forcing n host devices; returns stdout, raises on failure."""
  env = dict(
      os.environ,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
  )
  proc = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(code)],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc.stdout
