"""The update step's advantages (docs/algorithm.md, "One RL step", 2.4): process rewards, then the
configured estimator's advantages, whitened.

The process rewards are the PRM's (`prm_process_rewards`: q = log π_φ − log π_ref at
`rl.granularity`, scaled by β when `rl.reward_scale="beta"`) or the task oracle's
(`oracle_process_rewards`), normalised by `rl.prime_norm` (`normalized_process_rewards`);
`estimator_advantages` turns them and the outcome scores into the advantages and returns of
`rl.estimator`, whitened over the batch for every estimator when `rl.whiten_advantages`
(docs/estimators.md). The formulas are `prime_jax.algo.prime`'s, `rewards`' and
`baseline_estimators`'; this module only picks and composes them from `rl` = config.rl.
"""

from __future__ import annotations

import jax.numpy as jnp

from prime_jax.algo.baseline_estimators import (
    gae_advantages,
    grpo_advantages,
    prm_value_advantages,
    reinforce_advantages,
)
from prime_jax.algo.prime import implicit_rewards, prime_advantages
from prime_jax.algo.rewards import at_granularity, normalize_process_rewards
from prime_jax.algo.token_ops import outcome_token_rewards, whiten


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
