import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/ helpers (hf_fixtures) importable


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
  """name -> (directory, torch model) for the tiny random checkpoints of hf_fixtures, built once."""
  from hf_fixtures import make_tiny_hf_model

  cache = {}

  def get(name="qwen2"):
    if name not in cache:
      d = str(tmp_path_factory.mktemp(f"hf_{name}"))
      cache[name] = (d, make_tiny_hf_model(d, name))
    return cache[name]

  return get
