"""The update step's passes of a model over its batch, one micro-batch at a time.

`score_batch` runs the forward passes without gradient (old log-probs, the reference, a PRM
re-score), `optimizer_step` one optimiser step of the PRM or the policy on a mini-batch: its
forward+backward passes (`accumulate_gradients`) sum gradients over micro-batches so only one
micro-batch's activations are live. Every forward turns hidden states into log-probs chunk by chunk
(`prime_jax.scoring.token_logprobs`), so no [N, T, vocab] array exists.

The helpers below cut a batch into stacked parts ([N, ...] -> [parts, N / parts, ...]) and keep
those parts spread over the data-parallel devices inside the scans. (The PRM's *order* of
mini-batches, strided over the shards, is `prime_jax.algo.minibatches`.) INPUT_KEYS in the
docstrings are `update_step.INPUT_KEYS`: the prompt and response tokens and their masks.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from prime_jax.models.config import DecoderConfig
from prime_jax.scoring import token_logprobs
from prime_jax.train_state import TrainState, apply_gradients


class TokenScores(NamedTuple):
  """What one scoring forward gives per response token, each [rows, T] float32, 0 on padding;
  None where it was not asked for."""

  logp: jax.Array
  entropy: Optional[jax.Array] = None
  values: Optional[jax.Array] = None


def batch_sizes(num_rows: int, mini: int, micro: int, what: str) -> tuple[int, int]:
  """Clamps (mini, micro) to the batch and checks they tile it; returns the clamped pair."""
  mini = min(mini, num_rows)
  micro = min(micro, mini)
  if num_rows % mini or mini % micro:
    raise ValueError(
        f"{what}: {num_rows} responses cannot be split into mini-batches of "
        f"{mini} and micro-batches of {micro}"
    )
  return mini, micro


def split_parts(tree, parts: int):
  """[N, ...] leaves -> [parts, N / parts, ...]."""
  return jax.tree_util.tree_map(lambda x: x.reshape((parts, -1) + x.shape[1:]), tree)


def merge_parts(tree):
  """[parts, M, ...] leaves -> [parts * M, ...]."""
  return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def constrain_micro(tree, micro_sharding: Optional[NamedSharding]):
  """Keeps stacked [parts, M, ...] (micro- or mini-)batches spread over the data-parallel devices
  inside the scans: `micro_sharding` is NamedSharding(mesh, P(None, *batch rows)), or None
  without a mesh (then a no-op)."""
  if micro_sharding is None:
    return tree
  return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, micro_sharding), tree)


def score_micro_batch(
    params,
    mb: dict,
    *,
    model_config: DecoderConfig,
    chunk_size: int,
    with_entropy: bool = False,
    with_values: bool = False,
) -> TokenScores:
  """One forward over the rows of `mb` (INPUT_KEYS): their log-probs, and entropy / values when
  asked for. Differentiable in `params`."""
  out = token_logprobs(
      params,
      mb["prompt_tokens"],
      mb["prompt_mask"],
      mb["response_tokens"],
      mb["response_mask"],
      config=model_config,
      chunk_size=chunk_size,
      with_entropy=with_entropy,
      with_values=with_values,
  )
  if not (with_entropy or with_values):
    return TokenScores(logp=out)
  # token_logprobs returns (logp, entropy if asked, values if asked).
  return TokenScores(
      logp=out[0],
      entropy=out[1] if with_entropy else None,
      values=out[-1] if with_values else None,
  )


def score_batch(
    params,
    inputs: dict,
    *,
    rl,
    model_config: DecoderConfig,
    micro_sharding: Optional[NamedSharding] = None,
    with_values: bool = False,
) -> TokenScores:
  """[N, T] log-probs (and values) of the whole batch without gradient, one micro-batch of
  `rl.micro_batch` rows at a time; entropy is None."""
  num_rows = inputs["response_tokens"].shape[0]
  micro = min(rl.micro_batch, num_rows)
  if num_rows % micro:
    raise ValueError(f"{num_rows} responses are not a multiple of micro_batch={micro}")
  micro_batches = constrain_micro(split_parts(inputs, num_rows // micro), micro_sharding)
  score = functools.partial(
      score_micro_batch,
      model_config=model_config,
      chunk_size=rl.score_chunk,
      with_values=with_values,
  )
  return jax.lax.stop_gradient(
      merge_parts(jax.lax.map(lambda mb: score(params, mb), micro_batches))
  )


def accumulate_gradients(loss_fn: Callable, params, micro_batches):
  """Gradient accumulation: (summed gradients, summed loss, stacked aux) of
  `loss_fn(params, mb) -> (loss, aux)` over the stacked micro-batches [parts, M, ...], one
  forward+backward at a time."""

  def body(grads, mb):
    (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
    return jax.tree_util.tree_map(jnp.add, grads, g), (loss, aux)

  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  grads, (losses, aux) = jax.lax.scan(body, zeros, micro_batches)
  return grads, jnp.sum(losses), aux


def optimizer_step(
    state: TrainState,
    mini_batch: dict,
    loss_fn: Callable,
    *,
    optimizer: optax.GradientTransformation,
    parts: int,
    micro_sharding: Optional[NamedSharding] = None,
):
  """One optimiser step on a mini-batch, split into `parts` micro-batches: the gradients of
  `loss_fn(params, micro_batch) -> (loss, aux)` accumulated over them (the caller weights the loss
  so that the sum is the mini-batch's), then applied: (state, summed loss, gradient norm, stacked
  aux). The PRM phase and the policy phase both step this way."""
  grads, loss, aux = accumulate_gradients(
      loss_fn, state.params, constrain_micro(split_parts(mini_batch, parts), micro_sharding)
  )
  return apply_gradients(state, grads, optimizer), loss, optax.tree.norm(grads), aux
