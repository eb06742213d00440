"""Attention math of the decoder: within a chunk of tokens, and one new token per row against a cache.

`chunk_attention` serves training, scoring and prefill: queries and keys are the same S tokens
(or a chunk and what precedes it), masked by an explicit [B, S, S_kv] boolean mask.

`decode_attention` serves the sampler's decode step: one query per row against that row's KV
cache, attending to the filled slots [0, length) only, so a step costs what has been written and
not the cache's allocated length. A layer's values are [B, kv_heads, S, head_dim]: per row and kv
head one contiguous [S, head_dim] matrix, so the decode matmuls batch over the two leading dims
without a transpose. Its keys are laid out for the implementation (`keys_transposed`): for "xla"
[B, kv_heads, head_dim, S], so the scores q @ k^T read keys as a plain [head_dim, S] operand; for
the Pallas kernels [B, kv_heads, S, head_dim], whose [B * kv_heads, S, head_dim] view (a free
reshape) is the kernel's layout. Two implementations, chosen by `impl`:

- "xla": pure JAX, the reference. Keys are read in blocks of `block` slots under a loop whose trip
  count is the number of blocks holding a filled slot of some row (online softmax across blocks).
- "pallas_gpu" / "pallas_interpret": `jax.experimental.pallas.ops.gpu.decode_attention.mqa`, a
  Triton kernel (GPU only) that skips the blocks past each row's length; "pallas_interpret" runs
  the same kernel in Pallas' interpreter (any backend, slow: for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DECODE_IMPLS = ("xla", "pallas_gpu", "pallas_interpret")

# Finite, so a row with no valid key stays NaN-free (its output is then a mean of values).
MASKED = -0.7 * float(np.finfo(np.float32).max)


def chunk_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked softmax attention of a chunk.

  Args:
    q: [B, S, heads, head_dim] queries in the compute dtype.
    k, v: [B, S_kv, kv_heads, head_dim] keys and values (heads a multiple of kv_heads).
    mask: [B, S, S_kv] bool, True where a query may attend to a key.
  Returns:
    [B, S, heads, head_dim] in q's dtype. Scores and softmax are float32.
  """
  b, s, heads, d = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, s, kv_heads, heads // kv_heads, d)
  scores = jnp.einsum(
      "bsngd,btnd->bngst", q, k.astype(q.dtype), preferred_element_type=jnp.float32
  ) / np.sqrt(d)
  scores = jnp.where(mask[:, None, None, :, :], scores, MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  out = jnp.einsum("bngst,btnd->bsngd", probs, v.astype(q.dtype))
  return out.reshape(b, s, heads, d)


def keys_transposed(impl: str) -> bool:
  """Whether `impl` keeps a layer's keys as [B, kv_heads, head_dim, S] (else [B, kv_heads, S,
  head_dim], as the values).

  "xla" does: XLA's CPU backend runs a batched dot whose right operand is contracted over its
  minor dim (q @ k^T with keys [S, head_dim]) several times slower than one whose operand is
  [head_dim, S]: in a profile of the sampler benchmark's short case the scores took 0.65 ms a layer
  against 0.12 ms for the equally sized probs @ v, and 0.26 ms with transposed keys
  (`experiments/results/sampler/results.md`). The Pallas kernels read [S, head_dim] keys.
  """
  return impl == "xla"


def write_token(cache: jax.Array, new: jax.Array, slots: jax.Array, *, slot_axis: int) -> jax.Array:
  """Writes one token per row into a layer's keys or values, in place when `cache` is a loop carry.

  Args:
    cache: [B, kv_heads, ...] with the S slots on `slot_axis` (2 or 3) and head_dim on the other.
    new: [B, kv_heads, head_dim], the new token's keys (or values).
    slots: [B] int, the slot of row b's token; a slot outside [0, S) writes nothing.
  Returns:
    The cache with new[b] at row b, slot slots[b].
  """
  at = (jnp.arange(cache.shape[0]),) + (slice(None),) * (slot_axis - 1) + (slots,)
  return cache.at[at].set(new.astype(cache.dtype), mode="drop")


def decode_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    lengths: jax.Array,
    *,
    block: int,
    impl: str = "xla",
) -> jax.Array:
  """One query per row against its cache, over the filled slots only.

  Args:
    q: [B, heads, head_dim] queries in the compute dtype.
    k: a layer's keys, [B, kv_heads, head_dim, S] when `keys_transposed(impl)`, else
      [B, kv_heads, S, head_dim]; S a multiple of `block` (or S <= block).
    v: its values, [B, kv_heads, S, head_dim].
    lengths: [B] int, row b attends to slots [0, lengths[b]); >= 1 for rows whose output is used.
    block: slots per block of keys read together.
    impl: one of DECODE_IMPLS.
  Returns:
    [B, heads, head_dim] in q's dtype.
  """
  if impl == "xla":
    return _blocked_attention(q, k, v, lengths, block=block)
  if impl in ("pallas_gpu", "pallas_interpret"):
    return _pallas_attention(q, k, v, lengths, block=block, interpret=impl == "pallas_interpret")
  raise ValueError(f"unknown decode attention {impl!r}; choose one of {DECODE_IMPLS}")


def _blocked_attention(q, k, v, lengths, *, block):
  b, kv_heads, s, d = v.shape  # k: [B, kv_heads, d, S]
  heads = q.shape[1]
  q = q.reshape(b, kv_heads, heads // kv_heads, d)
  block = min(block, s)
  if s % block:
    raise ValueError(f"cache length {s} is not a multiple of the attention block {block}")

  def one_block(start, carry):
    out, top, total = carry  # [B, n, g, d] f32 unnormalised output, [B, n, g] running max, sum
    k_blk = jax.lax.dynamic_slice_in_dim(k, start, block, axis=3)
    v_blk = jax.lax.dynamic_slice_in_dim(v, start, block, axis=2)
    scores = jnp.einsum(
        "bngd,bndc->bngc", q, k_blk.astype(q.dtype), preferred_element_type=jnp.float32
    ) / np.sqrt(d)
    valid = start + jnp.arange(block)[None, :] < lengths[:, None]  # [B, block]
    scores = jnp.where(valid[:, None, None, :], scores, MASKED)
    new_top = jnp.maximum(top, scores.max(axis=-1))
    rescale = jnp.exp(top - new_top)
    probs = jnp.exp(scores - new_top[..., None])
    out = out * rescale[..., None] + jnp.einsum(
        "bngc,bncd->bngd",
        probs.astype(q.dtype),
        v_blk.astype(q.dtype),
        preferred_element_type=jnp.float32,
    )
    return out, new_top, total * rescale + probs.sum(axis=-1)

  shape = q.shape[:-1]
  carry = (jnp.zeros(q.shape, jnp.float32), jnp.full(shape, MASKED), jnp.zeros(shape))
  if block == s:
    out, _, total = one_block(0, carry)
  else:
    # Only the blocks holding a filled slot of some row: the trip count follows the longest row.
    num_blocks = (jnp.max(lengths) + block - 1) // block
    out, _, total = jax.lax.fori_loop(0, num_blocks, lambda j, c: one_block(j * block, c), carry)
  return (out / total[..., None]).astype(q.dtype).reshape(b, heads, d)


def _pallas_attention(q, k, v, lengths, *, block, interpret):
  from jax.experimental.pallas.ops.gpu import decode_attention as gpu_decode  # imports Triton

  b, kv_heads, s, d = k.shape
  heads = q.shape[1]
  if s % block:  # `sampling.cache_length` sizes the kernel's caches in whole blocks
    raise ValueError(f"a {s}-slot cache is not a whole number of {block}-slot blocks")
  # One split per block: a split past a row's length is skipped by the kernel, so the work
  # follows each row's filled length.
  mqa = functools.partial(
      gpu_decode.mqa,
      sm_scale=1.0 / np.sqrt(d),
      block_k=block,
      k_splits=s // block,
      interpret=interpret,
  )
  out = mqa(
      q.reshape(b * kv_heads, heads // kv_heads, d),
      k.reshape(b * kv_heads, s, d).astype(q.dtype),
      v.reshape(b * kv_heads, s, d).astype(q.dtype),
      kv_seq_len=jnp.repeat(lengths, kv_heads),
  )
  return out.reshape(b, heads, d).astype(q.dtype)
