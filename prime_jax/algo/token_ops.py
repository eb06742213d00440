"""Masked per-token building blocks over [N, T] response batches.

Rows are responses, columns are response positions; a 0/1 float mask marks the
valid tokens (t < L_i, right-padded).
"""

import chex
import jax
import jax.numpy as jnp

from prime_jax.algo.validation import as_float_mask, check_token_arrays, compute_dtype


def reverse_discounted_cumsum(x: chex.Array, gamma: float | chex.Array = 1.0) -> chex.Array:
  """y[i, t] = Σ_{s>=t} gamma^(s-t) · x[i, s] along axis 1 of an [N, T] array.

  An associative scan over the linear recurrence y_t = x_t + gamma · y_{t+1}: log-depth,
  one code path for every gamma (gamma = 1 is the plain reverse cumulative sum).
  """
  decay = jnp.full_like(x, gamma)

  def compose(later, earlier):
    # `later` holds positions after `earlier` in time (the scan runs from the end).
    decay_later, sum_later = later
    decay_earlier, sum_earlier = earlier
    return decay_later * decay_earlier, sum_earlier + decay_earlier * sum_later

  return jax.lax.associative_scan(compose, (decay, x), reverse=True, axis=1)[1]


def last_token_mask(mask: chex.Array) -> chex.Array:
  """[N, T] 0/1 float: 1 at each row's last valid token, 0 elsewhere (all 0 for empty rows)."""
  check_token_arrays(mask=mask)
  valid = as_float_mask(mask, jnp.float32)
  valid_after = jnp.cumsum(valid[:, ::-1], axis=1)[:, ::-1] - valid
  return valid * (valid_after == 0)


def outcome_token_rewards(acc: chex.Array, mask: chex.Array) -> chex.Array:
  """The outcome reward stream: acc[i] on row i's last valid token, 0 elsewhere.

  Args:
    acc: [N] verifier scores in [0, 1].
    mask: [N, T] valid-token mask.
  Returns:
    [N, T] rewards, in acc's float dtype (at least float32).
  """
  last = last_token_mask(mask).astype(compute_dtype(acc))
  chex.assert_shape(
      acc, (last.shape[0],), custom_message="`acc` must be [N]", exception_type=ValueError
  )
  return last * acc[:, None]


def masked_mean(x: chex.Array, mask: chex.Array) -> chex.Array:
  """Mean of x over the entries where mask is 1 (0 when there are none)."""
  return jnp.sum(jnp.where(mask > 0, x, 0)) / jnp.maximum(jnp.sum(mask), 1)


def masked_stats(prefix: str, x: chex.Array, mask: chex.Array) -> dict:
  """{prefix}_mean / _std / _min / _max of x [N, T] over valid tokens (scalars): metrics."""
  valid = mask > 0
  mean = masked_mean(x, mask)
  return {
      f"{prefix}_mean": mean,
      f"{prefix}_std": jnp.sqrt(masked_mean((x - mean) ** 2, mask)),
      f"{prefix}_min": jnp.min(jnp.where(valid, x, jnp.inf)),
      f"{prefix}_max": jnp.max(jnp.where(valid, x, -jnp.inf)),
  }


def whiten(values: chex.Array, mask: chex.Array, *, eps: float = 1e-8) -> chex.Array:
  """(values − mean) / sqrt(var + eps) over the valid tokens; 0 on padding.

  Mean and *unbiased* variance are taken over all valid tokens of the whole batch
  (as verl's masked_whiten); the mean is not added back.

  Args:
    values: [N, T].
    mask: [N, T] valid-token mask (bool or 0/1).
  Returns:
    [N, T] whitened values.
  """
  check_token_arrays(values=values, mask=mask)
  valid = as_float_mask(mask, compute_dtype(values))
  mean = masked_mean(values, valid)
  centered = jnp.where(valid > 0, values - mean, 0)
  var = jnp.sum(centered**2) / jnp.maximum(jnp.sum(valid) - 1, 1)
  return centered * jax.lax.rsqrt(var + eps)


def group_rows(x: chex.Array, n: int) -> chex.Array:
  """[N, ...] → [N // n, n, ...]: the n contiguous samples of each prompt on axis 1."""
  return x.reshape(x.shape[0] // n, n, *x.shape[1:])
