"""The implicit PRM's other loss, the later port's pairwise DPO loss (`rl.prm_loss="dpo"`), and the
logged PRM pair accuracy. The paper's CE loss is `prime_jax.algo.prime.prm_ce_loss`."""

import chex
import jax
import jax.numpy as jnp

from prime_jax.algo.prime import sequence_reward
from prime_jax.algo.token_ops import group_rows
from prime_jax.algo.validation import (
    check_group_size,
    check_per_response,
    check_token_arrays,
    compute_dtype,
)


def prm_dpo_loss(
    q: chex.Array,
    acc: chex.Array,
    mask: chex.Array,
    *,
    beta,
    n: int,
    q_sum_before: chex.Array | None = None,
) -> chex.Array:
  """The pairwise-within-group PRM loss of the later PRIME port (`prm_loss=dpo`).

  With Q_i = β·Σ_t q[i,t]: a response with acc_i > 0 is pushed above the mean Q of its
  group's responses with lower acc; a response with acc_i = 0 is pushed below the mean Q
  of those with higher acc:
      loss_i = −log σ(s_i · (Q_i − mean_{j∈C_i} Q'_j)),   s_i = +1 if acc_i > 0 else −1,
  with the mean taken as 0 when C_i is empty. The others' Q'_j = β·q_sum_before[j] come, as in
  the port (its Q_bc), from a forward of the PRM before the step's updates, and carry no
  gradient; without `q_sum_before` they are the detached Q_j of `q` itself (the same thing
  when `q` is that forward's).

  Args:
    q: [N, T] log-ratio; acc: [N] labels in [0, 1]; mask: [N, T] valid-token mask.
    beta: the PRM β. n: samples per prompt (groups are contiguous rows).
    q_sum_before: [N] Σ_t q[j,t] of each response under the PRM before this step's updates.
  Returns:
    scalar mean over the N responses.
  """
  num_rows, _ = check_token_arrays(q=q, mask=mask)
  check_per_response(num_rows, acc=acc)
  check_group_size(num_rows, n)
  reward = sequence_reward(q, mask, beta)
  acc = acc.astype(reward.dtype)
  acc_g = group_rows(acc, n)
  if q_sum_before is None:
    others = reward
  else:
    check_per_response(num_rows, q_sum_before=q_sum_before)
    others = beta * q_sum_before.astype(reward.dtype)
  others = group_rows(jax.lax.stop_gradient(others), n)
  positive = acc_g > 0  # [B, n]
  # compared[b, i, j]: j is in C_i (strictly lower acc if acc_i > 0, else strictly higher).
  compared = jnp.where(
      positive[:, :, None],
      acc_g[:, None, :] < acc_g[:, :, None],
      acc_g[:, None, :] > acc_g[:, :, None],
  )
  count = jnp.sum(compared, axis=2)
  other_mean = jnp.sum(jnp.where(compared, others[:, None, :], 0), axis=2) / jnp.maximum(count, 1)
  sign = jnp.where(positive, 1.0, -1.0).astype(reward.dtype)
  margin = sign * (group_rows(reward, n) - other_mean)
  return -jnp.mean(jax.nn.log_sigmoid(margin))


def _pair_accuracy(q_sum: chex.Array, acc: chex.Array, n: int, agree) -> chex.Array:
  """Mean over groups of the |Δacc|-weighted share of pairs a < b (a earlier in the group) with
  agree(q_sum_a − q_sum_b, acc_a − acc_b); 0.5 for a group whose acc are all equal."""
  chex.assert_rank(q_sum, 1, custom_message="`q_sum` must be [N]", exception_type=ValueError)
  num_rows = q_sum.shape[0]
  check_per_response(num_rows, acc=acc)
  check_group_size(num_rows, n)
  dtype = compute_dtype(q_sum, acc)
  q_g = group_rows(q_sum.astype(dtype), n)
  acc_g = group_rows(acc.astype(dtype), n)
  q_diff = q_g[:, :, None] - q_g[:, None, :]  # [B, n, n]: [b, a, c] = q_a − q_c
  acc_diff = acc_g[:, :, None] - acc_g[:, None, :]
  earlier = jnp.triu(jnp.ones((n, n), bool), k=1)  # pairs a < c
  weight = jnp.where(earlier, jnp.abs(acc_diff), 0)  # 0 on equal-acc pairs
  hits = jnp.where(agree(q_diff, acc_diff), weight, 0)
  total = jnp.sum(weight, axis=(1, 2))
  group_accuracy = jnp.where(
      total > 0, jnp.sum(hits, axis=(1, 2)) / jnp.where(total > 0, total, 1), 0.5
  )
  return jnp.mean(group_accuracy)


def prm_pair_accuracy(q_sum: chex.Array, acc: chex.Array, *, n: int) -> chex.Array:
  """Within-group pairwise PRM accuracy, the released metric (`compute_dpo_accuracy`; the logged
  `prm/acc_before` / `prm/acc_after`).

  For each group: over pairs a < b (a earlier in the group) with acc_a ≠ acc_b, the
  |acc_a − acc_b|-weighted share with (q_sum_a − q_sum_b > 0) == (acc_a − acc_b > 0). A tie in
  q_sum predicts "b is better", so it counts as right exactly when acc_a < acc_b: an untrained
  PRM (q ≡ 0) scores the weighted share of informative pairs whose later response is the better
  one, about 0.5 over random sample orders (not 0: `prm_pair_accuracy_strict`). A group whose
  acc are all equal scores 0.5. The batch value is the unweighted mean over groups.

  Args:
    q_sum: [N] Σ_t q[i,t] per response (any positive scale, e.g. β, leaves it unchanged).
    acc: [N] outcome labels in [0, 1].
    n: samples per prompt (groups are contiguous rows).
  Returns:
    scalar in [0, 1].
  """
  return _pair_accuracy(q_sum, acc, n, lambda dq, dacc: (dq > 0) == (dacc > 0))


def prm_pair_accuracy_strict(q_sum: chex.Array, acc: chex.Array, *, n: int) -> chex.Array:
  """`prm_pair_accuracy` with ties counted as wrong: the weighted share of informative pairs with
  sign(q_sum_a − q_sum_b) = sign(acc_a − acc_b), so an untrained PRM (q ≡ 0) scores 0 on
  informative groups (0.5 on groups whose acc are all equal). Symmetric in the order of a group's
  responses. Args and returns as `prm_pair_accuracy`."""
  return _pair_accuracy(q_sum, acc, n, lambda dq, dacc: jnp.sign(dq) == jnp.sign(dacc))
