"""PRIME's math, in the order of the paper (Cui et al. 2025, "Process Reinforcement through
Implicit Rewards", arXiv:2502.01456):

1. the implicit process reward of a token, r_φ(y_t) = β · log π_φ(y_t | y_<t) / π_ref(y_t | y_<t),
   from the PRM π_φ and the frozen reference π_ref (`implicit_rewards`); summed over a response it
   is the implicit outcome reward r_φ(y) = β · log π_φ(y) / π_ref(y) (`sequence_reward`);
2. the PRM is trained online on the policy's rollouts with the cross-entropy of σ(r_φ(y)) against
   the outcome labels r_o(y) (`prm_ce_loss`);
3. the advantage (Eq. 5) sums the RLOO returns of two streams: the process rewards r_φ(y_t),
   baselined by the other samples' mean token reward and discounted by γ, and the outcome
   rewards r_o(y) with the plain RLOO baseline (`rloo_returns`, `prime_advantages`);
4. the policy takes PPO-clip steps on those advantages: `prime_jax.algo.policy_loss.ppo_clip_loss`,
   run over mini- and micro-batches by `prime_jax.algo.policy_phase.policy_phase`.

Between 1 and 3 the released code shapes the rewards (`prime_jax.algo.rewards`: the `batch_norm`
scaling, the reward density); where it and this module's defaults differ from the paper's formulas
is in docs/algorithm.md. The PRM and policy phases that run these functions on a model are
`prime_jax.algo.prm_phase` / `prime_jax.algo.policy_phase`.

Arrays are [N, T] response batches: N = B·n responses with the n samples of a prompt in contiguous
rows (n is the paper's K), T response positions, masks bool or 0/1 on valid tokens.
"""

import chex
import jax
import jax.numpy as jnp

from prime_jax.algo.rewards import GRANULARITIES, at_granularity
from prime_jax.algo.token_ops import (
    group_rows,
    last_token_mask,
    outcome_token_rewards,
    reverse_discounted_cumsum,
    whiten,
)
from prime_jax.algo.validation import (
    as_float_mask,
    check_choice,
    check_group_size,
    check_per_response,
    check_token_arrays,
    compute_dtype,
)

RLOO_FORMS = ("code", "paper")

# --------------------------------------------------------- 1. the implicit process reward


def implicit_rewards(
    logp_prm: chex.Array,
    logp_ref: chex.Array,
    mask: chex.Array,
    *,
    granularity: str = "token",
    beta: float | chex.Array | None = None,
) -> chex.Array:
  """Step 1, the implicit process reward: r_φ(y_t) = β · log π_φ(y_t | y_<t) / π_ref(y_t | y_<t).

  Token scores from q[i,t] = log π_φ(y_i,t | ·) − log π_ref(y_i,t | ·): the paper's r_φ(y_t)
  with β = 1 by default (`beta=None`, the released code; docs/algorithm.md, "Implicit process
  rewards"), times β when `beta` is given.

  Args:
    logp_prm: [N, T] log-probs of the sampled tokens under the PRM.
    logp_ref: [N, T] log-probs of the same tokens under the reference.
    mask: [N, T] valid-token mask (bool or 0/1); padding may hold any value, even inf/nan.
    granularity: "token" → score = q; "whole" → Σ_t q on the last valid token, 0 elsewhere.
    beta: None (reward_scale='none', the released code: the reward is q itself) or the
      PRM β (reward_scale='beta', the paper's r = β·q).
  Returns:
    [N, T] scores in nats (×β when given), 0 on padding. Differentiable in both
    log-prob arrays; callers that use them as rewards stop the gradient.
  """
  check_token_arrays(logp_prm=logp_prm, logp_ref=logp_ref, mask=mask)
  check_choice("granularity", granularity, GRANULARITIES)
  dtype = compute_dtype(logp_prm, logp_ref)
  valid = as_float_mask(mask, dtype)
  # `where`, not a product with the mask, so inf/nan on padding cannot leak (nor its gradient).
  q = jnp.where(valid > 0, logp_prm.astype(dtype) - logp_ref.astype(dtype), 0)
  if beta is not None:
    q = q * beta
  return at_granularity(q, valid, granularity)


def sequence_reward(q: chex.Array, mask: chex.Array, beta) -> chex.Array:
  """The implicit outcome reward r_φ(y) = β · log π_φ(y) / π_ref(y) = Σ_t r_φ(y_t): [N]
  β·Σ_t q[i,t] over valid tokens; padding contributes neither value nor gradient."""
  valid = as_float_mask(mask, compute_dtype(q))
  return beta * jnp.sum(jnp.where(valid > 0, q, 0), axis=1)


# ----------------------------------------------------------- 2. the PRM's CE loss


def prm_ce_loss(q: chex.Array, acc: chex.Array, mask: chex.Array, *, beta) -> chex.Array:
  """Step 2, the PRM's loss: the paper's cross-entropy on outcome labels,
      L_CE(φ) = −E[ r_o(y) · log σ(r_φ(y)) + (1 − r_o(y)) · log(1 − σ(r_φ(y))) ],
  with r_φ(y) = `sequence_reward` and r_o(y) = acc: the mean binary cross-entropy of
  sigmoid(β·Σ_t q[i,t]) against soft labels acc[i].

  Uses log-sigmoid, so it is finite for any logit. Gradient flows into q (hence into
  log π_φ when q comes from `implicit_rewards`) on valid tokens only.

  Args:
    q: [N, T] log-ratio log π_φ − log π_ref of the sampled tokens.
    acc: [N] outcome labels in [0, 1] (soft labels allowed).
    mask: [N, T] valid-token mask (bool or 0/1).
    beta: the PRM β (0.05 in the released run).
  Returns:
    scalar mean over the N responses.
  """
  num_rows, _ = check_token_arrays(q=q, mask=mask)
  check_per_response(num_rows, acc=acc)
  logits = sequence_reward(q, mask, beta)
  acc = acc.astype(logits.dtype)
  return -jnp.mean(acc * jax.nn.log_sigmoid(logits) + (1 - acc) * jax.nn.log_sigmoid(-logits))


# ------------------------------------------ 3. two-stream RLOO returns, advantages


def rloo_returns(
    rewards: chex.Array,
    reward_mask: chex.Array,
    *,
    n: int,
    gamma: float | chex.Array = 1.0,
    form: str = "code",
) -> chex.Array:
  """Step 3a, leave-one-out (RLOO) returns of one reward stream: one term of the paper's Eq. 5.

  Per group of n contiguous responses, with m_j = mean of r[j, t] over j's masked t
  (0 for a response with no masked entry) and S = Σ_j m_j, on masked entries:
      form="code"  (released code):  r'[i,t] = r[i,t]·n/(n−1) − S/(n−1)
      form="paper" (Eq. 5):          r'[i,t] = r[i,t] − (S − m_i)/(n−1)
  and r' = 0 elsewhere; then ret[i,t] = Σ_{s>=t} γ^(s−t) r'[i,s]. Both forms give the
  same return at a response's first token (for γ = 1) and are identical when each row
  has a single masked entry (the outcome stream).

  Args:
    rewards: [N, T] rewards of the stream.
    reward_mask: [N, T] entries that carry a reward (all valid tokens for the process
      stream, the last valid token for the outcome stream); bool or 0/1.
    n: samples per prompt, >= 2.
    gamma: discount.
    form: "code" or "paper".
  Returns:
    [N, T] returns; 0 after a row's last masked entry.
  """
  num_rows, _ = check_token_arrays(rewards=rewards, reward_mask=reward_mask)
  check_group_size(num_rows, n)
  check_choice("form", form, RLOO_FORMS)
  dtype = compute_dtype(rewards)
  masked = group_rows(as_float_mask(reward_mask, dtype), n)  # [B, n, T]
  r = jnp.where(masked > 0, group_rows(rewards.astype(dtype), n), 0)
  means = jnp.sum(r, axis=2) / jnp.maximum(jnp.sum(masked, axis=2), 1)  # m_j, [B, n]
  total = jnp.sum(means, axis=1, keepdims=True)  # S, [B, 1]
  if form == "code":
    shaped = (r * n - total[..., None]) / (n - 1)
  else:
    shaped = r - ((total - means) / (n - 1))[..., None]
  shaped = jnp.where(masked > 0, shaped, 0).reshape(rewards.shape)
  return reverse_discounted_cumsum(shaped, gamma)


def prime_advantages(
    proc_scores: chex.Array,
    acc: chex.Array,
    mask: chex.Array,
    *,
    n: int,
    coef_proc: float | chex.Array = 1.0,
    coef_out: float | chex.Array = 1.0,
    gamma_proc: float | chex.Array = 1.0,
    gamma_out: float | chex.Array = 1.0,
    form: str = "code",
) -> tuple[chex.Array, chex.Array]:
  """Step 3b, PRIME's advantages (the paper's Eq. 5): RLOO on the process and outcome streams,
  their returns computed separately and summed, then whitened (the released code's last step).

      A[i,t] = Σ_{s>=t} γ^(s−t) (r_φ(y_s^i) − baseline) + r_o(y^i) − 1/(K−1) Σ_{j≠i} r_o(y^j)

  returns = coef_proc · rloo_returns(proc_scores, mask, gamma_proc) + coef_out · rloo_returns(acc
  on the last valid token, that token, gamma_out); advantages = `whiten(returns, mask)` over all
  valid tokens of the whole batch (unbiased variance, eps 1e-8, mean not added back).
  coef_proc = 0 is RLOO with the outcome verifier only.

  Args:
    proc_scores: [N, T] (normalised) process rewards; ignored on padding.
    acc: [N] outcome verifier scores in [0, 1].
    mask: [N, T] valid-token mask (bool or 0/1), right-padded.
    n, form: as in `rloo_returns` (both streams).
    coef_proc, coef_out: stream weights c_p, c_o.
    gamma_proc, gamma_out: each stream's discount (the released code's reward_model_gamma and
      verifier_gamma, both 1).
  Returns:
    (advantages, returns), each [N, T], 0 on padding.
  """
  num_rows, _ = check_token_arrays(proc_scores=proc_scores, mask=mask)
  check_per_response(num_rows, acc=acc)
  dtype = compute_dtype(proc_scores, acc)
  valid = as_float_mask(mask, dtype)
  process = rloo_returns(proc_scores.astype(dtype), valid, n=n, gamma=gamma_proc, form=form)
  outcome = rloo_returns(
      outcome_token_rewards(acc.astype(dtype), valid),
      last_token_mask(valid),
      n=n,
      gamma=gamma_out,
      form=form,
  )
  returns = (coef_proc * process + coef_out * outcome) * valid
  return whiten(returns, valid), returns


# ------------------------------------------------------------------- 4. the policy loss
# PPO-clip on the advantages above: `prime_jax.algo.policy_loss.ppo_clip_loss`.
