"""The policy phase of the update step (docs/algorithm.md, "One RL step", 2.5): PPO-clip over
shuffled mini-batches, gradients accumulated over micro-batches.

`policy_phase` runs `rl.ppo_epochs` passes over the batch, each shuffled into mini-batches of
`rl.mini_batch` rows, one optimiser step per mini-batch. A micro-batch's loss
(`policy_loss_fn`) is `policy_loss.ppo_clip_loss` aggregated by `rl.loss_agg` over its
mini-batch, plus the value loss for the ppo estimator, minus the entropy bonus, plus a k3 KL
term to the reference when `rl.kl_coef`.

`update_step` calls `policy_phase` with the static keywords it binds before `jax.jit` (`rl`, the
decoder's `model_config`, the policy's optimiser, the micro-batches' sharding).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from prime_jax.algo.model_passes import (
    batch_sizes,
    optimizer_step,
    score_micro_batch,
    split_parts,
)
from prime_jax.algo.policy_loss import aggregate_token_loss, ppo_clip_loss, value_loss
from prime_jax.algo.token_ops import masked_mean
from prime_jax.models.config import DecoderConfig
from prime_jax.train_state import TrainState


def policy_loss_fn(
    params, mb: dict, *, rl, model_config: DecoderConfig, denominator, num_tokens
) -> tuple[jax.Array, dict]:
  """(loss, metrics) of micro-batch `mb` (INPUT_KEYS, old_logp, advantages; returns and
  old_values for PPO; ref_logp with a KL term): PPO-clip with `rl.loss_agg` over the mini-batch's
  `denominator`, plus the value loss (ppo estimator), minus the entropy bonus, plus k3 KL."""
  is_ppo = rl.estimator == "ppo"
  scores = score_micro_batch(
      params,
      mb,
      model_config=model_config,
      chunk_size=rl.score_chunk,
      with_entropy=True,
      with_values=is_ppo,
  )
  logp, entropy = scores.logp, scores.entropy
  mask = mb["response_mask"]
  pg_loss, m = ppo_clip_loss(
      logp,
      mb["old_logp"],
      mb["advantages"],
      mask,
      clip_eps=rl.clip_eps,
      agg=rl.loss_agg,
      denominator=denominator,
  )
  total = pg_loss
  if is_ppo:
    v_loss, v_metrics = value_loss(
        scores.values,
        mb["returns"],
        mask,
        old_values=mb["old_values"],
        clip_eps=rl.value_clip_eps,
        agg="token-mean",
        denominator=num_tokens,
    )
    total += rl.value_coef * v_loss
    m = dict(m, value_loss=v_loss, **v_metrics)
  if rl.entropy_coef:
    total -= rl.entropy_coef * aggregate_token_loss(
        entropy, mask, agg=rl.loss_agg, denominator=denominator
    )
  if rl.kl_coef:  # k3 ("low-variance") estimate of KL(policy || ref), as in veRL
    log_ratio = mb["ref_logp"] - logp
    kl = jnp.exp(log_ratio) - 1 - log_ratio
    total += rl.kl_coef * aggregate_token_loss(kl, mask, agg=rl.loss_agg, denominator=denominator)
  m = dict(m, entropy=masked_mean(jax.lax.stop_gradient(entropy), mask), pg_loss=pg_loss)
  return total, m


def policy_mini_step(
    state: TrainState,
    mb: dict,
    *,
    rl,
    model_config: DecoderConfig,
    optimizer: optax.GradientTransformation,
    mini: int,
    micro: int,
    micro_sharding: Optional[NamedSharding] = None,
):
  """One policy optimiser step on a mini-batch of `mini` rows, accumulated over micro-batches of
  `micro`: (state, (loss, gradient norm, stacked micro-batch metrics))."""
  mask = mb["response_mask"]
  num_tokens = jnp.maximum(jnp.sum(mask), 1)
  if rl.loss_agg == "token-mean":
    denominator = num_tokens
  else:
    denominator = jnp.maximum(jnp.sum(jnp.any(mask, axis=1)), 1)
  loss_fn = functools.partial(
      policy_loss_fn,
      rl=rl,
      model_config=model_config,
      denominator=denominator,
      num_tokens=num_tokens,
  )
  state, loss, grad_norm, m = optimizer_step(
      state,
      mb,
      loss_fn,
      optimizer=optimizer,
      parts=mini // micro,
      micro_sharding=micro_sharding,
  )
  return state, (loss, grad_norm, m)


def policy_phase(
    state: TrainState,
    data: dict,
    rng,
    *,
    rl,
    model_config: DecoderConfig,
    optimizer: optax.GradientTransformation,
    micro_sharding: Optional[NamedSharding] = None,
):
  """`rl.ppo_epochs` passes of PPO over the batch, each shuffled (by `rng`) into mini-batches of
  `rl.mini_batch` rows: (state, metrics `policy/*`).

  Args:
    state: the policy's TrainState.
    data: INPUT_KEYS, acc [N], old_logp and advantages [N, T]; returns and old_values [N, T] for
      the ppo estimator; ref_logp [N, T] when `rl.kl_coef`.
  """
  num_rows = data["acc"].shape[0]
  mini, micro = batch_sizes(num_rows, rl.mini_batch, rl.micro_batch, "policy")
  mini_step = functools.partial(
      policy_mini_step,
      rl=rl,
      model_config=model_config,
      optimizer=optimizer,
      mini=mini,
      micro=micro,
      micro_sharding=micro_sharding,
  )
  outs = []
  for _ in range(rl.ppo_epochs):
    rng, key = jax.random.split(rng)
    perm = jax.random.permutation(key, num_rows)
    shuffled = jax.tree_util.tree_map(lambda x: x[perm], data)
    state, out = jax.lax.scan(mini_step, state, split_parts(shuffled, num_rows // mini))
    outs.append(out)
  losses, grad_norms, m = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs)
  reduce = {"ratio_min": jnp.min, "ratio_max": jnp.max}
  metrics = {f"policy/{k}": reduce.get(k, jnp.mean)(v) for k, v in m.items()}
  metrics.update({"policy/loss": jnp.mean(losses), "policy/grad_norm": jnp.mean(grad_norms)})
  return state, metrics
