"""The terminal of a run: library INFO lines off unless --verbosity is given, warnings and errors
kept (absl's handler, as `python -m prime_jax.train` sets it up)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import logging as std_logging
from absl import app, logging
from prime_jax import console

def main(_):
  console.quiet_library_logs()
  std_logging.getLogger("orbax").info("LIBRARY_INFO")
  logging.info("ABSL_INFO")
  std_logging.getLogger("orbax").warning("LIBRARY_WARNING")
  logging.error("ABSL_ERROR")
  console.say("SAID_LINE")

app.run(main)
"""


def run_script(*args):
  out = subprocess.run(
      [sys.executable, "-c", SCRIPT, *args],
      cwd=REPO,
      env={**os.environ, "PYTHONPATH": REPO},
      capture_output=True,
      text=True,
      timeout=120,
      check=True,
  )
  return out.stdout + out.stderr


def test_info_lines_are_off_by_default_and_warnings_errors_and_said_lines_stay():
  out = run_script()
  assert "LIBRARY_INFO" not in out and "ABSL_INFO" not in out, out
  for kept in ("LIBRARY_WARNING", "ABSL_ERROR", "SAID_LINE"):
    assert kept in out, out


def test_verbosity_on_the_command_line_brings_the_info_lines_back():
  out = run_script("--verbosity=0")
  for kept in ("LIBRARY_INFO", "ABSL_INFO", "LIBRARY_WARNING", "ABSL_ERROR", "SAID_LINE"):
    assert kept in out, out
