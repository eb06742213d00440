"""Is a Hugging Face checkpoint directory intact? Its manifest, and the check against it.

The trainer writes HF checkpoints (the SFT model, the exports) and reads them back (the SFT
model when a run resumes; an export given as policy.checkpoint or prm.checkpoint). A file cut
short by a kill or a partial copy would otherwise fail deep inside safetensors or JSON parsing,
or not at all. So a writer lists every file with its size and SHA-256 in `manifest.json`,
written after them, and a reader checks the directory (`problems`, `check`):

  - with a manifest: every file listed is there, with its size and digest;
  - always (also for checkpoints from elsewhere, which have no manifest): config.json is a
    JSON object, and every safetensors file is as long as its header says.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
_MAX_LISTED = 3  # problems named in an error


class DamagedModelError(ValueError):
  """An HF checkpoint directory that is incomplete or damaged."""


def _digest(path: Path) -> str:
  sha = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      sha.update(block)
  return sha.hexdigest()


def write_manifest(directory: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> None:
  """Lists the files of `directory` (not those named in `exclude`) in its manifest."""
  directory = Path(directory)
  files = {
      p.name: {"bytes": p.stat().st_size, "sha256": _digest(p)}
      for p in sorted(directory.iterdir())
      if p.is_file() and p.name != MANIFEST and p.name not in exclude
  }
  tmp = directory / (MANIFEST + ".tmp")
  tmp.write_text(json.dumps({"files": files}, indent=1))
  os.replace(tmp, directory / MANIFEST)


def _safetensors_problem(path: Path) -> str | None:
  """Why a safetensors file is not whole: its length against the one its header implies."""
  size = path.stat().st_size
  if size < 8:
    return f"{path.name} is {size} bytes long, too short for a safetensors file"
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    if 8 + header_len > size:
      return f"{path.name} is {size} bytes long, cut inside its {header_len}-byte header"
    try:
      header = json.loads(f.read(header_len))
      end = max(
          (int(t["data_offsets"][1]) for name, t in header.items() if name != "__metadata__"),
          default=0,
      )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
      return f"{path.name} has an unreadable header"
  if 8 + header_len + end != size:
    return f"{path.name} is {size} bytes long; its header says {8 + header_len + end}"
  return None


def problems(directory: str | os.PathLike) -> list[str]:
  """What is wrong with the checkpoint in `directory`, one phrase each (empty: intact)."""
  directory = Path(directory)
  found = []
  manifest = directory / MANIFEST
  if manifest.exists():
    try:
      listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
      return [f"{MANIFEST} is unreadable"]
    for name, want in listed.items():
      path = directory / name
      if not path.is_file():
        found.append(f"{name} is missing")
      elif path.stat().st_size != want["bytes"]:
        found.append(f"{name} is {path.stat().st_size} bytes long, not {want['bytes']}")
      elif _digest(path) != want["sha256"]:
        found.append(f"{name} does not have the content it was written with (SHA-256 differs)")
  if not any("config.json" in p for p in found):
    try:
      if not isinstance(json.loads((directory / "config.json").read_text()), dict):
        found.append("config.json is not a JSON object")
    except FileNotFoundError:
      found.append("config.json is missing")
    except ValueError:
      found.append("config.json is not valid JSON")
  for path in sorted(directory.glob("*.safetensors")):
    problem = _safetensors_problem(path)
    if problem and not any(p.startswith(path.name + " ") for p in found):
      found.append(problem)
  return found


def check(directory: str | os.PathLike, what: str) -> None:
  """Raises `DamagedModelError` naming `what` (e.g. "the policy checkpoint"), the directory
  and its first problems, unless the checkpoint there is intact."""
  found = problems(directory)
  if found:
    raise DamagedModelError(
        f"{what} {directory} is damaged: "
        + "; ".join(found[:_MAX_LISTED])
        + (f" (and {len(found) - _MAX_LISTED} more)" if len(found) > _MAX_LISTED else "")
    )
