"""implicit_rewards and normalize_process_rewards against the numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest

import algo_numpy_reference as ref
from algo_test_batches import GROUP_SIZES, TOL, call_jitted, random_batch
from prime_jax.algo import implicit_rewards, normalize_process_rewards

f64 = lambda x: np.asarray(x, np.float64)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("granularity", ["token", "whole"])
@pytest.mark.parametrize("beta", [None, 0.05])
def test_implicit_rewards_match_reference(n, granularity, beta):
  batch = random_batch(seed=n, n=n, bool_mask=(granularity == "whole"))
  got = call_jitted(
      implicit_rewards,
      batch["logp_prm"],
      batch["logp_ref"],
      batch["mask"],
      granularity=granularity,
      beta=beta,
  )
  want = ref.implicit_rewards(
      f64(batch["logp_prm"]), f64(batch["logp_ref"]), batch["lengths"], granularity, beta
  )
  np.testing.assert_allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("n", GROUP_SIZES)
@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_normalize_process_rewards_match_reference(n, num_shards):
  batch = random_batch(seed=10 + n, n=n)
  got = call_jitted(
      normalize_process_rewards, batch["scores"], batch["mask"], num_shards=num_shards
  )
  want = ref.normalize_process_rewards(f64(batch["scores"]), batch["lengths"], num_shards)
  np.testing.assert_allclose(np.asarray(got), want, **TOL)


def test_shards_are_scaled_independently():
  batch = random_batch(seed=3, n=4)
  global_scale = np.asarray(normalize_process_rewards(batch["scores"], batch["mask"]))
  per_shard = np.asarray(normalize_process_rewards(batch["scores"], batch["mask"], num_shards=4))
  ratios = [
      np.abs(global_scale[k * 4 : (k + 1) * 4]).sum() / np.abs(per_shard[k * 4 : (k + 1) * 4]).sum()
      for k in range(4)
  ]
  assert all(r <= 1 + 1e-6 for r in ratios), "a shard's own max can only be <= the global max"
  assert max(ratios) - min(ratios) > 1e-3, "shards should get different scales"


def test_equal_models_give_zero_rewards():
  batch = random_batch(seed=0, n=4)
  for granularity in ("token", "whole"):
    scores = implicit_rewards(
        batch["logp_ref"], batch["logp_ref"], batch["mask"], granularity=granularity
    )
    assert np.all(np.asarray(scores) == 0)
    assert np.all(np.asarray(normalize_process_rewards(scores, batch["mask"])) == 0)


def test_padding_with_inf_and_nan_does_not_leak():
  batch = random_batch(seed=1, n=2)
  padding = ~np.asarray(batch["mask"], bool)
  logp_prm = np.where(padding, np.nan, batch["logp_prm"])
  logp_ref = np.where(padding, -np.inf, batch["logp_ref"])
  for granularity in ("token", "whole"):
    scores = np.asarray(
        implicit_rewards(logp_prm, logp_ref, batch["mask"], granularity=granularity)
    )
    assert np.all(np.isfinite(scores)) and np.all(scores[padding] == 0)
    normalized = np.asarray(normalize_process_rewards(scores, batch["mask"], num_shards=2))
    assert np.all(np.isfinite(normalized)) and np.all(normalized[padding] == 0)


def test_bad_inputs_are_named():
  batch = random_batch(seed=0, n=2)
  with pytest.raises(ValueError, match="logp_ref"):
    implicit_rewards(batch["logp_prm"], batch["logp_ref"][:, :-1], batch["mask"])
  with pytest.raises(ValueError, match="granularity"):
    implicit_rewards(batch["logp_prm"], batch["logp_ref"], batch["mask"], granularity="step")
  with pytest.raises(ValueError, match="num_shards"):
    normalize_process_rewards(batch["scores"], batch["mask"], num_shards=3)
  with pytest.raises(ValueError, match=r"\[N, T\]"):
    normalize_process_rewards(jnp.ones(5), jnp.ones(5))
