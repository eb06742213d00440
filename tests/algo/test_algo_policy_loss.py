"""ppo_clip_loss against the numpy reference; clipping and padding gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import TOL, call_jitted, random_batch
from prime_jax.algo import aggregate_token_loss, ppo_clip_loss

f64 = lambda x: np.asarray(x, np.float64)
AGGS = ["seq-mean-token-mean", "token-mean"]


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_clip_loss_and_metrics_match_reference(agg, seed):
  batch = random_batch(seed=300 + seed, n=4, bool_mask=bool(seed))
  advantages = batch["scores"]
  loss, metrics = call_jitted(
      ppo_clip_loss,
      batch["logp"],
      batch["old_logp"],
      advantages,
      batch["mask"],
      clip_eps=0.2,
      agg=agg,
  )
  want_loss, want_metrics = ref.ppo_clip_loss(
      f64(batch["logp"]), f64(batch["old_logp"]), f64(advantages), batch["lengths"], 0.2, agg
  )
  np.testing.assert_allclose(float(loss), want_loss, **TOL)
  for name, want in want_metrics.items():
    np.testing.assert_allclose(float(metrics[name]), want, err_msg=name, **TOL)
  assert 0 < float(metrics["clip_frac"]) < 1, "the batch should exercise both branches"
  assert float(metrics["ratio_p05"]) <= float(metrics["ratio_p50"]) <= float(metrics["ratio_p95"])


@pytest.mark.parametrize("agg", AGGS)
def test_clipped_side_gets_zero_gradient(agg):
  eps = 0.2
  #                          clipped: ratio high & A>0, ratio low & A<0 | not clipped: the other sides, in range
  ratio = jnp.array([[1.5, 0.5, 1.5, 0.5, 1.1]])
  adv = jnp.array([[1.0, -1.0, -1.0, 1.0, 2.0]])
  old_logp = jnp.full((1, 5), -1.0)
  logp = old_logp + jnp.log(ratio)
  mask = jnp.ones((1, 5))
  grad = jax.grad(lambda lp: ppo_clip_loss(lp, old_logp, adv, mask, clip_eps=eps, agg=agg)[0])(logp)
  # Unclipped tokens: d(−A·ρ)/d logp = −A·ρ, averaged over the 5 tokens (one sequence).
  want = np.array([[0.0, 0.0, 1.5, -0.5, -2.2]]) / 5
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-6, atol=1e-7)
  _, metrics = ppo_clip_loss(logp, old_logp, adv, mask, clip_eps=eps, agg=agg)
  np.testing.assert_allclose(float(metrics["clip_frac"]), 2 / 5, rtol=1e-6)


@pytest.mark.parametrize("agg", AGGS)
def test_padding_gets_no_loss_or_gradient_even_with_inf(agg):
  batch = random_batch(seed=310, n=4)
  padding = ~(np.asarray(batch["mask"]) > 0)
  logp = jnp.asarray(np.where(padding, np.inf, batch["logp"]))
  advantages = np.where(padding, np.nan, batch["scores"])
  loss_fn = lambda lp: ppo_clip_loss(lp, batch["old_logp"], advantages, batch["mask"], agg=agg)
  (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(logp)
  clean_loss, _ = ppo_clip_loss(
      batch["logp"], batch["old_logp"], batch["scores"], batch["mask"], agg=agg
  )
  np.testing.assert_allclose(float(loss), float(clean_loss), rtol=1e-6)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  grad = np.asarray(grad)
  assert np.all(grad[padding] == 0) and np.all(np.isfinite(grad)) and np.any(grad[~padding] != 0)


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_losses_with_shared_denominator_sum_to_batch_loss(agg):
  batch = random_batch(seed=320, n=4)
  mask = batch["mask"].copy()
  mask[5] = 0  # an empty row must not count as a sequence
  token_loss = batch["scores"]
  full = aggregate_token_loss(token_loss, mask, agg=agg)
  denominator = mask.sum() if agg == "token-mean" else (mask.sum(1) > 0).sum()
  parts = [
      aggregate_token_loss(token_loss[k : k + 4], mask[k : k + 4], agg=agg, denominator=denominator)
      for k in range(0, 16, 4)
  ]
  np.testing.assert_allclose(float(sum(parts)), float(full), rtol=1e-6)
  kept = np.ones(16, bool)
  kept[5] = False
  np.testing.assert_allclose(
      float(full), float(aggregate_token_loss(token_loss[kept], mask[kept], agg=agg)), rtol=1e-6
  )


def test_bad_inputs_are_named():
  batch = random_batch(seed=0, n=4)
  with pytest.raises(ValueError, match="agg"):
    ppo_clip_loss(batch["logp"], batch["old_logp"], batch["scores"], batch["mask"], agg="seq-sum")
  with pytest.raises(ValueError, match="old_logp"):
    ppo_clip_loss(batch["logp"], batch["old_logp"][:4], batch["scores"], batch["mask"])
