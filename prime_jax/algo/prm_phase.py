"""The PRM phase of the update step (docs/algorithm.md, "One RL step", 2.3): the implicit PRM's
online update over its mini-batches, which also gives the PRM log-probs the process rewards are
computed from.

`prm_phase` walks `rl.prm_mini_batch`-row mini-batches in `rl.prm_batch_order` (the k-th block of
every data-parallel shard, as released, or the k-th contiguous block: `prime_jax.algo.minibatches`),
one optimiser step each, gradients accumulated over micro-batches, for `rl.prm_update`:
  after: each mini-batch's rewards from the PRM as it stood before its own update (one forward);
  before: the whole batch re-scored by the PRM after all the updates (a second forward);
  none: one forward, no update.
The loss is `rl.prm_loss`: the paper's CE (`prime.prm_ce_loss`) or the port's DPO
(`prm_losses.prm_dpo_loss`), whose others' Q of each group come from one forward of the PRM before
the updates, as in the port.

`update_step` calls `prm_phase` with the static keywords it binds before `jax.jit` (`rl`, the
decoder's `model_config`, the PRM's optimiser, the micro-batches' sharding).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from prime_jax.algo.minibatches import merge_minibatches, split_minibatches
from prime_jax.algo.model_passes import (
    batch_sizes,
    constrain_micro,
    merge_parts,
    optimizer_step,
    score_batch,
    score_micro_batch,
)
from prime_jax.algo.prime import implicit_rewards, prm_ce_loss
from prime_jax.algo.prm_losses import prm_dpo_loss, prm_pair_accuracy
from prime_jax.models.config import DecoderConfig
from prime_jax.train_state import TrainState


def prm_order_shards(rl) -> int:
  """The shards the PRM's mini-batches are strided over: the data-parallel shards that also scope
  `batch_norm` (`rl.norm_shards`, whatever `rl.norm_scope`: the released run's 8 workers walk
  their own rows either way), or 1 for `rl.prm_batch_order="contiguous"`."""
  return rl.norm_shards if rl.prm_batch_order == "strided" else 1


def prm_pair_accuracy_of(logp, data: dict, *, n: int):
  """`prm/acc_*`: the pair accuracy of the PRM log-probs `logp` [N, T] on `data` (ref_logp,
  response_mask, acc)."""
  q = implicit_rewards(logp, data["ref_logp"], data["response_mask"])
  return prm_pair_accuracy(jnp.sum(q, axis=1), data["acc"], n=n)


def prm_loss_fn(params, mb: dict, *, rl, model_config: DecoderConfig, weight: float):
  """(weight · the PRM loss of micro-batch `mb`, its PRM log-probs [M, T]); the loss is
  `rl.prm_loss` ("ce": `prime.prm_ce_loss`, "dpo": `prm_dpo_loss` against mb["q_sum_before"])
  of q = log π_φ − log π_ref (mb["ref_logp"]) on the labels mb["acc"]."""
  logp = score_micro_batch(params, mb, model_config=model_config, chunk_size=rl.score_chunk).logp
  q = implicit_rewards(logp, mb["ref_logp"], mb["response_mask"])
  if rl.prm_loss == "ce":
    loss = prm_ce_loss(q, mb["acc"], mb["response_mask"], beta=rl.beta)
  else:
    loss = prm_dpo_loss(
        q,
        mb["acc"],
        mb["response_mask"],
        beta=rl.beta,
        n=rl.n_samples,
        q_sum_before=mb["q_sum_before"],
    )
  return loss * weight, logp


def prm_mini_step(
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
  """One PRM optimiser step on a mini-batch of `mini` rows, accumulated over micro-batches of
  `micro`: (state, (PRM log-probs of the mini-batch before the update [mini, T], loss,
  gradient norm))."""
  # Both losses are means over the micro-batch: weight so the sum is the mini mean.
  loss_fn = functools.partial(prm_loss_fn, rl=rl, model_config=model_config, weight=micro / mini)
  state, loss, grad_norm, logp = optimizer_step(
      state,
      mb,
      loss_fn,
      optimizer=optimizer,
      parts=mini // micro,
      micro_sharding=micro_sharding,
  )
  # "after" (single forward): this mini-batch's rewards are the q computed just now,
  # by the PRM after the previous mini-batches' updates, before its own update.
  return state, (merge_parts(logp), loss, grad_norm)


def prm_phase(
    prm_state: TrainState,
    data: dict,
    *,
    rl,
    model_config: DecoderConfig,
    optimizer: optax.GradientTransformation,
    micro_sharding: Optional[NamedSharding] = None,
):
  """The implicit PRM's online update (`rl.prm_update`) over mini-batches of `rl.prm_mini_batch`
  rows in `rl.prm_batch_order`.

  Args:
    prm_state: the PRM's TrainState.
    data: INPUT_KEYS and acc [N] (float32), ref_logp [N, T].
  Returns:
    (prm_state, the PRM log-probs [N, T] the process rewards are computed from, without
    gradient, metrics): for "after" each mini-batch's log-probs before its own update, for
    "before" the whole batch re-scored after all updates, for "none" one forward.
  """
  n = rl.n_samples
  num_rows = data["acc"].shape[0]
  scoring = dict(rl=rl, model_config=model_config, micro_sharding=micro_sharding)
  if rl.prm_update == "none":
    logp = score_batch(prm_state.params, data, **scoring).logp
    return prm_state, logp, {"prm/acc_before": prm_pair_accuracy_of(logp, data, n=n)}
  mini, micro = batch_sizes(num_rows, rl.prm_mini_batch, rl.micro_batch, "PRM")
  if rl.prm_loss == "dpo":
    # The port's Q_bc: the others' Q from a pass of the PRM before this step's updates, so
    # every mini-batch compares against the same, pre-update, group values.
    logp_before = score_batch(prm_state.params, data, **scoring).logp
    q_before = implicit_rewards(logp_before, data["ref_logp"], data["response_mask"])
    data = dict(data, q_sum_before=jnp.sum(q_before, 1))

  order = dict(num_shards=prm_order_shards(rl))
  mini_step = functools.partial(
      prm_mini_step,
      rl=rl,
      model_config=model_config,
      optimizer=optimizer,
      mini=mini,
      micro=micro,
      micro_sharding=micro_sharding,
  )
  prm_state, (logp, losses, grad_norms) = jax.lax.scan(
      mini_step,
      prm_state,
      # Each mini-batch spread over the data-parallel devices, as the scan walks them.
      constrain_micro(
          split_minibatches(data, num_minibatches=num_rows // mini, group_size=n, **order),
          micro_sharding,
      ),
  )
  logp = merge_minibatches(logp, **order)
  # "before" metrics: each mini-batch scored by the PRM as it stood before its update.
  metrics = {
      "prm/loss_before": jnp.mean(losses),
      "prm/acc_before": prm_pair_accuracy_of(logp, data, n=n),
      "prm/grad_norm": jnp.mean(grad_norms),
  }
  if rl.prm_update == "before" or rl.prm_metrics_after:
    logp_after = score_batch(prm_state.params, data, **scoring).logp
    q_after = implicit_rewards(logp_after, data["ref_logp"], data["response_mask"])
    metrics["prm/acc_after"] = prm_pair_accuracy_of(logp_after, data, n=n)
    metrics["prm/loss_after"] = prm_ce_loss(
        q_after, data["acc"], data["response_mask"], beta=rl.beta
    )
    if rl.prm_update == "before":  # double forward: rewards from the updated PRM
      logp = logp_after
  return prm_state, jax.lax.stop_gradient(logp), metrics
