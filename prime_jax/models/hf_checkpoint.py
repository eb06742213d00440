"""Hugging Face checkpoints (config.json + safetensors) <-> DecoderConfig + params pytree.

Import reads tensor by tensor with the `safetensors` library (no torch). Given target shardings,
each param is built with `jax.make_array_from_callback`, so a host only ever holds one HF tensor
at a time and each device receives just its shard. Export writes files that
`transformers.AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from prime_jax.models.config import SUPPORTED_MODEL_TYPES, DecoderConfig, RopeScaling

_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_INDEX_FILE = "model.safetensors.index.json"
_SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read as the configured model."""


# --------------------------------------------------------------------------- config


def _rope_scaling_from_hf(params: Optional[dict]) -> Optional[RopeScaling]:
  if not params:
    return None
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type == "default":
    return None
  if rope_type not in ("linear", "llama3"):
    raise CheckpointError(f"unsupported rope scaling type {rope_type!r}; supported: linear, llama3")
  fields = {
      k: params[k]
      for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
      if k in params
  }
  return RopeScaling(rope_type=rope_type, **fields)


def config_from_hf(hf: dict[str, Any], **overrides) -> DecoderConfig:
  """DecoderConfig from a parsed config.json (top-level `rope_theta`/`rope_scaling`, or the newer
  `rope_parameters` form). `overrides` set DecoderConfig fields such as dtype or remat."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(
        f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )
  if hf.get("mlp_bias"):
    raise CheckpointError("mlp_bias=true is not supported")
  rope = hf.get("rope_parameters") or {}
  rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  scaling = _rope_scaling_from_hf(hf.get("rope_scaling") or rope)
  heads = hf["num_attention_heads"]
  cfg = dict(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      intermediate_size=hf["intermediate_size"],
      rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      rope_theta=float(rope_theta),
      rope_scaling=scaling,
      qkv_bias=True if model_type == "qwen2" else bool(hf.get("attention_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=hf.get("max_position_embeddings", 4096),
      model_type=model_type,
  )
  cfg.update(overrides)
  return DecoderConfig(**cfg)


def config_to_hf(config: DecoderConfig, *, torch_dtype: str = "float32", **extra) -> dict:
  """config.json contents for `config` (both the legacy and the `rope_parameters` rope fields)."""
  rope = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    rs = config.rope_scaling
    rope.update(rope_type=rs.rope_type, factor=rs.factor)
    if rs.rope_type == "llama3":
      rope.update(
          low_freq_factor=rs.low_freq_factor,
          high_freq_factor=rs.high_freq_factor,
          original_max_position_embeddings=rs.original_max_position_embeddings,
      )
  hf = dict(
      architectures=[_ARCHITECTURES[config.model_type]],
      model_type=config.model_type,
      vocab_size=config.vocab_size,
      hidden_size=config.hidden_size,
      intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads,
      num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim,
      hidden_act="silu",
      rms_norm_eps=config.rms_norm_eps,
      rope_theta=config.rope_theta,
      rope_scaling=None
      if config.rope_scaling is None
      else {k: v for k, v in rope.items() if k != "rope_theta"},
      rope_parameters=rope,
      tie_word_embeddings=config.tie_embeddings,
      max_position_embeddings=config.max_position_embeddings,
      attention_dropout=0.0,
      torch_dtype=torch_dtype,
      dtype=torch_dtype,
  )
  if config.model_type == "llama":
    hf.update(attention_bias=config.qkv_bias, mlp_bias=False)
  else:
    hf.update(use_sliding_window=False, sliding_window=None)
  hf.update(extra)
  return hf


# --------------------------------------------------------------------------- name mapping

# Each entry: flax path -> (HF name template, to_flax(hf_tensor, cfg) -> array, to_hf(array, cfg)).
# Layer entries are per layer ("{i}") and stacked on the leading `layers` axis of the flax param.


def _proj_in(w, cfg, heads):  # HF [heads*head_dim, hidden] -> flax [hidden, heads, head_dim]
  return w.T.reshape(w.shape[1], heads, cfg.head_dim)


def _mapping(cfg: DecoderConfig) -> dict[tuple[str, ...], tuple[str, Callable, Callable]]:
  t = lambda w, c: w.T
  same = lambda w, c: w
  heads = {"q_proj": cfg.num_heads, "k_proj": cfg.num_kv_heads, "v_proj": cfg.num_kv_heads}
  m = {
      ("embed_tokens", "embedding"): ("model.embed_tokens.weight", same, same),
      ("norm", "scale"): ("model.norm.weight", same, same),
  }
  if not cfg.tie_embeddings:
    m[("lm_head", "kernel")] = ("lm_head.weight", t, t)
  pre = "model.layers.{i}."
  for name, nh in heads.items():
    m[("layers", "self_attn", name, "kernel")] = (
        pre + f"self_attn.{name}.weight",
        functools.partial(_proj_in, heads=nh),
        lambda a, c: a.reshape(a.shape[0], -1).T,
    )
    if cfg.qkv_bias:
      m[("layers", "self_attn", name, "bias")] = (
          pre + f"self_attn.{name}.bias",
          lambda w, c, nh=nh: w.reshape(nh, c.head_dim),
          lambda a, c: a.reshape(-1),
      )
  m[("layers", "self_attn", "o_proj", "kernel")] = (
      pre + "self_attn.o_proj.weight",
      lambda w, c: w.T.reshape(c.num_heads, c.head_dim, w.shape[0]),
      lambda a, c: a.reshape(-1, a.shape[-1]).T,
  )
  for name in ("gate_proj", "up_proj", "down_proj"):
    m[("layers", "mlp", name, "kernel")] = (pre + f"mlp.{name}.weight", t, t)
  for name in ("input_layernorm", "post_attention_layernorm"):
    m[("layers", name, "scale")] = (pre + f"{name}.weight", same, same)
  return m


def _flax_shapes(cfg: DecoderConfig):
  from prime_jax.models.decoder import init_params  # local: avoids a cycle at import time

  return jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))


# --------------------------------------------------------------------------- import


class _TensorFiles:
  """Name -> file index of a single or sharded safetensors checkpoint, read lazily."""

  def __init__(self, directory: str):
    index_path = os.path.join(directory, _INDEX_FILE)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    elif os.path.exists(os.path.join(directory, _SINGLE_FILE)):
      with safe_open(os.path.join(directory, _SINGLE_FILE), "numpy") as f:
        weight_map = {k: _SINGLE_FILE for k in f.keys()}
    else:
      raise CheckpointError(f"{directory}: no {_SINGLE_FILE} or {_INDEX_FILE}")
    self.directory = directory
    self.weight_map = weight_map

  def shape(self, name: str) -> tuple[int, ...]:
    with safe_open(self._file(name), "numpy") as f:
      return tuple(f.get_slice(name).get_shape())

  @functools.lru_cache(maxsize=2)  # the sharded path asks for the same tensor once per device
  def get(self, name: str) -> np.ndarray:
    with safe_open(self._file(name), "numpy") as f:
      return f.get_tensor(name)

  def _file(self, name: str) -> str:
    if name not in self.weight_map:
      raise CheckpointError(f"{self.directory}: tensor {name!r} is missing from the checkpoint")
    return os.path.join(self.directory, self.weight_map[name])


def read_hf_config(directory: str, **overrides) -> DecoderConfig:
  """DecoderConfig of the checkpoint in `directory` (its config.json)."""
  path = os.path.join(directory, "config.json")
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
  if not os.path.exists(path):
    raise CheckpointError(f"{directory}: no config.json")
  with open(path) as f:
    return config_from_hf(json.load(f), **overrides)


def load_hf_checkpoint(directory: str, *, shardings=None, **config_overrides):
  """Reads a HF checkpoint directory into `(DecoderConfig, params)`.

  Args:
    directory: holds config.json and model.safetensors (or shards + model.safetensors.index.json).
    shardings: optional pytree of `jax.sharding.Sharding` shaped like the params; each param is
      then assembled on its devices shard by shard (one HF tensor on the host at a time).
    **config_overrides: DecoderConfig fields to override (e.g. dtype="bfloat16", remat="full").
  Returns:
    (config, params) with params in `config.param_dtype`.
  """
  config = read_hf_config(directory, **config_overrides)
  files = _TensorFiles(directory)
  mapping = _mapping(config)
  expected = {
      tmpl.format(i=i)
      for tmpl, _, _ in mapping.values()
      for i in range(config.num_layers if "{i}" in tmpl else 1)
  }
  unexpected = sorted(set(files.weight_map) - expected - {"lm_head.weight"})
  unexpected = [n for n in unexpected if not n.endswith("rotary_emb.inv_freq")]
  if unexpected:
    raise CheckpointError(
        f"{directory}: unexpected tensors for {config.model_type} " f"(first few): {unexpected[:5]}"
    )
  pdtype = np.dtype(jnp.dtype(config.param_dtype))
  shapes = _flax_shapes(config)
  params: dict = {}
  for path, (tmpl, to_flax, _) in mapping.items():
    shape = _lookup(shapes, path).shape
    layered = "{i}" in tmpl

    def tensor(i, tmpl=tmpl, to_flax=to_flax, shape=shape, layered=layered):
      name = tmpl.format(i=i)
      want = tuple(shape[1:] if layered else shape)
      try:
        arr = to_flax(files.get(name), config)
      except ValueError:  # a reshape that cannot fit: reported as the shape mismatch it is
        arr = None
      if arr is None or arr.shape != want:
        raise CheckpointError(
            f"{directory}: tensor {name!r} has shape {files.shape(name)}, "
            f"which does not fit the config (expected flax shape {want})"
        )
      return arr.astype(pdtype)

    def read(index, tensor=tensor, layered=layered, shape=shape):
      if not layered:
        return tensor(0)[index]
      layers = range(shape[0])[index[0]]
      return np.stack([tensor(i)[index[1:]] for i in layers])

    sharding = _lookup(shardings, path) if shardings is not None else None
    if sharding is None:
      value = jnp.asarray(read(tuple(slice(None) for _ in shape)))
    else:
      value = jax.make_array_from_callback(shape, sharding, read)
    _set(params, path, value)
  if config.value_head:  # not an HF tensor: starts at zero, as in `init_params`
    params["value_proj"] = jax.tree_util.tree_map(
        lambda a: jnp.zeros(a.shape, a.dtype), shapes["value_proj"]
    )
    if shardings is not None:
      params["value_proj"] = jax.device_put(params["value_proj"], shardings["value_proj"])
  return config, params


def _lookup(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


# --------------------------------------------------------------------------- export


def save_hf_checkpoint(
    directory: str,
    config: DecoderConfig,
    params,
    *,
    dtype: str = "float32",
    max_shard_bytes: int = 4 << 30,
    extra_config: Optional[dict] = None,
) -> None:
  """Writes config.json + safetensors (sharded with an index above `max_shard_bytes`).

  `dtype` is the stored dtype ("float32" or "bfloat16"); `extra_config` adds config.json fields
  (e.g. eos_token_id).
  """
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
  os.makedirs(directory, exist_ok=True)
  tensors = {}
  for path, (tmpl, _, to_hf) in _mapping(config).items():
    value = np.asarray(jax.device_get(_lookup(params, path)), np.float32)
    if "{i}" in tmpl:
      for i in range(config.num_layers):
        tensors[tmpl.format(i=i)] = np.ascontiguousarray(to_hf(value[i], config)).astype(np_dtype)
    else:
      tensors[tmpl] = np.ascontiguousarray(to_hf(value, config)).astype(np_dtype)
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    nbytes = tensors[name].nbytes
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = tensors[name]
    size += nbytes
  shards.append(current)
  meta = {"format": "pt"}  # transformers refuses safetensors files without this tag
  if len(shards) == 1:
    save_file(shards[0], os.path.join(directory, _SINGLE_FILE), metadata=meta)
  else:
    weight_map = {}
    for k, shard in enumerate(shards):
      fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(directory, fname), metadata=meta)
      weight_map.update({name: fname for name in shard})
    total = sum(t.nbytes for t in tensors.values())
    with open(os.path.join(directory, _INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config_to_hf(config, torch_dtype=dtype, **(extra_config or {})), f, indent=2)
