"""PPO-clip policy loss (docs/algorithm.md, "The policy loss"), the value loss for the PPO baseline,
and their aggregation."""

import chex
import jax
import jax.numpy as jnp

from prime_jax.algo.token_ops import masked_mean
from prime_jax.algo.validation import (
    as_float_mask,
    check_choice,
    check_token_arrays,
    compute_dtype,
)

LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean")
RATIO_QUANTILES = (0.05, 0.5, 0.95)


def aggregate_token_loss(
    token_loss: chex.Array,
    mask: chex.Array,
    *,
    agg: str = "seq-mean-token-mean",
    denominator: float | chex.Array | None = None,
) -> chex.Array:
  """Reduces an [N, T] per-token loss to a scalar over valid tokens.

  agg="seq-mean-token-mean" (released run): each sequence's mean over its valid tokens,
  summed over sequences and divided by the number of non-empty sequences.
  agg="token-mean": sum over valid tokens divided by their number.
  `denominator`, when given, replaces that count: pass a whole mini-batch's count of
  non-empty sequences (or valid tokens) when accumulating gradients over micro-batches,
  so that the sum of the micro-batch losses equals the mini-batch loss.
  """
  check_token_arrays(token_loss=token_loss, mask=mask)
  check_choice("agg", agg, LOSS_AGGREGATIONS)
  valid = as_float_mask(mask, compute_dtype(token_loss))
  token_loss = jnp.where(valid > 0, token_loss, 0)
  lengths = jnp.sum(valid, axis=1)
  if agg == "token-mean":
    total, count = jnp.sum(token_loss), jnp.sum(lengths)
  else:
    total = jnp.sum(jnp.sum(token_loss, axis=1) / jnp.maximum(lengths, 1))
    count = jnp.sum(lengths > 0)
  return total / (jnp.maximum(count, 1) if denominator is None else denominator)


def ppo_clip_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    clip_eps: float = 0.2,
    agg: str = "seq-mean-token-mean",
    denominator: float | chex.Array | None = None,
) -> tuple[chex.Array, dict]:
  """PPO clipped surrogate: per token max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = exp(logp − old_logp).

  Args:
    logp: [N, T] log-probs of the sampled tokens under the policy being trained.
    old_logp: [N, T] the same under the sampling (old) policy; treated as constant.
    advantages: [N, T] advantages; treated as constant.
    mask: [N, T] valid-token mask (bool or 0/1). Padding gets neither loss nor gradient,
      whatever values it holds.
    clip_eps: ε.
    agg, denominator: see `aggregate_token_loss`.
  Returns:
    (loss, metrics). metrics, over valid tokens and without gradient: clip_frac (share of
    tokens where the clipped term is the active one), approx_kl (mean old_logp − logp, the
    k1 estimate of KL(old‖new)), approx_kl_k3 (mean (ρ − 1) − log ρ, non-negative),
    ratio_min, ratio_max, ratio_mean and ratio_p05 / ratio_p50 / ratio_p95.
  """
  check_token_arrays(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
  dtype = compute_dtype(logp, old_logp, advantages)
  valid = as_float_mask(mask, dtype)
  is_valid = valid > 0
  old_logp = jax.lax.stop_gradient(old_logp.astype(dtype))
  advantages = jax.lax.stop_gradient(jnp.where(is_valid, advantages.astype(dtype), 0))
  # Zeroing the log-ratio on padding (not masking the loss afterwards) keeps inf/nan there
  # from reaching the loss or the gradient.
  log_ratio = jnp.where(is_valid, logp.astype(dtype) - old_logp, 0)
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps)
  loss = aggregate_token_loss(
      jnp.maximum(unclipped, clipped), valid, agg=agg, denominator=denominator
  )

  ratio, log_ratio = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(log_ratio)
  valid_ratios = jnp.where(is_valid, ratio, jnp.nan)
  quantiles = jnp.nanquantile(valid_ratios, jnp.asarray(RATIO_QUANTILES, dtype))
  metrics = {
      "clip_frac": masked_mean((clipped > unclipped).astype(dtype), valid),
      "approx_kl": masked_mean(-log_ratio, valid),
      "approx_kl_k3": masked_mean(ratio - 1 - log_ratio, valid),
      "ratio_min": jnp.min(jnp.where(is_valid, ratio, jnp.inf)),
      "ratio_max": jnp.max(jnp.where(is_valid, ratio, -jnp.inf)),
      "ratio_mean": masked_mean(ratio, valid),
  }
  metrics.update({f"ratio_p{round(q * 100):02d}": v for q, v in zip(RATIO_QUANTILES, quantiles)})
  return loss, metrics


def value_loss(
    values: chex.Array,
    returns: chex.Array,
    mask: chex.Array,
    *,
    old_values: chex.Array | None = None,
    clip_eps: float = 0.5,
    agg: str = "token-mean",
    denominator: float | chex.Array | None = None,
) -> tuple[chex.Array, dict]:
  """Value-head regression loss for the PPO baseline: 0.5·(V − returns)², aggregated.

  With `old_values`, the clipped form of PPO/verl: per token
  0.5·max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²).

  Args:
    values: [N, T] current value predictions; returns: [N, T] targets (constant);
    mask: [N, T] valid-token mask; old_values: [N, T] predictions at sampling time.
    clip_eps: value clip range ε (used only with old_values).
    agg, denominator: see `aggregate_token_loss` (verl's value loss is a token mean).
  Returns:
    (loss, {"value_clip_frac": share of valid tokens where the clipped term is active}).
  """
  arrays = dict(values=values, returns=returns, mask=mask)
  if old_values is not None:
    arrays["old_values"] = old_values
  check_token_arrays(**arrays)
  dtype = compute_dtype(values, returns)
  valid = as_float_mask(mask, dtype)
  values = jnp.where(valid > 0, values.astype(dtype), 0)
  returns = jax.lax.stop_gradient(jnp.where(valid > 0, returns.astype(dtype), 0))
  errors = (values - returns) ** 2
  if old_values is None:
    token_loss, clip_active = errors, jnp.zeros_like(errors)
  else:
    old_values = jax.lax.stop_gradient(jnp.where(valid > 0, old_values.astype(dtype), 0))
    clipped_errors = (jnp.clip(values, old_values - clip_eps, old_values + clip_eps) - returns) ** 2
    token_loss = jnp.maximum(errors, clipped_errors)
    clip_active = (clipped_errors > errors).astype(dtype)
  loss = 0.5 * aggregate_token_loss(token_loss, valid, agg=agg, denominator=denominator)
  return loss, {"value_clip_frac": masked_mean(clip_active, valid)}
