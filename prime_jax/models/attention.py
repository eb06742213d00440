"""Attention math of the decoder: within a chunk of tokens, and one new token per row against a cache.

`chunk_attention` serves training, scoring and prefill: queries and keys are the same S tokens
(or a chunk and what precedes it), masked by an explicit [B, S, S_kv] boolean mask.

`decode_attention` serves the sampler's decode step: one query per row against that row's KV
cache, attending to the filled slots [0, length) only, so a step costs what has been written and
not the cache's allocated length. A layer's cache is [B, kv_heads, S, head_dim]: per row and kv
head the keys are one contiguous [S, head_dim] matrix, so the decode matmuls batch over the two
leading dims without a transpose, and a [B * kv_heads, S, head_dim] view (a free reshape) is the
layout of the Pallas decode kernel. Two implementations, chosen by `impl`:

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


def write_token(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
  """Writes one token per row into a layer's cache, in place when `cache` is a loop carry.

  Args:
    cache: [B, kv_heads, S, head_dim].
    new: [B, kv_heads, head_dim], the new token's keys (or values).
    slots: [B] int, the slot of row b's token; a slot outside [0, S) writes nothing.
  Returns:
    The cache with new[b] at [b, :, slots[b]].
  """
  rows = jnp.arange(cache.shape[0])
  return cache.at[rows, :, slots].set(new.astype(cache.dtype), mode="drop")


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
    k, v: [B, kv_heads, S, head_dim] a layer's cache; S a multiple of `block` (or S <= block).
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
  b, kv_heads, s, d = k.shape
  heads = q.shape[1]
  q = q.reshape(b, kv_heads, heads // kv_heads, d)
  block = min(block, s)
  if s % block:
    raise ValueError(f"cache length {s} is not a multiple of the attention block {block}")

  def one_block(start, carry):
    out, top, total = carry  # [B, n, g, d] f32 unnormalised output, [B, n, g] running max, sum
    k_blk = jax.lax.dynamic_slice_in_dim(k, start, block, axis=2)
    v_blk = jax.lax.dynamic_slice_in_dim(v, start, block, axis=2)
    scores = jnp.einsum(
        "bngd,bncd->bngc", q, k_blk.astype(q.dtype), preferred_element_type=jnp.float32
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
