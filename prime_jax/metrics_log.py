"""Per-step metrics: `metrics.jsonl` (one JSON object per step) and TensorBoard event files.

Written by process 0 only. On resume, lines after the restored step are dropped so the file holds
exactly one line per completed step, whatever the run went through.

The workdir may be local or remote (gs://..., `prime_jax.paths`). Locally, each step appends one
line. A GCS object cannot be appended to, so there each step rewrites the whole file (one atomic
object write); the TensorBoard events are written to a local scratch directory and copied up at
most every `upload_every_s` seconds and on `close()`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

from absl import logging
from etils import epath

from prime_jax import paths

METRICS_FILE = "metrics.jsonl"


def _plain(value):
  value = float(value) if not isinstance(value, (int, str)) else value
  return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:

  def __init__(
      self,
      workdir: str,
      *,
      enabled: bool = True,
      tensorboard: bool = True,
      upload_every_s: float = 60.0,
  ):
    self.enabled = enabled
    self.path = epath.Path(workdir) / METRICS_FILE
    self._remote = paths.is_remote(workdir)
    self._tb = None
    self._tb_dir = epath.Path(workdir) / "tensorboard"
    self._tb_local = None  # the local directory of the event files, for a remote workdir
    self._upload_every_s = upload_every_s
    self._uploaded_at = time.monotonic()
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter  # writes event files without TensorFlow

      self._tb_local = paths.scratch_dir("tensorboard") if self._remote else None
      self._tb = SummaryWriter(self._tb_local or os.fspath(self._tb_dir))

  def truncate_after(self, step: int) -> None:
    """Drops the lines of steps > `step` (written before a crash, not checkpointed)."""
    if not self.enabled or not self.path.exists():
      return
    rows = [row for row in _read_rows(self.path) if row["step"] <= step]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if self._remote:
      self.path.write_text(text)  # a GCS object write replaces the object atomically
      return
    tmp = self.path.with_name(METRICS_FILE + ".tmp")
    with tmp.open("w") as f:
      f.write(text)
    tmp.replace(self.path)

  def remove(self) -> None:
    """Deletes the metrics file, if there is one (metrics of a run that is started anew)."""
    if self.enabled:
      self.path.unlink(missing_ok=True)

  def write(self, step: int, metrics: Mapping[str, object]) -> None:
    if not self.enabled:
      return
    row = {"step": step, **{k: _plain(v) for k, v in sorted(metrics.items())}}
    line = json.dumps(row) + "\n"
    if self._remote:
      before = self.path.read_text() if self.path.exists() else ""
      self.path.write_text(before + line)
    else:
      with open(self.path, "a") as f:
        f.write(line)
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()
      if self._tb_local and time.monotonic() - self._uploaded_at >= self._upload_every_s:
        self._upload_events()

  def _upload_events(self) -> None:
    """Copies the local event files up to the remote workdir. A failure is logged, not
    raised: the events are a view of metrics.jsonl, which holds every step."""
    self._uploaded_at = time.monotonic()
    try:
      paths.copy_tree(self._tb_local, self._tb_dir)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not copy the TensorBoard events to %s: %s", self._tb_dir, e)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      if self._tb_local:
        self._upload_events()


def _read_rows(path: str | os.PathLike) -> list[dict]:
  """The rows of a metrics file. A last line without its newline is a write cut short by a kill
  (that step is re-run on resume) and is left out; any other bad line is an error naming it."""
  rows = []
  with epath.Path(path).open() as f:
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
  """The rows of `workdir/metrics.jsonl` (a local or remote workdir)."""
  return _read_rows(epath.Path(workdir) / METRICS_FILE)
