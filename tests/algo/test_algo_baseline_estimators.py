"""Table 4 estimators (REINFORCE, GRPO, PPO/GAE + value loss, PRM as value model) vs the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import GROUP_SIZES, TOL, call_jitted, random_batch
from prime_jax.algo import (
    gae_advantages,
    grpo_advantages,
    outcome_token_rewards,
    prm_value_advantages,
    reinforce_advantages,
    value_loss,
)

f64 = lambda x: np.asarray(x, np.float64)
COEFS = [(1.0, 1.0), (0.0, 1.0)]  # with PRIME's process rewards, and outcome-only


def _assert_padding_zero(batch, *arrays):
  padding = ~(np.asarray(batch["mask"]) > 0)
  for x in arrays:
    assert np.all(np.asarray(x)[padding] == 0)


@pytest.mark.parametrize("coefs", COEFS)
@pytest.mark.parametrize("gammas", [(1.0, 1.0), (0.9, 1.0), (1.0, 0.8)])
def test_reinforce_matches_reference(coefs, gammas):
  batch = random_batch(seed=200, n=4)
  traced = dict(coef_proc=coefs[0], coef_out=coefs[1], gamma_proc=gammas[0], gamma_out=gammas[1])
  adv, ret = call_jitted(
      reinforce_advantages, batch["scores"], batch["acc"], batch["mask"], traced=traced
  )
  want = ref.reinforce_advantages(
      f64(batch["scores"]), f64(batch["acc"]), batch["lengths"], *coefs, *gammas
  )
  np.testing.assert_allclose(np.asarray(adv), want, **TOL)
  np.testing.assert_array_equal(np.asarray(adv), np.asarray(ret))
  _assert_padding_zero(batch, adv)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("coefs", COEFS)
@pytest.mark.parametrize("form", ["stable", "paper"])
def test_grpo_matches_reference(n, coefs, form):
  batch = random_batch(seed=210 + n, n=n)
  adv, ret = call_jitted(
      grpo_advantages,
      batch["scores"],
      batch["acc"],
      batch["mask"],
      n=n,
      form=form,
      traced=dict(coef_proc=coefs[0], coef_out=coefs[1]),
  )
  want = ref.grpo_advantages(
      f64(batch["scores"]), f64(batch["acc"]), batch["lengths"], n, *coefs, form=form
  )
  np.testing.assert_allclose(np.asarray(adv), want, **TOL)
  np.testing.assert_array_equal(np.asarray(adv), np.asarray(ret))
  _assert_padding_zero(batch, adv)


def test_grpo_default_form_is_stable():
  batch = random_batch(seed=215, n=4)
  default, _ = grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=4)
  stable, _ = grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=4, form="stable")
  paper, _ = grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=4, form="paper")
  np.testing.assert_array_equal(np.asarray(default), np.asarray(stable))
  assert np.abs(np.asarray(stable) - np.asarray(paper)).max() > 0.1


def test_grpo_stable_process_term_is_the_z_score_of_totals_at_the_first_token():
  """Equal lengths: at t = 0 the stable process term is (R_i − mean R) / (std R + eps)."""
  rng = np.random.default_rng(216)
  scores = rng.normal(size=(8, 5)).astype(np.float32)
  adv, _ = grpo_advantages(scores, np.zeros(8, np.float32), np.ones((8, 5)), n=4, coef_out=0.0)
  totals = f64(scores).sum(axis=1).reshape(2, 4)
  z = (totals - totals.mean(1, keepdims=True)) / (totals.std(1, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(np.asarray(adv)[:, 0], z.reshape(-1), **TOL)


@pytest.mark.parametrize("form", ["stable", "paper"])
def test_grpo_stable_stays_order_one_as_responses_grow_while_paper_grows(form):
  """I.i.d. token rewards, equal lengths L: the paper form's process term grows like L (its
  deviations are summed over ~L tokens but divided by the spread of per-token means, ~1/√L);
  the stable form's stays O(1). Root-mean-square advantage over the valid tokens, before any
  whitening."""
  rng = np.random.default_rng(217)
  n, num_groups = 4, 16
  acc = np.tile(np.array([1.0, 0.0, 0.0, 1.0], np.float32), num_groups)
  rms = {}
  for length in (8, 64, 512):
    scores = rng.normal(size=(n * num_groups, length)).astype(np.float32)
    adv, _ = grpo_advantages(scores, acc, np.ones_like(scores), n=n, form=form)
    rms[length] = float(np.sqrt(np.mean(f64(adv) ** 2)))
  if form == "stable":
    assert all(0.5 < r < 3 for r in rms.values()) and max(rms.values()) < 2 * min(rms.values()), rms
  else:
    assert rms[64] > 4 * rms[8] and rms[512] > 4 * rms[64] and rms[512] > 50, rms


@pytest.mark.parametrize("form", ["stable", "paper"])
@pytest.mark.parametrize("eps", [1e-6, 0.0])
@pytest.mark.parametrize(
    "case", ["equal_rewards", "equal_outcomes_n2", "length_one", "zero_rewards"]
)
def test_grpo_degenerate_groups_are_finite(form, eps, case):
  """Groups without spread (all rewards equal, n = 2 with equal outcomes, length-1 responses,
  all-zero process rewards) give finite advantages, equal to the reference's."""
  rng = np.random.default_rng(218)
  n, width = (2, 6) if case == "equal_outcomes_n2" else (4, 6)
  num_rows = 4 * n
  lengths = rng.integers(1, width + 1, size=num_rows)
  acc = rng.integers(0, 2, size=num_rows).astype(np.float32)
  scores = rng.normal(size=(num_rows, width)).astype(np.float32)
  if case == "equal_rewards":  # one constant per group, on every token; equal outcomes
    scores = np.repeat(rng.normal(size=num_rows // n), n)[:, None] * np.ones((1, width))
    acc = np.repeat(rng.integers(0, 2, size=num_rows // n), n).astype(np.float32)
  elif case == "equal_outcomes_n2":
    acc[:] = 1.0
  elif case == "length_one":
    lengths[:] = 1
  else:
    scores[:] = 0.0
  scores = scores.astype(np.float32)
  mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.float32)
  adv, _ = grpo_advantages(scores, acc, mask, n=n, form=form, eps=eps)
  adv = np.asarray(adv)
  assert np.all(np.isfinite(adv)), adv
  want = ref.grpo_advantages(f64(scores), f64(acc), list(lengths), n, 1.0, 1.0, eps, form)
  np.testing.assert_allclose(adv, want, **TOL)
  if case == "equal_rewards":  # no spread in either stream: every deviation is exactly 0
    assert np.all(adv == 0)


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95)])
def test_gae_matches_reference(gamma, lam):
  batch = random_batch(seed=220, n=4, bool_mask=True)
  token_rewards = outcome_token_rewards(batch["acc"], batch["mask"]) + np.where(
      batch["mask"], batch["scores"], 0
  )
  adv, ret = call_jitted(
      gae_advantages,
      token_rewards,
      batch["values"],
      batch["mask"],
      traced=dict(gamma=gamma, lam=lam),
  )
  want_adv, want_ret = ref.gae_advantages(
      f64(token_rewards), f64(batch["values"]), batch["lengths"], gamma, lam
  )
  np.testing.assert_allclose(np.asarray(ret), want_ret, **TOL)
  np.testing.assert_allclose(np.asarray(adv), want_adv, **TOL)
  _assert_padding_zero(batch, adv, ret)


def test_gae_with_unit_discount_is_return_minus_value():
  batch = random_batch(seed=221, n=2)
  rewards = outcome_token_rewards(batch["acc"], batch["mask"])
  _, ret = call_jitted(
      gae_advantages, rewards, batch["values"], batch["mask"], traced=dict(gamma=1.0, lam=1.0)
  )
  for i, length in enumerate(batch["lengths"]):  # γ = λ = 1: every target is the outcome
    np.testing.assert_allclose(np.asarray(ret)[i, :length], batch["acc"][i], **TOL)


@pytest.mark.parametrize("clipped", [False, True])
def test_value_loss_matches_reference(clipped):
  batch = random_batch(seed=230, n=4)
  returns = np.where(batch["mask"], batch["scores"], 0).astype(np.float32)
  old_values = (batch["values"] + 0.8 * np.random.default_rng(0).normal(size=returns.shape)).astype(
      np.float32
  )
  kwargs = dict(old_values=old_values) if clipped else {}
  loss, metrics = value_loss(batch["values"], returns, batch["mask"], **kwargs)
  want = ref.value_loss(
      f64(batch["values"]), f64(returns), batch["lengths"], f64(old_values) if clipped else None
  )
  np.testing.assert_allclose(float(loss), want, **TOL)
  assert (float(metrics["value_clip_frac"]) > 0) == clipped
  grad = np.asarray(
      jax.grad(lambda v: value_loss(v, returns, batch["mask"], **kwargs)[0])(batch["values"])
  )
  _assert_padding_zero(batch, grad)


def test_prm_value_advantages_match_reference():
  batch = random_batch(seed=240, n=4)
  adv, ret = call_jitted(
      prm_value_advantages, batch["scores"], batch["acc"], batch["mask"], traced=dict(beta=0.05)
  )
  want = ref.prm_value_advantages(f64(batch["scores"]), f64(batch["acc"]), batch["lengths"], 0.05)
  np.testing.assert_allclose(np.asarray(adv), want, **TOL)
  # At the first token the value of the empty prefix is 0, so the advantage is the outcome.
  np.testing.assert_allclose(np.asarray(adv)[:, 0], batch["acc"], **TOL)
  _assert_padding_zero(batch, adv, ret)


def test_bad_inputs_are_named():
  batch = random_batch(seed=0, n=4)
  with pytest.raises(ValueError, match="values"):
    gae_advantages(batch["scores"], batch["values"][:, :3], batch["mask"])
  with pytest.raises(ValueError, match="`q`"):
    prm_value_advantages(batch["scores"][0], batch["acc"], batch["mask"], beta=0.05)
  with pytest.raises(ValueError, match="n=5"):
    grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=5)
  with pytest.raises(ValueError, match="form"):
    grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=4, form="eq7")
  with pytest.raises(ValueError, match="eps"):
    grpo_advantages(batch["scores"], batch["acc"], batch["mask"], n=4, eps=-1e-6)
  with pytest.raises(ValueError, match="old_values"):
    value_loss(batch["values"], batch["values"], batch["mask"], old_values=jnp.ones(3))


@pytest.mark.parametrize("estimator", ["rloo", "reinforce", "grpo", "ppo", "prm_value"])
@pytest.mark.parametrize("whiten_advantages", [True, False])
@pytest.mark.parametrize("coef_proc", [1.0, 0.0])
def test_every_estimator_shares_one_whitening(estimator, whiten_advantages, coef_proc):
  """The update step's advantages: each estimator's formula, un-whitened, then whitened over the
  batch's valid tokens (rl.whiten_advantages), so PRIME and outcome-only rows differ only in
  coef_proc."""
  from prime_jax.algo.advantages import estimator_advantages
  from prime_jax.configs import base_config

  batch = random_batch(seed=250, n=4, bool_mask=True)
  rl = base_config().rl
  rl.update(dict(estimator=estimator, whiten_advantages=whiten_advantages, coef_proc=coef_proc))
  rl.update(dict(gamma_proc=0.9, gamma_out=0.8))  # the two streams' discounts reach RLOO, REINFORCE
  scores, acc, lengths = f64(batch["scores"]), f64(batch["acc"]), batch["lengths"]
  values = f64(batch["values"])
  if estimator == "rloo":
    raw = ref.prime_advantages(scores, acc, lengths, 4, coef_proc, 1.0, 0.9, 0.8)[1]
  elif estimator == "reinforce":
    raw = ref.reinforce_advantages(scores, acc, lengths, coef_proc, 1.0, 0.9, 0.8)
  elif estimator == "grpo":
    raw = ref.grpo_advantages(scores, acc, lengths, 4, coef_proc, 1.0)
  elif estimator == "ppo":
    token_rewards = ref.outcome_stream(acc, lengths, scores.shape[1])[0]
    token_rewards += coef_proc * np.where(batch["mask"], scores, 0)
    returns = ref.gae_advantages(token_rewards, values, lengths, 1.0, 1.0)[1]
    raw = np.where(batch["mask"], returns - values, 0)
  else:
    raw = ref.prm_value_advantages(scores, acc, lengths, rl.beta)
  want = ref.whiten(raw, lengths) if whiten_advantages else raw
  adv, _ = estimator_advantages(
      rl, batch["scores"], batch["scores"], batch["acc"], batch["mask"], batch["values"]
  )
  np.testing.assert_allclose(np.asarray(adv), want, **TOL)
  _assert_padding_zero(batch, adv)


@pytest.mark.parametrize("estimator", ["rloo", "reinforce", "grpo", "ppo", "prm_value"])
@pytest.mark.parametrize("case", ["equal_rewards", "length_one"])
def test_every_estimator_is_finite_on_degenerate_groups(estimator, case):
  """n = 2 groups whose process rewards and outcomes are all equal, or whose responses are one
  token long: finite advantages and returns, whitened or not."""
  from prime_jax.algo.advantages import estimator_advantages
  from prime_jax.configs import base_config

  num_rows, width = 8, 5
  lengths = np.full(num_rows, 1 if case == "length_one" else width)
  mask = np.arange(width)[None, :] < lengths[:, None]
  if case == "equal_rewards":
    scores, acc = np.full((num_rows, width), 0.25, np.float32), np.ones(num_rows, np.float32)
  else:
    rng = np.random.default_rng(260)
    scores = rng.normal(size=(num_rows, width)).astype(np.float32)
    acc = rng.integers(0, 2, size=num_rows).astype(np.float32)
  for whiten_advantages in (True, False):
    rl = base_config().rl
    rl.update(dict(estimator=estimator, n_samples=2, whiten_advantages=whiten_advantages))
    out = estimator_advantages(rl, scores, scores, acc, mask, np.zeros_like(scores))
    for x in out:
      assert np.all(np.isfinite(np.asarray(x))) and np.all(np.asarray(x)[~mask] == 0)
