"""Per-step metrics: `metrics.jsonl` (one JSON object per step) and TensorBoard event files.

Written by process 0 only. On resume, lines after the restored step are dropped so the file holds
exactly one line per completed step, whatever the run went through.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

METRICS_FILE = "metrics.jsonl"


def _plain(value):
    value = float(value) if not isinstance(value, (int, str)) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:
    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter  # writes event files without TensorFlow
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drops the lines of steps > `step` (written before a crash, not checkpointed)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        rows = [row for row in _read_rows(self.path) if row["step"] <= step]
        with open(self.path + ".tmp", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(self.path + ".tmp", self.path)

    def write(self, step: int, metrics: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in sorted(metrics.items())}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _read_rows(path: str) -> list[dict]:
    """The rows of a metrics file. A last line without its newline is a write cut short by a kill
    (that step is re-run on resume) and is left out; any other bad line is an error naming it."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{path}:{number}: not a metrics row (a JSON object with a step)")
            rows.append(row)
    return rows


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `workdir/metrics.jsonl`."""
    return _read_rows(os.path.join(workdir, METRICS_FILE))
