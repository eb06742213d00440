"""PRM CE / DPO losses and pair accuracy against the numpy reference; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import GROUP_SIZES, TOL, call_jitted, random_batch
from prime_jax.algo import (
    implicit_rewards,
    prm_ce_loss,
    prm_dpo_loss,
    prm_pair_accuracy,
    prm_pair_accuracy_strict,
)

f64 = lambda x: np.asarray(x, np.float64)
BETA = 0.05


def _q(batch):
  return np.asarray(implicit_rewards(batch["logp_prm"], batch["logp_ref"], batch["mask"]))


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("beta", [BETA, 3.0])
def test_prm_ce_loss_matches_reference(n, beta):
  batch = random_batch(seed=20 + n, n=n)
  q = _q(batch)
  got = call_jitted(prm_ce_loss, q, batch["acc"], batch["mask"], beta=beta)
  want = ref.prm_ce_loss(f64(q), f64(batch["acc"]), batch["lengths"], beta)
  np.testing.assert_allclose(float(got), want, **TOL)


def test_prm_ce_loss_is_finite_for_huge_logits():
  q = jnp.array([[1e4, 0.0], [-1e4, 0.0]], jnp.float32)
  loss = prm_ce_loss(q, jnp.array([1.0, 1.0]), jnp.ones((2, 2)), beta=1.0)
  # Row 0 is confidently right (≈0 loss), row 1 confidently wrong (loss = 1e4).
  np.testing.assert_allclose(float(loss), 1e4 / 2, rtol=1e-6)


@pytest.mark.parametrize("n", GROUP_SIZES)
def test_prm_dpo_loss_matches_reference(n):
  batch = random_batch(seed=30 + n, n=n)
  q = _q(batch)
  got = call_jitted(prm_dpo_loss, q, batch["acc"], batch["mask"], beta=BETA, n=n)
  want = ref.prm_dpo_loss(f64(q), f64(batch["acc"]), batch["lengths"], BETA, n)
  np.testing.assert_allclose(float(got), want, **TOL)


ACCURACIES = [(prm_pair_accuracy, "released"), (prm_pair_accuracy_strict, "wrong")]


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("fn, ties", ACCURACIES)
@pytest.mark.parametrize("tied", [False, True])
def test_prm_pair_accuracy_matches_reference(n, fn, ties, tied):
  batch = random_batch(seed=40 + n, n=n)
  q_sum = _q(batch).sum(axis=1)
  if tied:  # few distinct values: many tied pairs, on both sides of each acc order
    q_sum = np.round(q_sum / 2).astype(np.float32)
  got = call_jitted(fn, q_sum, batch["acc"], n=n)
  want = ref.prm_pair_accuracy(f64(q_sum), f64(batch["acc"]), n, ties)
  np.testing.assert_allclose(float(got), want, **TOL)


@pytest.mark.parametrize("fn", [prm_pair_accuracy, prm_pair_accuracy_strict])
def test_prm_pair_accuracy_without_ties(fn):
  # Groups of 2: right, all-equal acc (scores 0.5), right, backwards; the batch is the group mean.
  acc = jnp.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0])
  q_sum = jnp.array([2.0, -1.0, 3.0, 3.0, 0.0, -5.0, -1.0, 1.0])
  np.testing.assert_allclose(float(fn(q_sum[:6], acc[:6], n=2)), 2.5 / 3, rtol=1e-6)
  np.testing.assert_allclose(float(fn(q_sum, acc, n=2)), 2.5 / 4, rtol=1e-6)


def test_prm_pair_accuracy_tie_rules():
  # acc (1, .5, 0, 0), q_sum (0, 1, 0, 0): the tied pairs (1, 0) have the better response first,
  # wrong under both rules. Right: the two (.5, 0) pairs (weight .5 each); wrong: (1, .5)
  # (weight .5) and the tied (1, 0) pairs (weight 1 each).
  q_sum, acc = jnp.array([0.0, 1.0, 0.0, 0.0]), jnp.array([1.0, 0.5, 0.0, 0.0])
  for fn in (prm_pair_accuracy, prm_pair_accuracy_strict):
    np.testing.assert_allclose(float(fn(q_sum, acc, n=4)), 1.0 / 3.5, rtol=1e-6)
  # The same group reversed: acc (0, 0, .5, 1), q_sum (0, 0, 1, 0). Released: a tie says "the
  # later one is better", right for the tied (0, 1) pairs (weight 1 each) and the (0, .5) pairs
  # (.5 each), wrong for (.5, 1): 3 / 3.5. Ties wrong: only the (0, .5) pairs: 1 / 3.5.
  q_sum, acc = q_sum[::-1], acc[::-1]
  np.testing.assert_allclose(float(prm_pair_accuracy(q_sum, acc, n=4)), 3.0 / 3.5, rtol=1e-6)
  np.testing.assert_allclose(float(prm_pair_accuracy_strict(q_sum, acc, n=4)), 1.0 / 3.5, rtol=1e-6)


def test_untrained_prm_scores_one_half_released_and_zero_strict():
  """q ≡ 0 on every ordering of two correct and two wrong responses (the 6 groups): the released
  rule gives 0.5 over the orderings ([1, 0, 0, 1] alone gives 0.5, [1, 1, 0, 0] 0, [0, 0, 1, 1]
  1); ties-wrong gives 0."""
  orders = [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]]
  acc = jnp.array(orders, jnp.float32).reshape(-1)
  zeros = jnp.zeros_like(acc)
  assert float(prm_pair_accuracy(zeros, acc, n=4)) == 0.5
  assert float(prm_pair_accuracy_strict(zeros, acc, n=4)) == 0.0
  for order, want in (([1, 0, 0, 1], 0.5), ([1, 1, 0, 0], 0.0), ([0, 0, 1, 1], 1.0)):
    assert float(prm_pair_accuracy(jnp.zeros(4), jnp.array(order, jnp.float32), n=4)) == want


@pytest.mark.parametrize("n", GROUP_SIZES)
def test_prm_dpo_loss_with_pre_update_others_matches_reference(n):
  """The others' Q from a pass before the update (q_sum_before), as the port's Q_bc: the loss
  matches the reference, moves with q_sum_before, and sends no gradient into it."""
  batch = random_batch(seed=35 + n, n=n)
  q = _q(batch)
  q_sum_before = (q.sum(axis=1) + np.random.default_rng(n).normal(size=len(q))).astype(np.float32)
  got = call_jitted(
      prm_dpo_loss,
      q,
      batch["acc"],
      batch["mask"],
      beta=BETA,
      n=n,
      traced=dict(q_sum_before=q_sum_before),
  )
  want = ref.prm_dpo_loss(f64(q), f64(batch["acc"]), batch["lengths"], BETA, n, f64(q_sum_before))
  np.testing.assert_allclose(float(got), want, **TOL)
  same_pass = prm_dpo_loss(
      q, batch["acc"], batch["mask"], beta=BETA, n=n, q_sum_before=jnp.sum(jnp.asarray(q), 1)
  )
  np.testing.assert_allclose(
      float(same_pass), float(prm_dpo_loss(q, batch["acc"], batch["mask"], beta=BETA, n=n)), **TOL
  )
  assert abs(float(got) - float(same_pass)) > 1e-4
  grad = jax.grad(
      lambda before: prm_dpo_loss(
          q, batch["acc"], batch["mask"], beta=BETA, n=n, q_sum_before=before
      )
  )(jnp.asarray(q_sum_before))
  assert np.all(np.asarray(grad) == 0)


def test_prm_ce_loss_gradient_matches_finite_differences():
  batch = random_batch(seed=50, n=4)
  with jax.enable_x64(True):
    q = jnp.asarray(_q(batch), jnp.float64)
    acc, mask = jnp.asarray(batch["acc"], jnp.float64), jnp.asarray(batch["mask"])
    loss = lambda x: prm_ce_loss(x, acc, mask, beta=0.7)
    grad = np.asarray(jax.grad(loss)(q))
    valid = np.asarray(mask) > 0
    step = 1e-6
    for i, t in [(0, 0), (0, 11), (3, 0), (9, 0), (15, 0)] + list(zip(*np.nonzero(valid)))[::7]:
      bump = jnp.zeros_like(q).at[i, t].set(step)
      numeric = (float(loss(q + bump)) - float(loss(q - bump))) / (2 * step)
      np.testing.assert_allclose(grad[i, t], numeric, rtol=1e-6, atol=1e-10)
    assert np.all(grad[~valid] == 0), "padding must receive no gradient"
    assert np.all(grad[valid] != 0)


@pytest.mark.parametrize("loss_fn", [prm_ce_loss, prm_dpo_loss])
def test_prm_losses_ignore_padding(loss_fn):
  batch = random_batch(seed=51, n=4)
  padding = ~np.asarray(batch["mask"], bool)
  kwargs = dict(beta=BETA) if loss_fn is prm_ce_loss else dict(beta=BETA, n=4)
  logp_prm = jnp.asarray(np.where(padding, np.inf, batch["logp_prm"]))

  def loss_of_prm_logp(x):
    q = implicit_rewards(x, batch["logp_ref"], batch["mask"])
    return loss_fn(q, batch["acc"], batch["mask"], **kwargs)

  value, grad = jax.value_and_grad(loss_of_prm_logp)(logp_prm)
  assert np.isfinite(float(value))
  grad = np.asarray(grad)
  assert np.all(grad[padding] == 0) and np.all(np.isfinite(grad))


def test_bad_inputs_are_named():
  batch = random_batch(seed=0, n=4)
  q = _q(batch)
  with pytest.raises(ValueError, match="acc"):
    prm_ce_loss(q, batch["acc"][:-1], batch["mask"], beta=BETA)
  with pytest.raises(ValueError, match="n=3"):
    prm_pair_accuracy(q.sum(1), batch["acc"], n=3)
  with pytest.raises(ValueError, match="`n`"):
    prm_dpo_loss(q, batch["acc"], batch["mask"], beta=BETA, n=1)
