"""Looks at files on disk, and a fake GCS that fails on demand, for the fault suite."""

import collections
import hashlib
import pathlib


def tree_digest(root) -> dict[str, str]:
  """relative path -> SHA-256 of every file under `root`: equal digests, equal trees."""
  root = pathlib.Path(root)
  return {
      str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
      for p in sorted(root.rglob("*"))
      if p.is_file()
  }


def largest_file(root) -> pathlib.Path:
  return max(
      (p for p in pathlib.Path(root).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
  )


class FlakyGCS:
  """Makes the in-memory fake GCS (tests/fake_gcs.py) fail: `fail(...)` queues errors for the
  next opens of matching objects; `opens` counts every open by (object name, mode)."""

  def __init__(self, monkeypatch):
    from fake_gcs import FakeGCS

    self.rules = []
    self.opens = collections.Counter()
    real = FakeGCS._open

    def _open(fs, path, mode="rb", **kwargs):
      name = path.rsplit("/", 1)[-1]
      self.opens[name, mode] += 1
      for rule in self.rules:
        if rule["left"] and name == rule["name"] and mode == rule["mode"]:
          rule["left"] -= 1
          if not rule["after"]:
            raise rule["error"]
          return self._failing_close(real(fs, path, mode, **kwargs), rule["error"])
      return real(fs, path, mode, **kwargs)

    monkeypatch.setattr(FakeGCS, "_open", _open)

  def fail(self, name: str, mode: str, error: Exception, times: int = 1, after=False) -> None:
    """The next `times` opens of object `name` (its last path part) in `mode` raise `error`;
    with `after`, the write happens and then its close raises (a reply lost on the way)."""
    self.rules.append(dict(name=name, mode=mode, error=error, left=times, after=after))

  @staticmethod
  def _failing_close(file, error):
    close = file.close

    def failing_close():
      close()
      del file.close  # once: the fake stores this very object, and reads reuse it
      raise error

    file.close = failing_close
    return file


class HttpError(Exception):
  """An error that carries an HTTP status, as gcsfs's and google-api-core's do."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code
