"""Damaged HF checkpoint directories (`prime_jax.model_files`), without a model: what the check
names for a file cut short, changed or missing, with and without a manifest."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from prime_jax import model_files


@pytest.fixture
def checkpoint(tmp_path):
  save_file({"w": np.arange(1000, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
  (tmp_path / "tokenizer.model").write_bytes(b"pieces")
  return tmp_path


def test_an_intact_checkpoint_has_no_problems(checkpoint):
  assert model_files.problems(checkpoint) == []
  model_files.write_manifest(checkpoint)
  assert model_files.problems(checkpoint) == []
  model_files.check(checkpoint, "the export")


def test_without_a_manifest_a_cut_safetensors_file_is_named_by_its_header(checkpoint):
  path = checkpoint / "model.safetensors"
  size = path.stat().st_size
  path.write_bytes(path.read_bytes()[:-100])
  assert model_files.problems(checkpoint) == [
      f"model.safetensors is {size - 100} bytes long; its header says {size}"
  ]
  path.write_bytes(b"")
  assert model_files.problems(checkpoint) == [
      "model.safetensors is 0 bytes long, too short for a safetensors file"
  ]
  (checkpoint / "config.json").unlink()
  with pytest.raises(model_files.DamagedModelError) as e:
    model_files.check(checkpoint, "prm.checkpoint")
  assert str(e.value) == (
      f"prm.checkpoint {checkpoint} is damaged: config.json is missing; model.safetensors is 0 "
      "bytes long, too short for a safetensors file"
  )


def test_with_a_manifest_missing_cut_and_changed_files_are_named(checkpoint):
  model_files.write_manifest(checkpoint)
  (checkpoint / "tokenizer.model").write_bytes(b"PIECES")  # same size, other content
  data = bytearray((checkpoint / "model.safetensors").read_bytes())
  data[-1] ^= 0xFF  # a flipped bit the header cannot see
  (checkpoint / "model.safetensors").write_bytes(bytes(data))
  (checkpoint / "config.json").unlink()
  assert model_files.problems(checkpoint) == [
      "config.json is missing",
      "model.safetensors does not have the content it was written with (SHA-256 differs)",
      "tokenizer.model does not have the content it was written with (SHA-256 differs)",
  ]
