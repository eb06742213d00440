"""The rule tables the config selects, and resharding params between layouts (1 device)."""

import jax
import numpy as np
import pytest

from prime_jax.configs import base_config
from prime_jax.models import DecoderConfig, init_params
from prime_jax.sharding import (
    DECODE_RULES,
    DEFAULT_RULES,
    make_mesh,
    param_shardings,
    parse_mesh,
    reshard_params,
    sampler_rules,
    training_rules,
)

MODEL = DecoderConfig(
    vocab_size=32,
    hidden_size=32,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=64,
)


def test_config_selects_the_rules():
  c = base_config()
  assert training_rules(c) == DEFAULT_RULES and sampler_rules(c) == DEFAULT_RULES
  c.sharding_rules = (("batch", ["data"]), ("embed", None))  # lists from a config file are fine
  assert training_rules(c) == (("batch", ("data",)), ("embed", None))
  assert sampler_rules(c) == training_rules(c)  # () = the training layout
  c.sampler_rules = DECODE_RULES
  assert sampler_rules(c) == DECODE_RULES
  assert dict(DECODE_RULES)["embed"] is None  # params replicated over fsdp ...
  assert {k: v for k, v in DECODE_RULES if k != "embed"} == {  # ... all else as in training
      k: v for k, v in DEFAULT_RULES if k != "embed"
  }


def test_reshard_params_is_free_for_the_same_layout():
  mesh = make_mesh({"data": 1})
  params = jax.device_put(init_params(MODEL, jax.random.key(0)), param_shardings(MODEL, mesh))
  same = reshard_params(params, MODEL, mesh, DEFAULT_RULES)
  for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(params)):
    assert a is b
  decode = reshard_params(params, MODEL, mesh, DECODE_RULES)
  jax.tree_util.tree_map(np.testing.assert_array_equal, decode, params)
  q = decode["layers"]["self_attn"]["q_proj"]["kernel"].sharding
  assert q == param_shardings(MODEL, mesh, DECODE_RULES)["layers"]["self_attn"]["q_proj"]["kernel"]


def test_parse_mesh_reads_axis_sizes_and_names_a_bad_part():
  assert parse_mesh("data=-1, fsdp=2,tensor=1") == {"data": -1, "fsdp": 2, "tensor": 1}
  assert parse_mesh({"data": "4"}) == {"data": 4}
  for bad, words in [
      ("data", "is not NAME=SIZE"),
      ("data=x", "must be an integer"),
      (" ,", "no axes"),
  ]:
    with pytest.raises(ValueError, match=words):
      parse_mesh(bad)
