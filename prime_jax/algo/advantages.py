"""PRIME's advantage estimator: leave-one-out (RLOO) returns of two reward streams (spec §4)."""

import chex
import jax.numpy as jnp

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


def rloo_returns(
    rewards: chex.Array,
    reward_mask: chex.Array,
    *,
    n: int,
    gamma: float | chex.Array = 1.0,
    form: str = "code",
) -> chex.Array:
  """Leave-one-out returns of one reward stream.

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
  """PRIME's advantages: RLOO on the process and outcome streams, summed, whitened.

  returns = coef_proc · rloo_returns(proc_scores, mask, gamma_proc) + coef_out · rloo_returns(acc
  on the last valid token, that token, gamma_out); advantages = `whiten(returns, mask)` over all valid tokens of
  the whole batch (unbiased variance, eps 1e-8, mean not added back). coef_proc = 0 is
  RLOO with the outcome verifier only.

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
