"""The single compiled PRIME update step (docs/algorithm.md, "One RL step", 2) in one jitted graph.

    (policy_state, prm_state, ref_params, batch, rng) -> (policy_state, prm_state, metrics)

1. old log-probs of the policy (recomputed, or the sampler's when `rl.old_logp="sampler"`);
2. reference log-probs (a frozen model, or the old log-probs when `rl.ref_type="policy"`);
3. `prm_phase`: the implicit PRM per mini-batch, for `rl.prm_update` in after | before | none;
   mini-batch k is the k-th block of every data-parallel shard (`rl.prm_batch_order="strided"`,
   as released) or the k-th contiguous block of the batch ("contiguous"); with
   `rl.prm_loss="dpo"` the others' Q of each group come from one forward of the PRM before the
   updates, as in the port;
4. process rewards (granularity, scale, batch_norm) and `estimator_advantages` of the configured
   estimator, whitened over the batch for every estimator when `rl.whiten_advantages`
   (docs/estimators.md);
5. `policy_phase`: PPO-clip over shuffled policy mini-batches with gradient accumulation over
   micro-batches (`accumulate_gradients`).
Outcome-only runs (`coef_proc=0`, not `prm_value`) never run the PRM or the reference, nor do
oracle runs (`rl.process_reward="oracle"`): their process scores arrive in the batch, from the
task's step oracle, and take step 4 in place of the PRM's q.
Every forward pass is micro-batched and turns hidden states into log-probs chunk by chunk, so no
[N, T, vocab] array exists.

Every function here is a module-level pure function: arrays and states are its arguments, the
static choices (`rl` = config.rl, the decoder's `model_config`, optimisers, sizes, the
micro-batches' sharding) are keywords, bound with `functools.partial` by `make_update_step`
before `jax.jit`. The formulas themselves are in `prime_jax.algo.prime` (the paper's) and the
modules it points to.

`batch` holds, with N = B·n rows (the n samples of a prompt contiguous):
  prompt_tokens [N, P] int32 (left-padded), prompt_mask [N, P] bool,
  response_tokens [N, T] int32 (right-padded), response_mask [N, T] bool (EOS included),
  acc [N] float32 outcome scores in [0, 1], old_logp [N, T] when `rl.old_logp="sampler"`, and
  process_rewards [N, T] float32 (the oracle's -1 / 0 token rewards) when
  `rl.process_reward="oracle"`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prime_jax.algo.baseline_estimators import (
    gae_advantages,
    grpo_advantages,
    prm_value_advantages,
    reinforce_advantages,
)
from prime_jax.algo.minibatches import PRM_BATCH_ORDERS, merge_minibatches, split_minibatches
from prime_jax.algo.policy_loss import aggregate_token_loss, ppo_clip_loss, value_loss
from prime_jax.algo.prime import implicit_rewards, prime_advantages, prm_ce_loss
from prime_jax.algo.prm_losses import prm_dpo_loss, prm_pair_accuracy
from prime_jax.algo.rewards import at_granularity, normalize_process_rewards
from prime_jax.algo.token_ops import masked_mean, outcome_token_rewards, whiten
from prime_jax.models.config import DecoderConfig
from prime_jax.scoring import token_logprobs
from prime_jax.sharding import activation_rules, logical_sharding, param_shardings, training_rules
from prime_jax.train_state import (
    TrainState,
    apply_gradients,
    make_optimizer,
    train_state_shardings,
)

INPUT_KEYS = ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask")
ESTIMATORS = ("rloo", "reinforce", "grpo", "ppo", "prm_value")
_CHOICES = dict(
    process_reward=("prm", "oracle"),
    prm_update=("after", "before", "none"),
    prm_loss=("ce", "dpo"),
    prm_batch_order=PRM_BATCH_ORDERS,
    ref_type=("freeze", "policy"),
    granularity=("token", "whole"),
    reward_scale=("none", "beta"),
    prime_norm=("batch_norm", "none"),
    norm_scope=("shard", "global"),
    estimator=ESTIMATORS,
    rloo_form=("code", "paper"),
    grpo_form=("stable", "paper"),
    loss_agg=("seq-mean-token-mean", "token-mean"),
    old_logp=("recompute", "sampler"),
)


def policy_optimizer(rl) -> optax.GradientTransformation:
  return make_optimizer(rl.lr, rl.weight_decay, rl.grad_clip)


def prm_optimizer(rl) -> optax.GradientTransformation:
  return make_optimizer(rl.prm_lr, rl.prm_weight_decay, rl.prm_grad_clip)


def uses_prm(rl) -> bool:
  """Whether the step runs the implicit PRM (and so the reference) at all: not for outcome-only
  runs, nor when the process stream is the task's oracle."""
  if rl.process_reward == "oracle":
    return False
  return rl.estimator == "prm_value" or rl.coef_proc != 0


def forward_passes(rl) -> list[tuple[str, str, int]]:
  """(phase, pass, cost in forward passes over the batch) that the step runs for `rl`; a
  forward+backward costs 3. Phase "prm" is the PRM and its reference, "policy" the rest. The
  trainer splits the one compiled step's time between the two by these shares (time/prm_est,
  time/policy_est), the update-step benchmark counts FLOPs with them."""
  out = []
  if rl.old_logp == "recompute":
    out.append(("policy", "policy old-logp fwd", 1))
  if uses_prm(rl):
    if rl.ref_type == "freeze":
      out.append(("prm", "reference fwd", 1))
    out.append(
        (
            "prm",
            "PRM fwd" if rl.prm_update == "none" else "PRM fwd+bwd",
            1 if rl.prm_update == "none" else 3,
        )
    )
    if rl.prm_update != "none" and rl.prm_loss == "dpo":
      out.append(("prm", "PRM pre-update fwd (DPO's others)", 1))
    if rl.prm_update == "before" or rl.prm_metrics_after:
      out.append(("prm", "PRM re-score fwd", 1))
  out.append(("policy", "policy fwd+bwd", 3 * rl.ppo_epochs))
  return out


def prm_order_shards(rl) -> int:
  """The shards the PRM's mini-batches are strided over: the data-parallel shards that also scope
  `batch_norm` (`rl.norm_shards`, whatever `rl.norm_scope`: the released run's 8 workers walk
  their own rows either way), or 1 for `rl.prm_batch_order="contiguous"`."""
  return rl.norm_shards if rl.prm_batch_order == "strided" else 1


def check_rl_config(rl) -> None:
  for key, choices in _CHOICES.items():
    if rl[key] not in choices:
      raise ValueError(f"config.rl.{key}={rl[key]!r}; expected one of {choices}")
  if rl.ppo_epochs < 1:
    raise ValueError(f"config.rl.ppo_epochs must be >= 1, got {rl.ppo_epochs}")
  if rl.process_reward == "oracle" and rl.estimator == "prm_value":
    raise ValueError(
        "config.rl.estimator='prm_value' takes its values from the implicit PRM's q; it has no "
        "oracle form (rl.process_reward='oracle')"
    )


def check_model_for(rl, model_config: DecoderConfig) -> None:
  if (rl.estimator == "ppo") != model_config.value_head:
    raise ValueError(
        f"estimator={rl.estimator!r} needs model_config.value_head="
        f"{rl.estimator == 'ppo'} (PPO's value head sits on the policy trunk)"
    )


def estimator_advantages(rl, scores, q, acc, mask, old_values=None):
  """(advantages, returns), each [N, T], of the estimator `rl.estimator`, whitened over the
  batch's valid tokens when `rl.whiten_advantages`: one convention for every Table 4 row, so an
  estimator's outcome-only and PRIME variants differ only in `rl.coef_proc` (docs/estimators.md).

  Args:
    rl: `config.rl`.
    scores: [N, T] process rewards (normalised); q: [N, T] the PRM's log-ratio (prm_value only).
    acc: [N] outcome scores; mask: [N, T] valid-token mask.
    old_values: [N, T] the value head's predictions (ppo only).
  """
  n = rl.n_samples
  coefs = dict(coef_proc=rl.coef_proc, coef_out=rl.coef_out)
  gammas = dict(gamma_proc=rl.gamma_proc, gamma_out=rl.gamma_out)  # the two streams' discounts
  if rl.estimator == "rloo":  # its un-whitened advantages are the RLOO returns
    _, returns = prime_advantages(scores, acc, mask, n=n, form=rl.rloo_form, **gammas, **coefs)
    raw = returns
  elif rl.estimator == "reinforce":
    raw, returns = reinforce_advantages(scores, acc, mask, **gammas, **coefs)
  elif rl.estimator == "grpo":
    raw, returns = grpo_advantages(scores, acc, mask, n=n, form=rl.grpo_form, **coefs)
  elif rl.estimator == "ppo":  # "PPO w/ PRIME" adds the process rewards to the token rewards
    token_rewards = rl.coef_out * outcome_token_rewards(acc, mask) + rl.coef_proc * scores
    raw, returns = gae_advantages(
        token_rewards,
        old_values,
        mask,
        gamma=rl.gae_gamma,
        lam=rl.gae_lambda,
        whiten_advantages=False,
    )
  else:
    raw, returns = prm_value_advantages(q, acc, mask, beta=rl.beta)
  return (whiten(raw, mask) if rl.whiten_advantages else raw), returns


class TokenScores(NamedTuple):
  """What one scoring forward gives per response token, each [rows, T] float32, 0 on padding;
  None where it was not asked for."""

  logp: jax.Array
  entropy: Optional[jax.Array] = None
  values: Optional[jax.Array] = None


def _batch_sizes(num_rows: int, mini: int, micro: int, what: str) -> tuple[int, int]:
  """Clamps (mini, micro) to the batch and checks they tile it; returns the clamped pair."""
  mini = min(mini, num_rows)
  micro = min(micro, mini)
  if num_rows % mini or mini % micro:
    raise ValueError(
        f"{what}: {num_rows} responses cannot be split into mini-batches of "
        f"{mini} and micro-batches of {micro}"
    )
  return mini, micro


def _split(tree, parts: int):
  """[N, ...] leaves -> [parts, N / parts, ...]."""
  return jax.tree_util.tree_map(lambda x: x.reshape((parts, -1) + x.shape[1:]), tree)


def _merge(tree):
  """[parts, M, ...] leaves -> [parts * M, ...]."""
  return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _stats(prefix: str, x, mask) -> dict:
  """Mean / std / min / max of x over valid tokens."""
  valid = mask > 0
  mean = masked_mean(x, mask)
  return {
      f"{prefix}_mean": mean,
      f"{prefix}_std": jnp.sqrt(masked_mean((x - mean) ** 2, mask)),
      f"{prefix}_min": jnp.min(jnp.where(valid, x, jnp.inf)),
      f"{prefix}_max": jnp.max(jnp.where(valid, x, -jnp.inf)),
  }


def constrain_micro(tree, micro_sharding: Optional[NamedSharding]):
  """Keeps stacked [parts, M, ...] (micro- or mini-)batches spread over the data-parallel devices
  inside the scans: `micro_sharding` is NamedSharding(mesh, P(None, *batch rows)), or None
  without a mesh (then a no-op)."""
  if micro_sharding is None:
    return tree
  return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, micro_sharding), tree)


# ------------------------------------------------------------------------------------ scoring


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
  micro_batches = constrain_micro(_split(inputs, num_rows // micro), micro_sharding)
  score = functools.partial(
      score_micro_batch,
      model_config=model_config,
      chunk_size=rl.score_chunk,
      with_values=with_values,
  )
  return jax.lax.stop_gradient(_merge(jax.lax.map(lambda mb: score(params, mb), micro_batches)))


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


# ------------------------------------------------------------------------ the PRM phase


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
  grads, loss, logp = accumulate_gradients(
      loss_fn, state.params, constrain_micro(_split(mb, mini // micro), micro_sharding)
  )
  # "after" (single forward): this mini-batch's rewards are the q computed just now,
  # by the PRM after the previous mini-batches' updates, before its own update.
  return apply_gradients(state, grads, optimizer), (_merge(logp), loss, optax.global_norm(grads))


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
  mini, micro = _batch_sizes(num_rows, rl.prm_mini_batch, rl.micro_batch, "PRM")
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


# ------------------------------------------------------------------- process rewards


def prm_process_rewards(logp_prm, ref_logp, mask, *, rl):
  """(q, scores), each [N, T]: the PRM's log-ratio q = log π_φ − log π_ref (`prm_value`'s values)
  and the process rewards at `rl.granularity`, scaled by β when `rl.reward_scale="beta"`
  (`prime.implicit_rewards`), before normalisation."""
  q = implicit_rewards(logp_prm, ref_logp, mask)
  scores = implicit_rewards(
      logp_prm,
      ref_logp,
      mask,
      granularity=rl.granularity,
      beta=rl.beta if rl.reward_scale == "beta" else None,
  )
  return q, scores


def oracle_process_rewards(process_rewards, mask, *, rl):
  """[N, T] the task oracle's token rewards (batch["process_rewards"]) at `rl.granularity`,
  before normalisation; padding ignored whatever it holds."""
  raw = jnp.where(mask, process_rewards.astype(jnp.float32), 0)
  return at_granularity(raw, mask, rl.granularity)


def normalized_process_rewards(scores, mask, *, rl):
  """`rl.prime_norm`: the released `batch_norm` scaling, one scale per `rl.norm_shards` shard
  (or one for the batch with `rl.norm_scope="global"`), or the scores unchanged."""
  if rl.prime_norm != "batch_norm":
    return scores
  shards = rl.norm_shards if rl.norm_scope == "shard" else 1
  return normalize_process_rewards(scores, mask, num_shards=shards)


# --------------------------------------------------------------------- the policy phase


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
  grads, loss, m = accumulate_gradients(
      functools.partial(
          policy_loss_fn,
          rl=rl,
          model_config=model_config,
          denominator=denominator,
          num_tokens=num_tokens,
      ),
      state.params,
      constrain_micro(_split(mb, mini // micro), micro_sharding),
  )
  return apply_gradients(state, grads, optimizer), (loss, optax.global_norm(grads), m)


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
  mini, micro = _batch_sizes(num_rows, rl.mini_batch, rl.micro_batch, "policy")
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
    state, out = jax.lax.scan(mini_step, state, _split(shuffled, num_rows // mini))
    outs.append(out)
  losses, grad_norms, m = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs)
  reduce = {"ratio_min": jnp.min, "ratio_max": jnp.max}
  metrics = {f"policy/{k}": reduce.get(k, jnp.mean)(v) for k, v in m.items()}
  metrics.update({"policy/loss": jnp.mean(losses), "policy/grad_norm": jnp.mean(grad_norms)})
  return state, metrics


# ----------------------------------------------------------------------- the whole step


def update_step(
    policy_state: TrainState,
    prm_state: Optional[TrainState],
    ref_params,
    batch: dict,
    rng,
    *,
    rl,
    model_config: DecoderConfig,
    policy_opt: optax.GradientTransformation,
    prm_opt: optax.GradientTransformation,
    micro_sharding: Optional[NamedSharding] = None,
    ref_on_device=None,
):
  """One PRIME update (the module docstring's steps 1-5): (policy_state, prm_state, metrics).

  The keywords are static (bound by `make_update_step`): `rl` = config.rl, the decoder's
  `model_config`, the two optimisers, and with a mesh the micro-batches' sharding and, with
  `config.ref.offload`, the reference's device shardings (its params arrive in host memory).
  """
  is_ppo = rl.estimator == "ppo"
  run_prm = uses_prm(rl)
  needs_ref = run_prm or rl.kl_coef != 0
  scoring = dict(rl=rl, model_config=model_config, micro_sharding=micro_sharding)
  inputs = {k: batch[k] for k in INPUT_KEYS}
  mask, acc = batch["response_mask"], batch["acc"].astype(jnp.float32)

  # 1. old log-probs (and PPO's old values: one forward gives both)
  old_values = None
  if is_ppo:
    old = score_batch(policy_state.params, inputs, with_values=True, **scoring)
    old_logp, old_values = old.logp, old.values
    if rl.old_logp == "sampler":
      old_logp = batch["old_logp"]
  elif rl.old_logp == "recompute":
    old_logp = score_batch(policy_state.params, inputs, **scoring).logp
  else:
    old_logp = batch["old_logp"]
  metrics = {
      "acc_mean": jnp.mean(acc),
      "response_length_mean": jnp.mean(jnp.sum(mask, axis=1).astype(jnp.float32)),
      "tokens": jnp.sum(mask),
  }

  # 2. reference log-probs
  ref_logp = None  # ref_params is None unless a frozen reference is needed
  if needs_ref and rl.ref_type == "policy":
    ref_logp = old_logp
  elif needs_ref:
    if ref_on_device is not None:  # host -> devices, for this forward only
      ref_params = jax.device_put(ref_params, ref_on_device)
    ref_logp = score_batch(ref_params, inputs, **scoring).logp

  # 3-4. the PRM phase and the process rewards
  q = scores = jnp.zeros(mask.shape, jnp.float32)
  if rl.process_reward == "oracle":
    scores = oracle_process_rewards(batch["process_rewards"], mask, rl=rl)
  elif run_prm:
    prm_state, logp_prm, prm_metrics = prm_phase(
        prm_state, dict(inputs, acc=acc, ref_logp=ref_logp), optimizer=prm_opt, **scoring
    )
    metrics.update(prm_metrics)
    q, scores = prm_process_rewards(logp_prm, ref_logp, mask, rl=rl)
  if run_prm or rl.process_reward == "oracle":
    scores = normalized_process_rewards(scores, mask, rl=rl)
    metrics.update(_stats("process_reward", scores, mask))

  # 4. advantages
  advantages, returns = estimator_advantages(rl, scores, q, acc, mask, old_values)
  metrics.update(_stats("returns", returns, mask))
  metrics.update(_stats("advantages", advantages, mask))

  # 5. the policy phase
  data = dict(inputs, acc=acc, old_logp=old_logp, advantages=advantages)
  if is_ppo:
    data.update(returns=returns, old_values=old_values)
    metrics.update(_stats("values", old_values, mask))
  if rl.kl_coef:
    data["ref_logp"] = ref_logp
  policy_state, policy_metrics = policy_phase(
      policy_state, data, rng, optimizer=policy_opt, **scoring
  )
  metrics.update(policy_metrics)
  return policy_state, prm_state, metrics


def _update_step_on_mesh(*args, mesh: Mesh, rules, **static):
  """`update_step` traced under the logical-axis `rules`, so the decoder's activation
  constraints follow them."""
  with activation_rules(mesh, rules):
    return update_step(*args, **static)


def make_update_step(
    config, mesh: Optional[Mesh], model_config: DecoderConfig, *, rules=None
) -> Callable:
  """Builds the jitted update step for `config.rl` and the decoder `model_config`:
  `jax.jit(functools.partial(update_step, **static))`.

  With a mesh, states keep the sharding of the logical-axis rules (`rules`, default
  `config.sharding_rules`), batch rows are split over the `batch` rule's axes, the decoder's
  activations are constrained by the same rules (the step is traced under
  `prime_jax.sharding.activation_rules`), and the policy/PRM states are donated. With
  `config.ref.offload` the reference params arrive in host memory and are moved to the devices
  inside the step, for the reference forward only. Without a mesh (mesh=None) it runs wherever
  its inputs are (and `config.ref.offload` is an error).
  """
  rl = config.rl
  check_rl_config(rl)
  check_model_for(rl, model_config)
  needs_ref = uses_prm(rl) or rl.kl_coef != 0
  offload_ref = ref_options(config).offload and needs_ref and rl.ref_type == "freeze"
  if mesh is None and offload_ref:
    raise ValueError(
        "config.ref.offload needs a mesh (it places the reference params with "
        "NamedShardings of memory_kind='pinned_host')"
    )
  static = dict(
      rl=rl,
      model_config=model_config,
      policy_opt=policy_optimizer(rl),
      prm_opt=prm_optimizer(rl),
  )
  if mesh is None:
    return jax.jit(functools.partial(update_step, **static), donate_argnums=(0, 1))

  rules = rules or training_rules(config)
  batch_spec = logical_sharding(mesh, ("batch",), rules).spec
  shardings = update_step_shardings(config, mesh, model_config, rules=rules)
  static["micro_sharding"] = NamedSharding(mesh, PartitionSpec(None, *batch_spec))
  if offload_ref:  # the reference's device shardings inside the step
    static["ref_on_device"] = jax.tree_util.tree_map(
        lambda s: s.with_memory_kind("device"), shardings["ref"]
    )
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
      functools.partial(_update_step_on_mesh, mesh=mesh, rules=rules, **static),
      donate_argnums=(0, 1),
      in_shardings=(
          shardings["policy"],
          shardings["prm"],
          shardings["ref"],
          shardings["batch"],
          replicated,
      ),
      out_shardings=(shardings["policy"], shardings["prm"], replicated),
  )


def update_step_shardings(config, mesh: Mesh, model_config: DecoderConfig, *, rules=None) -> dict:
  """Where the step's inputs live: {"policy", "prm"} TrainState shardings, "ref" params
  shardings (memory_kind "pinned_host" with `config.ref.offload`), "batch" (rows over the
  `batch` rule's axes). `rules` default to `config.sharding_rules`. `jax.device_put` states
  and batches onto these before the first call (the reference through `reference_params`): the
  step donates the states in place. "prm" is None when the step never runs the PRM and "ref"
  None when it needs no reference: pass None for them."""
  from prime_jax.models.decoder import init_params

  rules = rules or training_rules(config)
  abstract_params = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))
  p_shardings = param_shardings(model_config, mesh, rules)
  rl = config.rl
  run_prm = uses_prm(rl)
  frozen_ref = (run_prm or rl.kl_coef != 0) and rl.ref_type == "freeze"
  return {
      "policy": train_state_shardings(p_shardings, policy_optimizer(rl), abstract_params),
      "prm": (
          train_state_shardings(p_shardings, prm_optimizer(rl), abstract_params)
          if run_prm
          else None
      ),
      "ref": (None if not frozen_ref else _ref_memory(p_shardings, config)),
      "batch": logical_sharding(mesh, ("batch",), rules),
  }


REF_PARAM_DTYPES = ("float32", "bfloat16")


def ref_options(config):
  """`config.ref` (param_dtype, offload), checked; configs without it get the defaults."""
  from ml_collections import ConfigDict

  ref = config.get("ref") or ConfigDict(dict(param_dtype="float32", offload=False))
  if ref.param_dtype not in REF_PARAM_DTYPES:
    raise ValueError(
        f"config.ref.param_dtype={ref.param_dtype!r}; expected one of " f"{REF_PARAM_DTYPES}"
    )
  return ref


def _ref_memory(shardings, config):
  """The reference's shardings: in host memory ("pinned_host") with `config.ref.offload`."""
  if not ref_options(config).offload:
    return shardings
  devices = jax.tree_util.tree_leaves(shardings)[0].addressable_devices
  kinds = {m.kind for d in devices for m in d.addressable_memories()}
  if "pinned_host" not in kinds:
    raise ValueError(
        f"config.ref.offload: the {next(iter(devices)).platform} devices have "
        f"no pinned_host memory (memory kinds: {sorted(kinds)})"
    )
  return jax.tree_util.tree_map(lambda s: s.with_memory_kind("pinned_host"), shardings)


def reference_params(params, config, ref_shardings):
  """The frozen reference: a copy of `params` (the policy's, whose buffers the step donates) in
  `config.ref.param_dtype` (cast once here; its forward still computes in the model's dtype),
  placed on `ref_shardings` (`update_step_shardings(...)["ref"]`: on the devices, or in host
  memory with `config.ref.offload`). Device-to-device / device-to-host copies only."""
  dtype = jnp.dtype(ref_options(config).param_dtype)
  copy = jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if x.dtype != dtype else x.copy(), params
  )  # fresh buffers
  return jax.device_put(copy, ref_shardings)
