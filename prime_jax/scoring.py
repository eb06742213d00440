"""Per-token log-probs of given responses: old log-probs, the reference model and the implicit PRM.

Layout. A batch holds N prompts [N, P] (left-padded) and N responses [N, T] (right-padded). The
model runs once on seq = concat(prompt, response) [N, P + T]; RoPE positions count real tokens
only, so the padding between a short prompt and its response never shifts positions. The logits at
slot P - 1 + t predict response token t, so response token 0 is scored from the last prompt slot.

Memory. The [N, T, vocab] logits are never materialised in float32 at once: hidden states are
split into chunks of `chunk_size` response positions and a `lax.map` computes each chunk's logits,
log-softmax and gather. Each chunk is rematerialised under `jax.grad`, so the backward pass also
holds one chunk of logits at a time (vocab 152k x 4k tokens fits).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import Decoder, positions_from_mask
from prime_jax.sharding import as_rules


def pad_sequences(
    seqs: Sequence[Sequence[int]], *, length: Optional[int] = None, pad_id: int = 0, left: bool
) -> tuple[np.ndarray, np.ndarray]:
  """Packs token lists into (tokens [B, length] int32, valid [B, length] bool).

  `left=True` left-pads (prompts), `left=False` right-pads (responses). `length` defaults to the
  longest sequence.
  """
  longest = max((len(s) for s in seqs), default=0)
  length = longest if length is None else length
  if longest > length:
    raise ValueError(f"a sequence of {longest} tokens does not fit length {length}")
  tokens = np.full((len(seqs), length), pad_id, np.int32)
  valid = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    cols = slice(length - len(s), length) if left else slice(0, len(s))
    tokens[i, cols] = s
    valid[i, cols] = True
  return tokens, valid


def token_logprobs(
    params,
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    response_tokens: jax.Array,
    response_mask: jax.Array,
    *,
    config: DecoderConfig,
    chunk_size: int = 256,
    with_entropy: bool = False,
    with_values: bool = False,
):
  """Log-prob of every response token under the model, at temperature 1.

  Differentiable wrt `params`; can be called inside a bigger jitted graph and under `jax.grad`.

  Args:
    params: decoder params.
    prompt_tokens: [N, P] int, left-padded; every row needs at least one real token.
    prompt_valid: [N, P] bool (or 0/1), True on real prompt tokens.
    response_tokens: [N, T] int, right-padded.
    response_mask: [N, T] bool (or 0/1), True on real response tokens.
    config: the decoder's config.
    chunk_size: response positions per logits chunk (memory ~ N * chunk_size * vocab * 4 bytes).
    with_entropy: also return the entropy (nats) of each position's predictive distribution.
    with_values: also return the value head's V(y_<t) at each response position (needs
      `config.value_head`); it reads the same hidden states, so it costs no extra forward.
  Returns:
    logprobs [N, T] float32 (0 where response_mask is 0) when no extra is asked for; else the
    tuple (logprobs, *extras) with entropy then values, each [N, T] float32, 0 on padding.

  Jitted. Called while a function is traced under `prime_jax.sharding.activation_rules` (the
  update step), the decoder's activation constraints follow those rules; the rules in effect are a
  static argument of the jit, so programs traced under different layouts are never mixed up.
  """
  return _token_logprobs(
      params,
      prompt_tokens,
      prompt_valid,
      response_tokens,
      response_mask,
      config=config,
      chunk_size=chunk_size,
      with_entropy=with_entropy,
      with_values=with_values,
      rules=as_rules(nn.get_logical_axis_rules()),
  )


@functools.partial(
    jax.jit, static_argnames=("config", "chunk_size", "with_entropy", "with_values", "rules")
)
def _token_logprobs(
    params,
    prompt_tokens,
    prompt_valid,
    response_tokens,
    response_mask,
    *,
    config,
    chunk_size,
    with_entropy,
    with_values,
    rules,
):
  del rules  # a cache key only: the decoder reads the rules in effect while this is traced
  check = dict(exception_type=ValueError)
  chex.assert_rank(
      [prompt_tokens, prompt_valid, response_tokens, response_mask],
      2,
      custom_message="prompt and response arrays must be [N, P] and [N, T]",
      **check,
  )
  chex.assert_equal_shape(
      [prompt_tokens, prompt_valid],
      custom_message="prompt_tokens and prompt_valid differ in shape",
      **check,
  )
  chex.assert_equal_shape(
      [response_tokens, response_mask],
      custom_message="response_tokens and response_mask differ in shape",
      **check,
  )
  chex.assert_equal_shape_prefix(
      [prompt_tokens, response_tokens],
      1,
      custom_message="prompts and responses differ in batch size",
      **check,
  )
  n, p = prompt_tokens.shape
  t = response_tokens.shape[1]
  if p == 0 or t == 0:
    raise ValueError(f"prompts [N, P] and responses [N, T] need P, T >= 1, got P={p}, T={t}")
  response_mask = response_mask.astype(bool)
  tokens = jnp.concatenate([prompt_tokens, response_tokens], axis=1).astype(jnp.int32)
  valid = jnp.concatenate([prompt_valid.astype(bool), response_mask], axis=1)
  model = Decoder(config)
  hidden, _ = model.apply({"params": params}, tokens, positions_from_mask(valid), valid)
  hidden = hidden[:, p - 1 : p + t - 1]  # [N, T, H]: slot P-1+t predicts response token t

  chunk = min(chunk_size, t)
  num_chunks = -(-t // chunk)
  pad = num_chunks * chunk - t
  targets = jnp.pad(response_tokens.astype(jnp.int32), ((0, 0), (0, pad)))
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  # [num_chunks, N, chunk, ...] so lax.map walks the chunks.
  targets = targets.reshape(n, num_chunks, chunk).swapaxes(0, 1)
  hidden = hidden.reshape(n, num_chunks, chunk, -1).swapaxes(0, 1)

  @functools.partial(jax.checkpoint, prevent_cse=False)  # backward recomputes, never stores, logits
  def score_chunk(params, hidden_chunk, target_chunk):
    logits = model.apply({"params": params}, hidden_chunk, method=Decoder.logits)  # [N, C, V] f32
    log_z = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, target_chunk[..., None], axis=-1)[..., 0]
    if not with_entropy:
      return picked - log_z
    entropy = log_z - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
    return picked - log_z, entropy

  outputs = jax.lax.map(lambda xs: score_chunk(params, *xs), (hidden, targets))

  def unchunk(x):
    return jnp.where(response_mask, x.swapaxes(0, 1).reshape(n, num_chunks * chunk)[:, :t], 0.0)

  extras = ()
  if with_entropy:
    outputs, entropy = outputs
    extras += (unchunk(entropy),)
  if with_values:
    values = model.apply({"params": params}, hidden, method=Decoder.values)  # [C, N, chunk]
    extras += (unchunk(values),)
  return (unchunk(outputs),) + extras if extras else unchunk(outputs)
