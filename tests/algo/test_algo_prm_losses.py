"""PRM CE / DPO losses and pair accuracy against the numpy reference; gradients (spec §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import GROUP_SIZES, TOL, call_jitted, random_batch
from prime_jax.algo import implicit_rewards, prm_ce_loss, prm_dpo_loss, prm_pair_accuracy

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


@pytest.mark.parametrize("n", GROUP_SIZES)
def test_prm_pair_accuracy_matches_reference(n):
  batch = random_batch(seed=40 + n, n=n)
  q_sum = _q(batch).sum(axis=1)
  got = call_jitted(prm_pair_accuracy, q_sum, batch["acc"], n=n)
  want = ref.prm_pair_accuracy(f64(q_sum), f64(batch["acc"]), n)
  np.testing.assert_allclose(float(got), want, **TOL)


def test_prm_pair_accuracy_cases():
  # Groups of 2: right, all-equal acc (scores 0.5), right, backwards; the batch is the group mean.
  acc = jnp.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0])
  q_sum = jnp.array([2.0, -1.0, 3.0, 3.0, 0.0, -5.0, -1.0, 1.0])
  np.testing.assert_allclose(float(prm_pair_accuracy(q_sum[:6], acc[:6], n=2)), 2.5 / 3, rtol=1e-6)
  np.testing.assert_allclose(float(prm_pair_accuracy(q_sum, acc, n=2)), 2.5 / 4, rtol=1e-6)
  # |Δacc| weighting and ties: acc (1, .5, 0, 0), q_sum (0, 1, 0, 0). Right: the two (.5, 0)
  # pairs (weight .5 each); wrong: (1, .5) (weight .5) and the tied (1, 0) pairs (weight 1 each).
  got = prm_pair_accuracy(jnp.array([0.0, 1.0, 0.0, 0.0]), jnp.array([1.0, 0.5, 0.0, 0.0]), n=4)
  np.testing.assert_allclose(float(got), 1.0 / 3.5, rtol=1e-6)
  # An untrained PRM (all sums tied) is right on no pair.
  assert float(prm_pair_accuracy(jnp.zeros(4), jnp.array([1.0, 0.0, 0.0, 1.0]), n=4)) == 0.0


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
