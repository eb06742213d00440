"""One Flax Linen causal decoder (LLaMA / Qwen2 family) for policy, reference and implicit PRM.

Pure functional: `Decoder(config).apply({"params": params}, ...)` with a plain params pytree and an
explicit KV cache argument; nothing is stored in the module. Layers run under `nn.scan` with params
stacked on a leading `layers` axis, so compile time does not grow with depth.

Sequences are addressed by *slot* (index along the time axis of the batch or the KV cache) and by
*position* (the RoPE position id). Left padding makes them differ: a row's first real token sits at
some slot s > 0 but has position 0, exactly as Hugging Face computes `cumsum(attention_mask) - 1`.
"""

from __future__ import annotations

from typing import Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prime_jax.models.config import DecoderConfig

KVCache = dict  # {"k": [L, B, S_max, kv_heads, head_dim], "v": same}, in the compute dtype.

_MASKED = -0.7 * float(np.finfo(np.float32).max)  # finite, so fully padded query rows stay NaN-free


def _param(init, *axes):
  return nn.with_logical_partitioning(init, axes)


def rope_inv_freq(config: DecoderConfig) -> np.ndarray:
  """[head_dim // 2] inverse frequencies (radians per position), with the configured scaling."""
  d = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
  rs = config.rope_scaling
  if rs is None or rs.rope_type == "default":
    return inv_freq.astype(np.float32)
  if rs.rope_type == "linear":
    return (inv_freq / rs.factor).astype(np.float32)
  # llama3: keep high frequencies, divide low ones by `factor`, interpolate in between.
  low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
  high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq)
  smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
      rs.high_freq_factor - rs.low_freq_factor
  )
  smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
  is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(config: DecoderConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin tables [B, S, head_dim] (float32) for integer `positions` [B, S]."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(rope_inv_freq(config))
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, S, heads, head_dim] with the half-split (`rotate_half`) convention of HF."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", _param(nn.initializers.ones, "embed"), (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale * x32.astype(self.dtype)).astype(self.dtype)


def _flat_init(init, flat_dims: int):
  """`init` drawn as the 2-D matrix [prod(shape[:flat_dims]), prod(shape[flat_dims:])] and
  reshaped, i.e. the values `nn.DenseGeneral` gives the same param (bias: flat_dims=0)."""

  def flat(key, shape, dtype=jnp.float32):
    lead, rest = int(np.prod(shape[:flat_dims])), int(np.prod(shape[flat_dims:]))
    return init(key, (lead, rest) if flat_dims else (rest,), dtype).reshape(shape)

  return flat


class HeadsProjection(nn.Module):
  """x [B, S, hidden] -> [B, S, heads, head_dim] (`q_proj` / `k_proj` / `v_proj`).

  The params and values of `nn.DenseGeneral((heads, head_dim))` (kernel [hidden, heads,
  head_dim], bias [heads, head_dim]), created 3-D with `self.param` so their logical boxes never
  hold a reshaped 2-D array (DenseGeneral's does, which breaks under a mesh + rules context).
  """

  heads: int
  heads_axis: str
  config: DecoderConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dtype, pdtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kernel = self.param(
        "kernel",
        _param(_flat_init(nn.initializers.normal(0.02), 1), "embed", self.heads_axis, "head_dim"),
        (x.shape[-1], self.heads, c.head_dim),
        pdtype,
    )
    # = einsum("bsh,hnd->bsnd"), as the same dot_general DenseGeneral runs (same rounding).
    out = jax.lax.dot_general(
        x.astype(dtype), kernel.astype(dtype), (((x.ndim - 1,), (0,)), ((), ()))
    )
    if c.qkv_bias:
      bias = self.param(
          "bias",
          _param(_flat_init(nn.initializers.zeros, 0), self.heads_axis, "head_dim"),
          (self.heads, c.head_dim),
          pdtype,
      )
      out = out + bias.astype(dtype)
    return nn.with_logical_constraint(out, ("batch", "length", self.heads_axis, "head_dim"))


class OutProjection(nn.Module):
  """[B, S, heads, head_dim] -> [B, S, hidden] (`o_proj`): `nn.DenseGeneral(hidden, axis=(-2, -1),
  use_bias=False)`'s kernel [heads, head_dim, hidden] and values."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dtype, pdtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kernel = self.param(
        "kernel",
        _param(_flat_init(nn.initializers.normal(0.02), 2), "heads", "head_dim", "embed"),
        (c.num_heads, c.head_dim, c.hidden_size),
        pdtype,
    )
    # = einsum("bsnd,ndh->bsh"), as DenseGeneral's dot_general.
    return jax.lax.dot_general(
        x.astype(dtype), kernel.astype(dtype), (((x.ndim - 2, x.ndim - 1), (0, 1)), ((), ()))
    )


class Attention(nn.Module):
  config: DecoderConfig

  @nn.compact
  def __call__(self, x, cos, sin, attn_mask, layer_cache, cache_offset):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    q = apply_rope(HeadsProjection(c.num_heads, "heads", c, name="q_proj")(x), cos, sin)
    k = apply_rope(HeadsProjection(c.num_kv_heads, "kv_heads", c, name="k_proj")(x), cos, sin)
    v = HeadsProjection(c.num_kv_heads, "kv_heads", c, name="v_proj")(x)

    new_cache = None
    if layer_cache is not None:
      # Write this chunk's keys/values at slots [offset, offset + S) and attend over the whole cache.
      kv_axes = ("batch", "length", "kv_heads", "head_dim")
      k = nn.with_logical_constraint(
          jax.lax.dynamic_update_slice_in_dim(
              layer_cache[0], k.astype(layer_cache[0].dtype), cache_offset, axis=1
          ),
          kv_axes,
      )
      v = nn.with_logical_constraint(
          jax.lax.dynamic_update_slice_in_dim(
              layer_cache[1], v.astype(layer_cache[1].dtype), cache_offset, axis=1
          ),
          kv_axes,
      )
      new_cache = (k, v)

    b, s = q.shape[:2]
    groups = c.num_heads // c.num_kv_heads
    q = q.reshape(b, s, c.num_kv_heads, groups, c.head_dim)
    scores = jnp.einsum(
        "bsngd,btnd->bngst", q, k.astype(dtype), preferred_element_type=jnp.float32
    ) / np.sqrt(c.head_dim)
    scores = jnp.where(attn_mask[:, None, None, :, :], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    out = jnp.einsum("bngst,btnd->bsngd", probs, v.astype(dtype))
    out = nn.with_logical_constraint(
        out.reshape(b, s, c.num_heads, c.head_dim), ("batch", "length", "heads", "head_dim")
    )
    return OutProjection(c, name="o_proj")(out), new_cache


class MLP(nn.Module):
  config: DecoderConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dense = lambda feats, axes, name: nn.Dense(
        feats,
        use_bias=False,
        dtype=jnp.dtype(c.dtype),
        param_dtype=jnp.dtype(c.param_dtype),
        kernel_init=_param(nn.initializers.normal(0.02), *axes),
        name=name,
    )
    gate = dense(c.intermediate_size, ("embed", "mlp"), "gate_proj")(x)
    up = dense(c.intermediate_size, ("embed", "mlp"), "up_proj")(x)
    hidden = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "mlp"))
    return dense(c.hidden_size, ("mlp", "embed"), "down_proj")(hidden)


class DecoderLayer(nn.Module):
  """Pre-norm block; scanned over layers, so it takes and returns the residual stream as carry."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x, layer_cache, cos, sin, attn_mask, cache_offset):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    h, new_cache = Attention(c, name="self_attn")(
        RMSNorm(c.rms_norm_eps, dtype, name="input_layernorm")(x),
        cos,
        sin,
        attn_mask,
        layer_cache,
        cache_offset,
    )
    x = x + h
    x = x + MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, dtype, name="post_attention_layernorm")(x))
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    return x, new_cache


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Decoder(nn.Module):
  """Causal decoder. `__call__` returns final-normed hidden states; `logits` maps them to the vocab."""

  config: DecoderConfig

  def setup(self):
    c = self.config
    layer = DecoderLayer
    if c.remat != "none":
      layer = nn.remat(layer, policy=_REMAT_POLICIES[c.remat], prevent_cse=False)
    self.embed_tokens = nn.Embed(
        c.vocab_size,
        c.hidden_size,
        dtype=jnp.dtype(c.dtype),
        param_dtype=jnp.dtype(c.param_dtype),
        embedding_init=_param(nn.initializers.normal(0.02), "vocab", "embed"),
    )
    self.layers = nn.scan(
        layer,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=c.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(c)
    self.norm = RMSNorm(c.rms_norm_eps, jnp.dtype(c.dtype))
    if not c.tie_embeddings:
      self.lm_head = nn.Dense(
          c.vocab_size,
          use_bias=False,
          dtype=jnp.dtype(c.dtype),
          param_dtype=jnp.dtype(c.param_dtype),
          kernel_init=_param(nn.initializers.normal(0.02), "embed", "vocab"),
      )
    if c.value_head:  # zero-initialised: PPO starts from V = 0 rather than from noise
      self.value_proj = nn.Dense(
          1,
          dtype=jnp.float32,
          param_dtype=jnp.dtype(c.param_dtype),
          kernel_init=_param(nn.initializers.zeros, "embed", None),
          bias_init=_param(nn.initializers.zeros, None),
      )

  def __call__(
      self,
      tokens: jax.Array,
      positions: jax.Array,
      kv_valid: jax.Array,
      cache: Optional[KVCache] = None,
      cache_offset: jax.Array | int = 0,
  ):
    """Runs the decoder on a chunk of S tokens.

    Args:
      tokens: [B, S] int token ids.
      positions: [B, S] int RoPE position ids.
      kv_valid: [B, S_kv] bool, which key slots hold real tokens (S_kv = S without a cache,
        the cache length with one). A query at slot q attends to valid keys at slots <= q.
      cache: optional KV cache (see `init_cache`); the chunk is written at `cache_offset`.
      cache_offset: slot of the chunk's first token in the cache (scalar int).
    Returns:
      (hidden [B, S, hidden_size] in the compute dtype, updated cache or None).
    """
    chex.assert_rank([tokens, positions, kv_valid], 2)
    chex.assert_equal_shape([tokens, positions])
    b, s = tokens.shape
    s_kv = kv_valid.shape[1]
    if cache is None and s_kv != s:
      raise ValueError(f"without a cache kv_valid must cover the S={s} tokens, got S_kv={s_kv}")
    q_slot = cache_offset + jnp.arange(s)
    attn_mask = (jnp.arange(s_kv)[None, :] <= q_slot[:, None])[None] & kv_valid[:, None, :]
    cos, sin = rope_tables(self.config, positions)
    x = self.embed_tokens(tokens)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    layer_cache = None if cache is None else (cache["k"], cache["v"])
    x, new_cache = self.layers(x, layer_cache, cos, sin, attn_mask, cache_offset)
    x = self.norm(x)
    return x, (None if new_cache is None else {"k": new_cache[0], "v": new_cache[1]})

  def forward_logits(self, tokens: jax.Array, positions: jax.Array, kv_valid: jax.Array):
    """Full [B, S, vocab] float32 logits without a cache (tests, init; training scores in chunks)."""
    hidden = self(tokens, positions, kv_valid)[0]
    if self.config.value_head:
      self.values(hidden)  # creates the head's params at init
    return self.logits(hidden)

  def values(self, hidden: jax.Array) -> jax.Array:
    """[..., hidden_size] -> [...] float32 state values (needs `config.value_head`)."""
    return self.value_proj(hidden.astype(jnp.float32))[..., 0]

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., hidden_size] -> [..., vocab] logits in float32."""
    if self.config.tie_embeddings:
      out = self.embed_tokens.attend(hidden)
    else:
      out = self.lm_head(hidden)
    axes = ("batch",) + ("length",) * (out.ndim - 2) + ("vocab",)
    return nn.with_logical_constraint(out.astype(jnp.float32), axes)


def init_cache(config: DecoderConfig, batch: int, length: int, dtype=None) -> KVCache:
  """A zeroed KV cache for `batch` rows and `length` slots."""
  shape = (config.num_layers, batch, length, config.num_kv_heads, config.head_dim)
  dtype = jnp.dtype(dtype or config.dtype)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def init_params(config: DecoderConfig, rng: jax.Array):
  """Random params as a plain pytree (logical-axis boxes removed)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = Decoder(config).init(
      rng, tokens, tokens, jnp.ones((1, 1), bool), method=Decoder.forward_logits
  )
  return nn.unbox(variables["params"])


def param_logical_axes(config: DecoderConfig):
  """Pytree of `PartitionSpec`s of logical axis names, shaped like the params (nothing allocated)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  abstract = jax.eval_shape(
      lambda: Decoder(config).init(
          jax.random.key(0), tokens, tokens, jnp.ones((1, 1), bool), method=Decoder.forward_logits
      )
  )
  return nn.get_partition_spec(abstract)["params"]


def positions_from_mask(valid: jax.Array) -> jax.Array:
  """RoPE positions [B, S] for a left/right-padded batch: count of real tokens before each slot."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
