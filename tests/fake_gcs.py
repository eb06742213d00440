"""An in-memory stand-in for Google Cloud Storage, for testing gs:// run directories offline.

`etils.epath` opens `gs://` paths through fsspec's "gcs" filesystem (gcsfs, when TensorFlow is not
installed). The `gcs` fixture registers `FakeGCS` under that name instead: a fresh in-memory
store per test that, like gcsfs, has no append mode and no real directories. Only epath / fsspec
reach it; orbax's arrays go through tensorstore's own GCS driver, which this does not cover.
"""

from __future__ import annotations

import importlib

import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.utils import stringify_path

# fsspec's registry of filesystem classes (`fsspec.registry` is its read-only view).
_REGISTRY = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access


class FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  root_marker = ""

  def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes gcsfs's option
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = stringify_path(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix) :]
    return path.strip("/")

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode or "+" in mode:  # gcsfs: "Currently only 'wb' and 'rb'"
      raise NotImplementedError(f"GCS objects cannot be appended to or updated (mode {mode!r})")
    return super()._open(path, mode, **kwargs)

  def files(self) -> list[str]:
    """Every object, as gs://BUCKET/PATH."""
    return sorted(f"gs://{path}" for path in self.store)


@pytest.fixture
def gcs(monkeypatch):
  """Routes epath's gs:// paths to a new, empty FakeGCS for the test; yields it."""
  for name in ("gs", "gcs"):
    monkeypatch.setitem(_REGISTRY, name, FakeGCS)
  monkeypatch.setattr(FakeGCS, "store", {})
  monkeypatch.setattr(FakeGCS, "pseudo_dirs", [""])
  monkeypatch.setenv("EPATH_USE_TF", "false")  # were TensorFlow installed, epath would use gfile
  _forget_filesystems()
  yield FakeGCS()
  _forget_filesystems()  # no later test reaches this store through a cached instance


def _forget_filesystems() -> None:
  FakeGCS.clear_instance_cache()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
