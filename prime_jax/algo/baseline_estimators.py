"""The other advantage estimators of the paper's Table 4 (docs/estimators.md), each with and without
PRIME's process rewards (coef_proc = 0 is the outcome-only variant).

Every estimator returns (advantages, returns), each [N, T] and 0 on padding, like
`prime_advantages`. GAE whitens by default (as PPO does; `whiten_advantages=False` gives Â); the
others are the formulas as written. The update step takes every estimator's advantages
un-whitened and whitens them once, over the batch, when `rl.whiten_advantages` (the default), so
all of Table 4's rows share one convention (docs/estimators.md).
"""

import chex
import jax.numpy as jnp

from prime_jax.algo.token_ops import (
    group_rows,
    outcome_token_rewards,
    reverse_discounted_cumsum,
    whiten,
)
from prime_jax.algo.validation import (
    as_float_mask,
    check_choice,
    check_group_size,
    check_nonnegative,
    check_per_response,
    check_token_arrays,
    compute_dtype,
)


def _check_streams(scores, acc, mask, *, scores_name="proc_scores"):
  """Validates a [N, T] score stream with its [N] outcomes; returns them masked, in one dtype."""
  num_rows, _ = check_token_arrays(**{scores_name: scores}, mask=mask)
  check_per_response(num_rows, acc=acc)
  dtype = compute_dtype(scores, acc)
  valid = as_float_mask(mask, dtype)
  return jnp.where(valid > 0, scores.astype(dtype), 0), acc.astype(dtype), valid


def reinforce_advantages(
    proc_scores: chex.Array,
    acc: chex.Array,
    mask: chex.Array,
    *,
    coef_proc: float | chex.Array = 1.0,
    coef_out: float | chex.Array = 1.0,
    gamma_proc: float | chex.Array = 1.0,
    gamma_out: float | chex.Array = 1.0,
) -> tuple[chex.Array, chex.Array]:
  """REINFORCE (w/ PRIME): each stream's discounted return, no baseline.

      A[i,t] = c_o · γ_out^(L_i−1−t) · acc_i + c_p · Σ_{s>=t} γ_proc^(s−t) r_proc[i,s]
  (the outcome acc_i sits on the last valid token L_i − 1, so with γ_out = 1, the default, it
  is acc_i on every token: the paper's A = r_o(y) + Σ γ^(s−t) r_proc).

  Args: proc_scores [N, T] process rewards; acc [N] outcome scores; mask [N, T] valid-token
  mask; coef_proc, coef_out the stream weights; gamma_proc, gamma_out their discounts.
  Returns (advantages, returns), identical, [N, T].
  """
  scores, acc, valid = _check_streams(proc_scores, acc, mask)
  outcome = reverse_discounted_cumsum(outcome_token_rewards(acc, valid), gamma_out)
  advantages = (
      coef_out * outcome + coef_proc * reverse_discounted_cumsum(scores, gamma_proc)
  ) * valid
  return advantages, advantages


GRPO_FORMS = ("stable", "paper")


def _group_mean_and_scale(values: chex.Array, n: int, eps: float) -> tuple[chex.Array, chex.Array]:
  """Per-group mean and (unbiased std + eps) of [N] values, broadcast back to [N]."""
  grouped = group_rows(values, n)
  mean = jnp.mean(grouped, axis=1, keepdims=True)
  std = jnp.sqrt(jnp.sum((grouped - mean) ** 2, axis=1, keepdims=True) / (n - 1))
  return (
      jnp.broadcast_to(mean, grouped.shape).reshape(-1),
      jnp.broadcast_to(std + eps, grouped.shape).reshape(-1),
  )


def _safe_divide(x: chex.Array, scale: chex.Array) -> chex.Array:
  """x / scale, and 0 where scale is 0 (a group with no spread and eps = 0) instead of inf/NaN."""
  return jnp.where(scale > 0, x / jnp.where(scale > 0, scale, 1), 0)


def grpo_advantages(
    proc_scores: chex.Array,
    acc: chex.Array,
    mask: chex.Array,
    *,
    n: int,
    form: str = "stable",
    coef_proc: float | chex.Array = 1.0,
    coef_out: float | chex.Array = 1.0,
    eps: float = 1e-6,
) -> tuple[chex.Array, chex.Array]:
  """GRPO (w/ PRIME): group-standardised outcome plus group-standardised process returns.

      A[i,t] = c_p · Σ_{s>=t} (r_proc[i,s] − mean_j m_j) / (σ_j + eps)
             + c_o · (acc_i − mean_j acc_j) / (std_j acc_j + eps)
  over the group of i, with m_j the mean process reward of response j over its valid tokens,
  R_j = Σ_t r_proc[j,t] its total, std the unbiased standard deviation (torch.std, as verl's
  GRPO) and
      form="paper"  (the paper's Eq. 7):  σ_j = std_j m_j,
      form="stable" (default):            σ_j = std_j R_j.
  Eq. 7 divides per-token deviations by the spread of per-token *means* and sums them over
  ~|y| tokens, so its process term grows like |y| against an O(1) outcome term (at small scale:
  advantage std ~50, a collapsed run). With σ = std_j R_j the process term at t = 0 is the
  group z-score of R_i when the group's lengths are equal, O(1) at any length. No released code
  implements GRPO with PRIME; docs/estimators.md has the reasoning.

  Un-whitened: the update step whitens every estimator's advantages (`rl.whiten_advantages`).
  A group whose spread is 0 gets a finite term: with eps > 0 the deviation is divided by eps
  (exactly 0 when the group's rewards are all equal), with eps = 0 the term is 0.

  Args:
    proc_scores: [N, T] process rewards; ignored on padding.
    acc: [N] outcome scores in [0, 1].
    mask: [N, T] valid-token mask (bool or 0/1), right-padded.
    n: samples per prompt, >= 2 (groups are contiguous rows).
    form: "stable" or "paper" (the process term's scale, above).
    coef_proc, coef_out: stream weights c_p, c_o.
    eps: >= 0, added to each group std.
  Returns:
    (advantages, returns), identical, [N, T], 0 on padding.
  """
  scores, acc, valid = _check_streams(proc_scores, acc, mask)
  check_group_size(acc.shape[0], n)
  check_choice("form", form, GRPO_FORMS)
  check_nonnegative("eps", eps)
  totals = jnp.sum(scores, axis=1)  # R_j
  response_means = totals / jnp.maximum(jnp.sum(valid, axis=1), 1)  # m_j
  proc_mean, _ = _group_mean_and_scale(response_means, n, eps)
  _, proc_scale = _group_mean_and_scale(response_means if form == "paper" else totals, n, eps)
  standardized = _safe_divide(scores - proc_mean[:, None], proc_scale[:, None]) * valid
  out_mean, out_scale = _group_mean_and_scale(acc, n, eps)
  outcome = _safe_divide(acc - out_mean, out_scale)
  advantages = (
      coef_proc * reverse_discounted_cumsum(standardized) + coef_out * outcome[:, None]
  ) * valid
  return advantages, advantages


def gae_advantages(
    token_rewards: chex.Array,
    values: chex.Array,
    mask: chex.Array,
    *,
    gamma: float | chex.Array = 1.0,
    lam: float | chex.Array = 1.0,
    whiten_advantages: bool = True,
) -> tuple[chex.Array, chex.Array]:
  """Generalised advantage estimation for PPO with a learned value head.

      δ_t = r_t + γ·V_{t+1} − V_t   (V = 0 after the last valid token: the episode ends)
      Â_t = Σ_{s>=t} (γλ)^(s−t) δ_s,   returns = Â + V,   advantages = whiten(Â)
  PPO's token rewards are the outcome stream (`outcome_token_rewards`) plus, for
  "PPO w/ PRIME", the process rewards; the paper uses γ = λ = 1.

  Args:
    token_rewards: [N, T] per-token rewards.
    values: [N, T] value-head predictions V(y_<t) at each response position.
    mask: [N, T] valid-token mask (bool or 0/1), right-padded.
    whiten_advantages: whiten Â over the batch's valid tokens (stock veRL's PPO); False
      returns Â itself.
  Returns:
    (advantages, returns): Â (whitened by default) over valid tokens, and the value targets
    Â + V; both [N, T], 0 on padding.
  """
  check_token_arrays(token_rewards=token_rewards, values=values, mask=mask)
  dtype = compute_dtype(token_rewards, values)
  valid = as_float_mask(mask, dtype)
  rewards = jnp.where(valid > 0, token_rewards.astype(dtype), 0)
  values = jnp.where(valid > 0, values.astype(dtype), 0)
  next_values = jnp.pad(values[:, 1:], ((0, 0), (0, 1)))
  deltas = (rewards + gamma * next_values - values) * valid
  raw_advantages = reverse_discounted_cumsum(deltas, gamma * lam)
  returns = (raw_advantages + values) * valid
  return (whiten(raw_advantages, valid) if whiten_advantages else raw_advantages), returns


def prm_value_advantages(
    q: chex.Array, acc: chex.Array, mask: chex.Array, *, beta
) -> tuple[chex.Array, chex.Array]:
  """ "PRIME as value model": A[i,t] = acc_i − v_φ(y_<t), v_φ(y_<t) = β·Σ_{s<t} q[i,s].

  The implicit PRM's partial log-ratio sum serves as the value of the prefix (v = 0
  before the first token), so the advantage is the outcome minus that value.

  Args:
    q: [N, T] log-ratio log π_φ − log π_ref; acc: [N] outcome scores; mask: [N, T].
    beta: the PRM β.
  Returns:
    (advantages, returns): returns are the value targets acc_i on every valid token.
  """
  scores, acc, valid = _check_streams(q, acc, mask, scores_name="q")
  prefix_values = beta * (jnp.cumsum(scores, axis=1) - scores)
  returns = acc[:, None] * valid
  return (returns - prefix_values) * valid, returns
