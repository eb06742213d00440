"""The figures each case of the fault suite records for docs/reliability.md."""

import json
import os

import pytest

# A JSON-lines file the cases append their figures to (set by tools that build the table).
FIGURES_ENV = "PRIME_JAX_RELIABILITY_OUT"


@pytest.fixture
def figures(request):
  """`figures(fault=..., outcome=..., recover_s=..., lost=..., details=None)` records this
  case's row of the reliability table (`details`: more figures, for a soak's own table). Cases
  call it last, after their checks: only a case that passed records. The row goes to
  $PRIME_JAX_RELIABILITY_OUT when that is set, else nowhere."""

  def record(*, fault: str, outcome: str, recover_s: float, lost: str, details=None) -> None:
    out = os.environ.get(FIGURES_ENV)
    if not out:
      return
    row = dict(
        case=request.node.nodeid,
        fault=fault,
        outcome=outcome,
        recover_s=round(recover_s, 2),
        lost=lost,
        load_avg_1m=os.getloadavg()[0],
        details=details or {},
    )
    with open(out, "a") as f:
      f.write(json.dumps(row) + "\n")

  return record
