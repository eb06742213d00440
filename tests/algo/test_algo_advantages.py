"""rloo_returns / prime_advantages against the numpy reference, and their invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import GROUP_SIZES, TOL, WIDTH, call_jitted, random_batch
from prime_jax.algo import (
    implicit_rewards,
    last_token_mask,
    outcome_token_rewards,
    prime_advantages,
    rloo_returns,
    whiten,
)

f64 = lambda x: np.asarray(x, np.float64)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_rloo_returns_process_stream_match_reference(n, form, gamma):
  batch = random_batch(seed=60 + n, n=n, bool_mask=(form == "paper"))
  got = call_jitted(
      rloo_returns, batch["scores"], batch["mask"], n=n, form=form, traced=dict(gamma=gamma)
  )
  want = ref.rloo_returns(f64(batch["scores"]), np.asarray(batch["mask"], bool), n, gamma, form)
  np.testing.assert_allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("form", ["code", "paper"])
def test_rloo_returns_outcome_stream_is_standard_rloo(n, form):
  batch = random_batch(seed=70 + n, n=n)
  rewards = outcome_token_rewards(batch["acc"], batch["mask"])
  got = np.asarray(
      call_jitted(
          rloo_returns,
          rewards,
          last_token_mask(batch["mask"]),
          n=n,
          form=form,
          traced=dict(gamma=1.0),
      )
  )
  acc = f64(batch["acc"])
  for group_start in range(0, len(acc), n):
    group = acc[group_start : group_start + n]
    for k, i in enumerate(range(group_start, group_start + n)):
      loo_mean = (group.sum() - group[k]) / (n - 1)
      length = batch["lengths"][i]
      np.testing.assert_allclose(got[i, :length], acc[i] - loo_mean, **TOL)
      assert np.all(got[i, length:] == 0)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("coefs", [(1.0, 1.0), (0.0, 1.0), (0.5, 2.0)])
def test_prime_advantages_match_reference(n, form, coefs):
  batch = random_batch(seed=80 + n, n=n, bool_mask=(n == 4))
  coef_proc, coef_out = coefs
  adv, ret = call_jitted(
      prime_advantages,
      batch["scores"],
      batch["acc"],
      batch["mask"],
      n=n,
      form=form,
      traced=dict(coef_proc=coef_proc, coef_out=coef_out),
  )
  want_adv, want_ret = ref.prime_advantages(
      f64(batch["scores"]), f64(batch["acc"]), batch["lengths"], n, coef_proc, coef_out, form=form
  )
  np.testing.assert_allclose(np.asarray(ret), want_ret, **TOL)
  np.testing.assert_allclose(np.asarray(adv), want_adv, **TOL)


@pytest.mark.parametrize("gammas", [(0.95, 1.0), (1.0, 0.8), (0.9, 0.7)])
def test_prime_advantages_with_two_discounts_match_reference(gammas):
  """gamma_proc discounts the process stream only, gamma_out the outcome stream only."""
  gamma_proc, gamma_out = gammas
  batch = random_batch(seed=85, n=4)
  adv, ret = call_jitted(
      prime_advantages,
      batch["scores"],
      batch["acc"],
      batch["mask"],
      n=4,
      form="code",
      traced=dict(gamma_proc=gamma_proc, gamma_out=gamma_out),
  )
  want_adv, want_ret = ref.prime_advantages(
      f64(batch["scores"]),
      f64(batch["acc"]),
      batch["lengths"],
      4,
      gamma_proc=gamma_proc,
      gamma_out=gamma_out,
  )
  np.testing.assert_allclose(np.asarray(ret), want_ret, **TOL)
  np.testing.assert_allclose(np.asarray(adv), want_adv, **TOL)


@pytest.mark.parametrize("n", GROUP_SIZES)
def test_equal_prm_and_ref_reduce_to_outcome_only_rloo(n):
  batch = random_batch(seed=90 + n, n=n)
  scores = call_jitted(
      implicit_rewards,
      batch["logp_ref"],
      batch["logp_ref"],
      batch["mask"],
      granularity="token",
      beta=None,
  )
  assert np.all(np.asarray(scores) == 0)
  advantages = lambda s, coef_proc: call_jitted(
      prime_advantages,
      s,
      batch["acc"],
      batch["mask"],
      n=n,
      form="code",
      traced=dict(coef_proc=coef_proc, coef_out=1.0),
  )
  prime, outcome_only = advantages(scores, 1.0), advantages(batch["scores"], 0.0)
  for got, want in zip(prime, outcome_only):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("form", ["code", "paper"])
def test_leave_one_out_baseline_ignores_own_reward(form):
  """b_i = Σ_t (r[i,t] − r'[i,t]) / L_i, the baseline subtracted from i, must not move with r_i."""
  n, i = 4, 5
  batch = random_batch(seed=100, n=n)
  mask = np.asarray(batch["mask"])
  length = batch["lengths"][i]

  def baseline(scores):
    returns = np.asarray(
        call_jitted(rloo_returns, scores, mask, n=n, form=form, traced=dict(gamma=1.0))
    )
    return (scores[i, :length].sum() - returns[i, 0]) / length

  changed = batch["scores"].copy()
  changed[i, :length] += np.random.default_rng(0).normal(size=length).astype(np.float32) * 3
  np.testing.assert_allclose(baseline(changed), baseline(batch["scores"]), **TOL)
  # ... while a group-mate's reward does move it.
  changed[i + 1, 0] += 5.0
  assert abs(baseline(changed) - baseline(batch["scores"])) > 0.1


@pytest.mark.parametrize("n", GROUP_SIZES)
def test_code_and_paper_forms_agree_only_at_first_token(n):
  batch = random_batch(seed=110 + n, n=n)
  code, paper = (
      np.asarray(
          call_jitted(
              rloo_returns, batch["scores"], batch["mask"], n=n, form=form, traced=dict(gamma=1.0)
          )
      )
      for form in ("code", "paper")
  )
  np.testing.assert_allclose(code[:, 0], paper[:, 0], **TOL)
  assert np.abs(code[:, 1:] - paper[:, 1:]).max() > 1e-2


@pytest.mark.parametrize("form", ["code", "paper"])
def test_whitened_advantages_have_zero_mean_unit_std_and_no_padding(form):
  batch = random_batch(seed=120, n=4)
  adv, ret = call_jitted(
      prime_advantages,
      batch["scores"],
      batch["acc"],
      batch["mask"],
      n=4,
      form=form,
      traced=dict(coef_proc=1.0, coef_out=1.0),
  )
  valid = np.asarray(batch["mask"]) > 0
  tokens = np.asarray(adv, np.float64)[valid]
  np.testing.assert_allclose(tokens.mean(), 0.0, atol=1e-6)
  np.testing.assert_allclose(tokens.std(ddof=1), 1.0, atol=1e-6)
  assert np.all(np.asarray(adv)[~valid] == 0) and np.all(np.asarray(ret)[~valid] == 0)


def test_padding_gets_no_advantage_or_gradient_even_with_nan():
  batch = random_batch(seed=130, n=4)
  padding = ~(np.asarray(batch["mask"]) > 0)
  scores = jnp.asarray(np.where(padding, np.nan, batch["scores"]))

  def cubed_advantage_sum(s):
    adv = prime_advantages(s, batch["acc"], batch["mask"], n=4)[0]
    return jnp.sum(adv**3), adv

  (_, adv), grad = jax.jit(jax.value_and_grad(cubed_advantage_sum, has_aux=True))(scores)
  adv, grad = np.asarray(adv), np.asarray(grad)
  assert np.all(np.isfinite(adv)) and np.all(adv[padding] == 0)
  assert np.all(grad[padding] == 0) and np.all(np.isfinite(grad))


def test_whiten_matches_reference_and_last_token_mask():
  batch = random_batch(seed=140, n=2, bool_mask=True)
  np.testing.assert_allclose(
      np.asarray(whiten(batch["values"], batch["mask"])),
      ref.whiten(f64(batch["values"]), batch["lengths"]),
      **TOL,
  )
  last = np.asarray(last_token_mask(batch["mask"]))
  for i, length in enumerate(batch["lengths"]):
    assert last[i].sum() == 1 and last[i, length - 1] == 1
  assert np.all(np.asarray(last_token_mask(np.zeros((2, WIDTH)))) == 0)


def test_bad_inputs_are_named():
  batch = random_batch(seed=0, n=4)
  with pytest.raises(ValueError, match="form"):
    rloo_returns(batch["scores"], batch["mask"], n=4, form="verl")
  with pytest.raises(ValueError, match="n=3"):
    prime_advantages(batch["scores"], batch["acc"], batch["mask"], n=3)
  with pytest.raises(ValueError, match="acc"):
    prime_advantages(batch["scores"], batch["acc"][:8], batch["mask"], n=4)
  with pytest.raises(ValueError, match="reward_mask"):
    rloo_returns(batch["scores"], batch["mask"][:8], n=4)
