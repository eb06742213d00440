"""Per-step metrics: `metrics.jsonl` (one JSON object per step) and TensorBoard event files.

Written by process 0 only. On resume, lines after the restored step are dropped so the file holds
exactly one line per completed step, whatever the run went through; a last line cut short by a
kill is one of those. The TensorBoard writer of a resumed run starts with a purge marker at the
first step it reruns, so TensorBoard drops the older events of the rerun steps (an event file
cut short by a kill stays as it is: readers stop at its torn end).

The workdir may be local or remote (gs://..., `prime_jax.paths`). Locally, each step appends one
line. A GCS object cannot be appended to, so there each step rewrites the whole file (one atomic
object write), retried with backoff on a transient error (`prime_jax.io_errors`); the
TensorBoard events are written to a local scratch directory and copied up at most every
`upload_every_s` seconds and on `close()`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

from absl import logging
from etils import epath

from prime_jax import distributed, io_errors, paths

METRICS_FILE = "metrics.jsonl"


class MetricsFileError(ValueError):
  """A metrics file with a bad line before its last one (not a write cut short by a kill)."""


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
    self._tensorboard = enabled and tensorboard
    self._tb = None  # opened at the first write, after a resume's `truncate_after`
    self._purge_step = None  # the first step a resumed run writes again
    self._tb_dir = epath.Path(workdir) / "tensorboard"
    self._tb_local = None  # the local directory of the event files, for a remote workdir
    self._upload_every_s = upload_every_s
    self._uploaded_at = time.monotonic()

  def _writer(self):
    """The TensorBoard writer, opened on first use (tensorboardX writes event files without
    TensorFlow); after a resume its first event purges the rerun steps' older events."""
    if self._tb is None:
      from tensorboardX import SummaryWriter

      self._tb_local = paths.scratch_dir("tensorboard") if self._remote else None
      self._tb = SummaryWriter(
          self._tb_local or os.fspath(self._tb_dir), purge_step=self._purge_step
      )
    return self._tb

  def last_complete_step(self):
    """The last step of the rows 0, 1, 2, ... that the file holds without a gap (None: no
    file, or no row of step 0)."""
    if not self.enabled or not self._exists():
      return None
    last = None
    for row in self._rows():
      if row["step"] != (0 if last is None else last + 1):
        break
      last = row["step"]
    return last

  def truncate_after(self, step: int) -> None:
    """Drops the lines of steps > `step` (written before a crash, not checkpointed)."""
    if not self.enabled:
      return
    self._purge_step = step + 1
    if not self._exists():
      return
    rows = [row for row in self._rows() if row["step"] <= step]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if self._remote:  # a GCS object write replaces the object atomically
      io_errors.retry(lambda: self.path.write_text(text), f"writing {self.path}")
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
      io_errors.retry(lambda: self._rewrite_with(line), f"appending step {step} to {self.path}")
    else:
      with open(self.path, "a") as f:
        f.write(line)
    if self._tensorboard:
      writer = self._writer()
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          writer.add_scalar(k, v, step)
      writer.flush()
      if self._tb_local and time.monotonic() - self._uploaded_at >= self._upload_every_s:
        self._upload_events()

  def _rewrite_with(self, line: str) -> None:
    """Appends `line` to a remote file: GCS objects cannot be appended to, only replaced. A
    retry after a write that failed on the way back but did happen does not append twice."""
    before = self.path.read_text() if self.path.exists() else ""
    if not before.endswith(line):
      self.path.write_text(before + line)

  def _exists(self) -> bool:
    return io_errors.retry(self.path.exists, f"looking up {self.path}")

  def _rows(self) -> list[dict]:
    return io_errors.retry(lambda: _read_rows(self.path), f"reading {self.path}")

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
        raise MetricsFileError(f"{path}:{number}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict) or "step" not in row:
        raise MetricsFileError(f"{path}:{number}: not a metrics row (a JSON object with a step)")
      rows.append(row)
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl` (a local or remote workdir)."""
  path = epath.Path(workdir) / METRICS_FILE
  return io_errors.retry(lambda: _read_rows(path), f"reading {path}")


def last_logged_step(log: MetricsLog) -> int:
  """The last step whose metrics are all in metrics.jsonl (-1: none), as process 0, which
  writes them, sees it: every process resumes from the same checkpoint."""
  mine = log.last_complete_step() if log.enabled else None
  step = distributed.process_group().allgather(mine)[0]
  return -1 if step is None else step
