"""How the released code shapes the process rewards before the advantages: their density
(`at_granularity`) and the `batch_norm` scaling (`normalize_process_rewards`). The rewards
themselves (the implicit PRM's log-ratio) are `prime_jax.algo.prime.implicit_rewards`; these
conventions and where they depart from the paper: docs/algorithm.md."""

import chex
import jax.numpy as jnp

from prime_jax.algo.token_ops import last_token_mask, reverse_discounted_cumsum
from prime_jax.algo.validation import (
    as_float_mask,
    check_choice,
    check_num_shards,
    check_token_arrays,
    compute_dtype,
)

GRANULARITIES = ("token", "whole")


def at_granularity(scores: chex.Array, mask: chex.Array, granularity: str) -> chex.Array:
  """Token scores at a density: "token" keeps them, "whole" puts each row's Σ_t score on its last
  valid token (0 elsewhere): the same total credit, none of it placed within the response.

  Args:
    scores: [N, T] token scores, 0 on padding.
    mask: [N, T] valid-token mask (bool or 0/1).
    granularity: "token" | "whole".
  Returns:
    [N, T] scores in the dtype of `scores` (at least float32).
  """
  check_token_arrays(scores=scores, mask=mask)
  check_choice("granularity", granularity, GRANULARITIES)
  if granularity == "token":
    return scores
  dtype = compute_dtype(scores)
  last = last_token_mask(as_float_mask(mask, dtype)).astype(dtype)
  return jnp.sum(scores.astype(dtype), axis=1, keepdims=True) * last


def normalize_process_rewards(
    scores: chex.Array, mask: chex.Array, *, num_shards: int = 1
) -> chex.Array:
  """The released code's `batch_norm` scaling (docs/algorithm.md, "Implicit process rewards"):
  score / (max_{i,t} |Σ_{s>=t} score[i,s]| + 1e-6).

  One scale per contiguous shard of the batch (rows [k·N/num_shards, (k+1)·N/num_shards)),
  the max taken over that shard's valid tokens: num_shards=1 is norm_scope='global', the
  data-parallel shard count reproduces the released run's per-shard scaling.

  Args:
    scores: [N, T] process scores (e.g. from `implicit_rewards`).
    mask: [N, T] valid-token mask (bool or 0/1).
    num_shards: number of equal contiguous row blocks; must divide N.
  Returns:
    [N, T] scaled scores, 0 on padding.
  """
  num_rows, _ = check_token_arrays(scores=scores, mask=mask)
  check_num_shards(num_rows, num_shards)
  dtype = compute_dtype(scores)
  valid = as_float_mask(mask, dtype)
  scores = jnp.where(valid > 0, scores.astype(dtype), 0)
  abs_returns = jnp.abs(reverse_discounted_cumsum(scores)) * valid
  shard_max = jnp.max(abs_returns.reshape(num_shards, -1), axis=1)
  row_scale = jnp.repeat(shard_max + 1e-6, num_rows // num_shards)
  return scores / row_scale[:, None]
