"""The band script's per-seed readings of an SFT loss curve (experiments/benchmarks/sft_band.py).

The script defines absl flags at import, so it runs in a child process."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CODE = """
import json, sys
from experiments.benchmarks import sft_band as b
out = []
for losses, escape_loss, tolerance in json.loads(sys.argv[1]):
  losses = [tuple(x) for x in losses]
  out.append([b.escape_step(losses, escape_loss), b.settle_step(losses, tolerance)])
print(json.dumps(out))
"""


def test_escape_and_settle_steps_read_the_curve():
  # Plateau, escape (< 0.5) at step 200, settled (within 15 % of the final 0.1) from step 350.
  curve = [2.0, 1.2, 0.7, 0.4, 0.3, 0.2, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
  losses = [[50 * (i + 1), x] for i, x in enumerate(curve)]
  bumped = [list(r) for r in losses]
  bumped[7][1] = 0.2  # a bump at step 400, before the last five: settled moves past it
  cases = [(losses, 0.5, 0.15), (bumped, 0.5, 0.15), (losses, 0.5, 0.05), ([[50, 2.0]], 0.5, 0.15)]
  result = subprocess.run(
      [sys.executable, "-c", _CODE, json.dumps(cases)],
      cwd=ROOT,
      env={**os.environ, "PYTHONPATH": ROOT},
      capture_output=True,
      text=True,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout) == [[200, 350], [200, 450], [200, 400], [None, 50]]
