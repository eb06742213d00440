"""Run directories that are local or remote (`--workdir=gs://BUCKET/run`), through `etils.epath`.

Everything the trainer writes into its workdir goes through `epath.Path`, which opens a local path
with the os module and a `gs://` one with fsspec's `gcsfs` (TensorFlow's gfile instead, when
TensorFlow is installed). gcsfs is not in requirements.txt, because a CPU run does not need it:
`launch/tpu.sh setup` installs it on TPU workers, and elsewhere `pip install gcsfs` before using a
gs:// workdir (it also brings google-cloud-storage, which orbax needs for gs:// checkpoints).

GCS objects are written whole (no append, no rename), so what the trainer has to write through
local-only code (HF exports, tfds files, TensorBoard events) is written to a local scratch
directory first and copied up with `copy_tree`, each file's copy retried with backoff on a
transient error (`prime_jax.io_errors`).

Something damaged is never deleted: `move_aside` renames it to `<name>-<UTC time>` beside
where it was, so that the user can look at it (or salvage it) later.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from typing import Iterable

from etils import epath

from prime_jax import io_errors


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URL-like path (gs://bucket/run, s3://...), False for a local one."""
  return "://" in os.fspath(path)


def scratch_dir(name: str) -> str:
  """A new local temporary directory, removed when the process exits."""
  directory = tempfile.mkdtemp(prefix=f"prime-jax-{name}-")
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  return directory


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike, *, last: Iterable[str] = ()) -> None:
  """Copies every file under `src` to the same place under `dst`, overwriting, either of them
  local or remote. The top-level files named in `last` are copied after all the others, so that
  their presence at `dst` marks a complete copy."""
  src, dst, last = epath.Path(src), epath.Path(dst), set(last)
  dst.mkdir(parents=True, exist_ok=True)
  entries = sorted(src.iterdir(), key=lambda p: (p.name in last, p.name))
  for entry in entries:
    if entry.is_dir():
      copy_tree(entry, dst / entry.name)
    else:
      io_errors.retry(
          lambda entry=entry: entry.copy(dst / entry.name, overwrite=True),
          f"copying {entry} to {dst / entry.name}",
      )


def move_aside(path: str | os.PathLike, name: str) -> epath.Path:
  """Renames `path` (a file or directory, local or remote) to `<name>-<UTC time>` in the same
  directory, never over an existing entry; returns the new path. On GCS, which has no rename,
  this copies the objects and then removes the originals."""
  path = epath.Path(path)
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  target = path.parent / f"{name}-{stamp}"
  suffix = 1
  while target.exists():  # two moves within a second
    target = path.parent / f"{name}-{stamp}.{suffix}"
    suffix += 1
  return path.rename(target)
