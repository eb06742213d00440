"""One Flax Linen causal decoder (LLaMA / Qwen2 family) for policy, reference and implicit PRM.

Pure functional: `Decoder(config).apply({"params": params}, ...)` with a plain params pytree;
nothing is stored in the module. Layers run under `nn.scan` with params stacked on a leading
`layers` axis, so compile time does not grow with depth. The sampler's decode step applies the same
`DecoderLayer` to one layer's params at a time with a `LayerCache` (`prime_jax.models.decoding`):
a scan would slice every layer's weights and cache out of the stacked arrays at every token.

Sequences are addressed by *slot* (index along the time axis of the batch or the KV cache) and by
*position* (the RoPE position id). Left padding makes them differ: a row's first real token sits at
some slot s > 0 but has position 0, exactly as Hugging Face computes `cumsum(attention_mask) - 1`.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prime_jax.models.attention import (
    chunk_attention,
    decode_attention,
    keys_transposed,
    write_token,
)
from prime_jax.models.config import DecoderConfig

# The sampler's KV cache: one (keys, values) pair per layer in the compute dtype (separate buffers,
# so a decode step updates and reads each in place). Values are [B, kv_heads, S, head_dim]; keys
# the same, or [B, kv_heads, head_dim, S] for a decode attention that reads them transposed
# (`prime_jax.models.attention.keys_transposed`).
KVCache = tuple
CACHE_AXES = ("batch", "kv_heads", "length", "head_dim")  # logical axes of values (and keys)
KEYS_T_AXES = ("batch", "kv_heads", "head_dim", "length")  # of transposed keys


def cache_axes(impl: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Logical axes of one layer's (keys, values) for the decode attention `impl`."""
  return (KEYS_T_AXES if keys_transposed(impl) else CACHE_AXES), CACHE_AXES


def chunk_to_cache_layout(part: jax.Array, axes: tuple[str, ...]) -> jax.Array:
  """A chunk's keys or values as `Attention` returns them, [B, S, kv_heads, head_dim], transposed
  to a cache array's logical `axes` (one of `cache_axes(impl)`): what a prefill stores."""
  chunk_axes = ("batch", "length", "kv_heads", "head_dim")
  return part.transpose([chunk_axes.index(a) for a in axes])


@struct.dataclass
class LayerCache:
  """One layer's cache in a decode step: one new token per row, written then attended from.

  k, v: keys and values in the layout of `cache_axes(impl)`. slots: [B] int, where row b's token
  goes (its position in the ragged layout, where a row's context starts at slot 0); a slot outside
  [0, S) writes nothing.
  lengths: [B] int, row b attends to slots [0, lengths[b]) (its token's slot included).
  block / impl: `prime_jax.models.attention.decode_attention`'s.
  """

  k: jax.Array
  v: jax.Array
  slots: jax.Array
  lengths: jax.Array
  block: int = struct.field(pytree_node=False, default=256)
  impl: str = struct.field(pytree_node=False, default="xla")


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
  def __call__(self, x, cos, sin, kv):
    """x [B, S, hidden] -> ([B, S, hidden], (keys, values)).

    kv is either a [B, S, S] bool mask (attention within the chunk; the chunk's keys and values
    [B, S, kv_heads, head_dim] are returned for a prefill to store) or a `LayerCache` (S = 1: the
    token is written into the cache, which is returned updated, and attends over its filled slots).
    """
    c = self.config
    q = apply_rope(HeadsProjection(c.num_heads, "heads", c, name="q_proj")(x), cos, sin)
    k = apply_rope(HeadsProjection(c.num_kv_heads, "kv_heads", c, name="k_proj")(x), cos, sin)
    v = HeadsProjection(c.num_kv_heads, "kv_heads", c, name="v_proj")(x)
    if isinstance(kv, LayerCache):
      k, v = (
          nn.with_logical_constraint(
              write_token(cache, new[:, 0], kv.slots, slot_axis=axes.index("length")), axes
          )
          for cache, new, axes in zip((kv.k, kv.v), (k, v), cache_axes(kv.impl))
      )
      out = decode_attention(q[:, 0], k, v, kv.lengths, block=kv.block, impl=kv.impl)[:, None]
    else:
      out = chunk_attention(q, k, v, kv)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
    return OutProjection(c, name="o_proj")(out), (k, v)


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
  """Pre-norm block; scanned over layers, so it takes and returns the residual stream as carry.

  Returns (x, (keys, values)): see `Attention`.
  """

  config: DecoderConfig

  @nn.compact
  def __call__(self, x, cos, sin, kv):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    h, kv = Attention(c, name="self_attn")(
        RMSNorm(c.rms_norm_eps, dtype, name="input_layernorm")(x), cos, sin, kv
    )
    x = x + h
    x = x + MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, dtype, name="post_attention_layernorm")(x))
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    return x, kv


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
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
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

  def __call__(self, tokens: jax.Array, positions: jax.Array, kv_valid: jax.Array):
    """Runs the decoder on S tokens, each attending to the valid tokens at slots <= its own.

    Args:
      tokens: [B, S] int token ids.
      positions: [B, S] int RoPE position ids.
      kv_valid: [B, S] bool, which slots hold real tokens.
    Returns:
      (hidden [B, S, hidden_size] in the compute dtype, {"k", "v"}: every layer's keys and values
      [L, B, S, kv_heads, head_dim], which a prefill stores; unused, XLA drops them).
    """
    chex.assert_rank([tokens, positions, kv_valid], 2)
    chex.assert_equal_shape([tokens, positions, kv_valid])
    s = tokens.shape[1]
    attn_mask = (jnp.arange(s)[None, :] <= jnp.arange(s)[:, None])[None] & kv_valid[:, None, :]
    cos, sin = rope_tables(self.config, positions)
    x, (k, v) = self.layers(self.embed(tokens), cos, sin, attn_mask)
    return self.norm(x), {"k": k, "v": v}

  def embed(self, tokens: jax.Array) -> jax.Array:
    """[B, S] token ids -> [B, S, hidden_size] embeddings in the compute dtype."""
    return nn.with_logical_constraint(self.embed_tokens(tokens), ("batch", "length", "act_embed"))

  def head(self, x: jax.Array) -> jax.Array:
    """The last layer's residual stream [..., hidden_size] -> float32 logits [..., vocab]
    (final norm, then `logits`): the sampler's layer loop ends here."""
    return self.logits(self.norm(x))

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


def cache_shapes(
    config: DecoderConfig, batch: int, length: int, impl: str = "xla"
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Shapes of one layer's (keys, values) for `batch` rows and `length` slots (`cache_axes`)."""
  size = dict(batch=batch, kv_heads=config.num_kv_heads, length=length, head_dim=config.head_dim)
  k_axes, v_axes = cache_axes(impl)
  return tuple(size[a] for a in k_axes), tuple(size[a] for a in v_axes)


def init_cache(
    config: DecoderConfig, batch: int, length: int, dtype=None, *, impl: str = "xla"
) -> KVCache:
  """A zeroed KV cache for `batch` rows and `length` slots in the layout of the decode attention
  `impl`: per layer (k, v), see `KVCache`."""
  dtype = jnp.dtype(dtype or config.dtype)
  k_shape, v_shape = cache_shapes(config, batch, length, impl)
  return tuple(
      (jnp.zeros(k_shape, dtype), jnp.zeros(v_shape, dtype)) for _ in range(config.num_layers)
  )


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
