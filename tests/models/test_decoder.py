"""The decoder against transformers, HF import/export, config forms, errors, remat and sharding."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from hf_fixtures import TINY_MODELS, TINY_VOCAB
from multidevice import run_with_devices
from prime_jax.models import (
    CheckpointError,
    Decoder,
    config_from_hf,
    load_hf_checkpoint,
    positions_from_mask,
    save_hf_checkpoint,
)
from prime_jax.models.decoder import cache_axes, cache_shapes, chunk_to_cache_layout
from prime_jax.models.decoding import decode_step, split_layers


def _batch(seed=0, b=3, s=24, pads=(0, 5, 11)):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, TINY_VOCAB, (b, s))
  valid = np.ones((b, s), bool)
  for row, p in enumerate(pads):
    valid[row, :p] = False  # left padding
  return tokens, valid


def _ours(config, params, tokens, valid):
  valid = jnp.asarray(valid)
  return np.asarray(
      Decoder(config).apply(
          {"params": params},
          jnp.asarray(tokens),
          positions_from_mask(valid),
          valid,
          method=Decoder.forward_logits,
      )
  )


def _theirs(model, tokens, valid):
  pos = np.maximum(np.cumsum(valid, 1) - 1, 0)
  with torch.no_grad():
    return model(
        input_ids=torch.tensor(tokens),
        attention_mask=torch.tensor(valid.astype(np.int64)),
        position_ids=torch.tensor(pos),
    ).logits.numpy()


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_logits_match_transformers(tiny_hf, name):
  directory, model = tiny_hf(name)
  config, params = load_hf_checkpoint(directory)
  assert config.tie_embeddings == model.config.tie_word_embeddings
  tokens, valid = _batch()
  ours, theirs = _ours(config, params, tokens, valid), _theirs(model, tokens, valid)
  assert np.abs(theirs).max() > 1.0  # logits big enough for the tolerance to mean something
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)


def test_rope_scaling_is_applied(tiny_hf):
  directory, _ = tiny_hf("llama_scaled")
  config, params = load_hf_checkpoint(directory)
  assert config.rope_scaling.rope_type == "llama3"
  unscaled = config.replace(rope_scaling=None)
  tokens, valid = _batch(pads=(0, 0, 0))
  diff = np.abs(_ours(config, params, tokens, valid) - _ours(unscaled, params, tokens, valid))
  assert diff.max() > 1e-3  # the scaling changes the model, so the HF match above tests it


@pytest.mark.parametrize("name", ["qwen2", "llama_tied"])
def test_export_roundtrip_through_transformers(tiny_hf, tmp_path, name):
  import transformers

  directory, _ = tiny_hf(name)
  config, params = load_hf_checkpoint(directory)
  out = str(tmp_path / "export")
  save_hf_checkpoint(out, config, params, max_shard_bytes=40_000)  # force a sharded checkpoint
  assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokens, valid = _batch(seed=1)
  np.testing.assert_allclose(
      _theirs(reloaded, tokens, valid)[valid],
      _ours(config, params, tokens, valid)[valid],
      atol=1e-5,
      rtol=0,
  )
  config2, params2 = load_hf_checkpoint(out)  # and our own reader takes the sharded form
  assert config2 == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def test_config_rope_forms_agree():
  base = dict(
      model_type="qwen2",
      vocab_size=10,
      hidden_size=8,
      intermediate_size=16,
      num_hidden_layers=1,
      num_attention_heads=2,
      num_key_value_heads=1,
  )
  scaling = {
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
  }
  old = config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": scaling})
  new = config_from_hf({**base, "rope_parameters": {"rope_theta": 5e5, **scaling}})
  assert old == new and old.rope_theta == 5e5 and old.rope_scaling.factor == 8.0
  assert (
      config_from_hf(
          {**base, "rope_scaling": {"type": "linear", "factor": 2.0}}
      ).rope_scaling.rope_type
      == "linear"
  )


def _copy_checkpoint(tiny_hf, tmp_path, name="qwen2"):
  src, _ = tiny_hf(name)
  dst = tmp_path / "ckpt"
  shutil.copytree(src, dst)
  return str(dst)


def test_missing_tensor_is_named(tiny_hf, tmp_path):
  d = _copy_checkpoint(tiny_hf, tmp_path)
  tensors = load_file(os.path.join(d, "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
    load_hf_checkpoint(d)


def test_wrong_shape_is_named(tiny_hf, tmp_path):
  d = _copy_checkpoint(tiny_hf, tmp_path)
  tensors = load_file(os.path.join(d, "model.safetensors"))
  tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 64), np.float32)
  save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=r"k_proj\.weight.*shape \(5, 64\)"):
    load_hf_checkpoint(d)


def test_unexpected_tensor_is_named(tiny_hf, tmp_path):
  d = _copy_checkpoint(tiny_hf, tmp_path)
  tensors = load_file(os.path.join(d, "model.safetensors"))
  tensors["model.layers.0.mlp.extra.weight"] = np.zeros((2,), np.float32)
  save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=r"mlp\.extra\.weight"):
    load_hf_checkpoint(d)


def test_unsupported_model_type_lists_supported(tiny_hf, tmp_path):
  d = _copy_checkpoint(tiny_hf, tmp_path)
  cfg_path = os.path.join(d, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg["model_type"] = "gpt2"
  with open(cfg_path, "w") as f:
    json.dump(cfg, f)
  with pytest.raises(CheckpointError, match=r"'gpt2'.*qwen2.*llama"):
    load_hf_checkpoint(d)


def test_missing_directory(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_hf_checkpoint(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "impl,block",
    [
        ("xla", 16),
        ("xla", 64),
        ("pallas_interpret", 16),
        pytest.param(
            "pallas_gpu",
            16,
            marks=pytest.mark.skipif(
                jax.default_backend() != "gpu",
                reason="the Triton kernel needs a GPU (experiments/benchmarks/device_check.sh runs it)",
            ),
        ),
    ],
    ids=lambda v: str(v),
)
def test_decode_steps_equal_full_forward(tiny_hf, impl, block):
  """Prefill rows of different lengths, then feed the rest one token per step at each row's own
  slot (rows that are done idle at an out-of-range slot): every step's logits equal the uncached
  forward pass's. Block 16 reads the 48-slot cache in 3 blocks under a dynamic trip count, 64 in
  one; pallas_interpret is the Pallas GPU kernel in the interpreter, pallas_gpu the kernel itself,
  whose f32 dots Triton runs in TF32 (10-bit mantissa) whatever JAX's matmul precision: hence its
  looser tolerance, still far below what one wrong key or block changes."""
  directory, _ = tiny_hf("qwen2")
  config, params = load_hf_checkpoint(directory)
  b, total, slots = 3, 40, 48
  tokens = np.random.default_rng(1).integers(3, TINY_VOCAB, (b, total))
  full = _ours(config, params, tokens, np.ones((b, total), bool))  # [B, total, V]
  context = np.array([5, 17, 33])  # row b's first context[b] tokens are prefilled
  model = Decoder(config)
  hidden, kv = model.apply(
      {"params": params},
      jnp.asarray(tokens),
      jnp.broadcast_to(jnp.arange(total), (b, total)),
      jnp.arange(total)[None, :] < jnp.asarray(context)[:, None],
  )
  # The first `total` slots of each cache array, in `impl`'s (keys, values) layout.
  cache = tuple(
      tuple(
          jnp.zeros(shape)
          .at[(slice(None),) * axes.index("length") + (slice(0, total),)]
          .set(chunk_to_cache_layout(part[layer], axes))
          for part, shape, axes in zip(
              (kv["k"], kv["v"]), cache_shapes(config, b, slots, impl), cache_axes(impl)
          )
      )
      for layer in range(config.num_layers)
  )
  # Keys past each row's context hold the forward's values for later tokens: they must be ignored.
  layers = split_layers(params, config)
  step = jax.jit(
      lambda c, t, s: decode_step(
          params, layers, c, t, s, s + 1, config=config, block=block, impl=impl
      )
  )
  for offset in range(total - context.min()):
    slot = context + offset
    live = slot < total
    logits, cache = step(
        cache,
        jnp.asarray(tokens[np.arange(b), np.minimum(slot, total - 1)]),
        jnp.asarray(np.where(live, slot, slots)),
    )
    expected = full[np.arange(b), np.minimum(slot, total - 1)]
    atol = 1e-3 if impl == "pallas_gpu" else 1e-5
    np.testing.assert_allclose(np.asarray(logits)[live], expected[live], atol=atol, rtol=0)


def test_remat_policies_keep_gradients(tiny_hf):
  directory, _ = tiny_hf("qwen2")
  config, params = load_hf_checkpoint(directory)
  tokens, valid = _batch()
  tokens, valid = jnp.asarray(tokens), jnp.asarray(valid)

  def loss(p, cfg):
    logits = Decoder(cfg).apply(
        {"params": p}, tokens, positions_from_mask(valid), valid, method=Decoder.forward_logits
    )
    return jnp.mean(jax.nn.log_softmax(logits)[..., 3] * valid)

  ref = jax.grad(loss)(params, config)
  for policy in ("full", "dots"):
    got = jax.grad(loss)(params, config.replace(remat=policy))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, ref)


def test_bfloat16_compute_is_close(tiny_hf):
  directory, _ = tiny_hf("qwen2")
  config, params = load_hf_checkpoint(directory)
  tokens, valid = _batch()
  f32 = _ours(config, params, tokens, valid)
  bf16 = _ours(config.replace(dtype="bfloat16"), params, tokens, valid)
  assert bf16.dtype == np.float32
  err = np.abs(bf16 - f32)[valid]
  assert err.mean() < 0.05 * np.abs(f32).mean() and err.max() > 0  # really ran in bf16


def test_sharded_load_and_forward_match_single_device(tiny_hf):
  directory, _ = tiny_hf("qwen2")
  run_with_devices(f"""
    import jax, jax.numpy as jnp, numpy as np
    from prime_jax.models import Decoder, load_hf_checkpoint, positions_from_mask
    from prime_jax.sharding import make_mesh, param_shardings
    config, params = load_hf_checkpoint({directory!r})
    mesh = make_mesh({{"fsdp": 4, "tensor": 2}})
    shardings = param_shardings(config, mesh)
    _, sharded = load_hf_checkpoint({directory!r}, shardings=shardings)
    q = sharded["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None), q.sharding
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (2, 16, 2, 16)
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 97, (8, 16)))
    valid = jnp.ones((8, 16), bool).at[1, :4].set(False)
    f = jax.jit(lambda p: Decoder(config).apply({{"params": p}}, tokens, positions_from_mask(valid),
                                                valid, method=Decoder.forward_logits))
    np.testing.assert_allclose(np.asarray(f(sharded)), np.asarray(jax.device_get(f(params))),
                               atol=1e-5)
    # Under the mesh + rules context (activation constraints on; the params' boxed inits, which
    # the apply's shape check traces, broke there with DenseGeneral's 2-D boxes) it is the same.
    import flax.linen as nn
    from prime_jax.sharding import DEFAULT_RULES, activation_rules, rules_for_mesh
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules_for_mesh(DEFAULT_RULES, mesh)):
      np.testing.assert_allclose(np.asarray(f(sharded)), np.asarray(f(params)), atol=1e-5)
    def constrained(p):
      with activation_rules(mesh, DEFAULT_RULES):
        return f(p)
    np.testing.assert_allclose(np.asarray(jax.jit(constrained)(sharded)),
                               np.asarray(jax.device_get(f(params))), atol=1e-5)
    print("ok")
  """)


def _constraints(jaxpr, found=None):
  """(operand shape, PartitionSpec) of every sharding constraint in a jaxpr, sub-jaxprs included."""
  found = [] if found is None else found
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "sharding_constraint":
      found.append((eqn.invars[0].aval.shape, eqn.params["sharding"].spec))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          _constraints(sub, found)
  return found


def test_activation_constraints_follow_the_rules():
  """Traced under `activation_rules`, the decoder constrains its activations as the rules say
  (an abstract 2x2x2 mesh: no devices needed); outside it, it constrains nothing."""
  from jax.sharding import PartitionSpec as P
  from prime_jax.models import DecoderConfig, init_params
  from prime_jax.sharding import DEFAULT_RULES, activation_rules

  config = DecoderConfig(
      vocab_size=32,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=8,
      intermediate_size=64,
      max_position_embeddings=64,
  )
  params = init_params(config, jax.random.key(0))
  tokens, valid = jnp.zeros((4, 8), jnp.int32), jnp.ones((4, 8), bool)
  # Auto axes, as prime_jax.sharding's meshes have: jax 0.11 (an H200's image) made Explicit the
  # default, and there a constraint that disagrees with the input's sharding is an assertion.
  auto = (jax.sharding.AxisType.Auto,) * 3
  mesh = jax.sharding.AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=auto)

  def logits(p, mesh):
    with activation_rules(mesh, DEFAULT_RULES):
      return Decoder(config).apply(
          {"params": p}, tokens, positions_from_mask(valid), valid, method=Decoder.forward_logits
      )

  found = set(_constraints(jax.make_jaxpr(lambda p: logits(p, mesh))(params).jaxpr))
  rows = ("data", "fsdp")
  assert found == {
      ((4, 8, 32), P(rows, None, None)),  # residual stream
      ((4, 8, 4, 8), P(rows, None, "tensor", None)),  # q, attention output: heads
      ((4, 8, 2, 8), P(rows, None, "tensor", None)),  # k, v: kv heads
      ((4, 8, 64), P(rows, None, "tensor")),  # MLP hidden
      ((4, 8, 32), P(rows, None, "tensor")),  # logits: vocab
  }, found
  assert not _constraints(jax.make_jaxpr(lambda p: logits(p, None))(params).jaxpr)
