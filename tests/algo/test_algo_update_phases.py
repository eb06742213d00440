"""The update step's two phases on their own, on a tiny random decoder: the PRM phase and the policy
(PPO) phase against a direct computation over the whole batch (no mini/micro-batching) and the
numpy reference. Both phases take their optimiser as an argument; plain SGD with lr 1 makes the
update equal to minus the gradient, so a wrongly weighted or dropped micro-batch shows."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import algo_numpy_reference as ref
from prime_jax.algo import implicit_rewards, ppo_clip_loss, prm_ce_loss
from prime_jax.algo.policy_phase import policy_phase
from prime_jax.algo.prm_phase import prm_phase
from prime_jax.configs import base_config
from prime_jax.models import DecoderConfig, init_params
from prime_jax.scoring import token_logprobs
from prime_jax.train_state import create_train_state

MODEL = DecoderConfig(
    vocab_size=32,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
    intermediate_size=32,
    max_position_embeddings=32,
)
N, P, T, GROUP = 8, 3, 6, 4
SGD = optax.sgd(1.0)
TOL = dict(rtol=2e-4, atol=1e-6)
f64 = lambda x: np.asarray(x, np.float64)


def rl_config(**overrides):
  rl = base_config().rl
  rl.update(dict(n_samples=GROUP, micro_batch=N // 2, score_chunk=4, norm_shards=1))
  rl.update(overrides)
  return rl


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, N)
  lengths[0] = T
  return (
      dict(
          prompt_tokens=jnp.asarray(rng.integers(1, 32, (N, P)), jnp.int32),
          prompt_mask=jnp.ones((N, P), bool),
          response_tokens=jnp.asarray(rng.integers(1, 32, (N, T)), jnp.int32),
          response_mask=jnp.asarray(np.arange(T)[None] < lengths[:, None]),
          acc=jnp.asarray([1, 0, 0, 1, 0.5, 1, 0, 0], jnp.float32),
      ),
      [int(x) for x in lengths],
  )


def logp_of(params, data):
  return token_logprobs(
      params,
      data["prompt_tokens"],
      data["prompt_mask"],
      data["response_tokens"],
      data["response_mask"],
      config=MODEL,
      chunk_size=4,
  )


def assert_params_close(got, want):
  jax.tree_util.tree_map(lambda g, w: np.testing.assert_allclose(g, w, **TOL), got, want)


def test_prm_phase_with_one_mini_batch_is_one_ce_step_on_the_whole_batch():
  rl = rl_config(prm_update="after", prm_loss="ce", prm_mini_batch=N, beta=0.5)
  prm_params = init_params(MODEL, jax.random.key(1))
  ref_params = init_params(MODEL, jax.random.key(2))
  data, lengths = inputs()
  data["ref_logp"] = logp_of(ref_params, data)

  state, logp, metrics = jax.jit(
      lambda s, d: prm_phase(s, d, rl=rl, model_config=MODEL, optimizer=SGD)
  )(create_train_state(prm_params, SGD), data)

  def direct_loss(params):  # the CE loss over all N rows at once
    q = implicit_rewards(logp_of(params, data), data["ref_logp"], data["response_mask"])
    return prm_ce_loss(q, data["acc"], data["response_mask"], beta=rl.beta)

  loss, grads = jax.value_and_grad(direct_loss)(prm_params)
  # "after": the rewards come from the PRM before its update
  np.testing.assert_allclose(logp, logp_of(prm_params, data), **TOL)
  q = f64(logp_of(prm_params, data)) - f64(data["ref_logp"])
  want_loss = ref.prm_ce_loss(q, f64(data["acc"]), lengths, rl.beta)
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["prm/loss_before"]), want_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["prm/grad_norm"]), optax.global_norm(grads), **TOL)
  assert float(metrics["prm/grad_norm"]) > 0
  want_acc = ref.prm_pair_accuracy(q.sum(axis=1), f64(data["acc"]), GROUP)
  np.testing.assert_allclose(float(metrics["prm/acc_before"]), want_acc, rtol=1e-6)
  assert int(state.step) == 1
  assert_params_close(state.params, jax.tree_util.tree_map(lambda p, g: p - g, prm_params, grads))


def test_prm_phase_before_mode_rescores_with_the_updated_prm():
  rl = rl_config(prm_update="before", prm_mini_batch=N // 2, beta=0.5, prm_batch_order="contiguous")
  prm_params = init_params(MODEL, jax.random.key(1))
  data, _ = inputs(seed=1)
  data["ref_logp"] = logp_of(init_params(MODEL, jax.random.key(2)), data)
  state, logp, metrics = jax.jit(
      lambda s, d: prm_phase(s, d, rl=rl, model_config=MODEL, optimizer=SGD)
  )(create_train_state(prm_params, SGD), data)
  assert int(state.step) == 2  # two mini-batches
  np.testing.assert_allclose(logp, logp_of(state.params, data), **TOL)
  q_after = implicit_rewards(logp, data["ref_logp"], data["response_mask"])
  want = prm_ce_loss(q_after, data["acc"], data["response_mask"], beta=rl.beta)
  np.testing.assert_allclose(float(metrics["prm/loss_after"]), float(want), **TOL)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_policy_phase_with_one_mini_batch_is_one_hand_computed_ppo_step(agg):
  rl = rl_config(mini_batch=N, ppo_epochs=1, clip_eps=0.1, loss_agg=agg, estimator="rloo")
  params = init_params(MODEL, jax.random.key(3))
  data, lengths = inputs(seed=2)
  rng = np.random.default_rng(4)
  logp = logp_of(params, data)
  data["old_logp"] = logp + jnp.asarray(0.2 * rng.normal(size=(N, T)), jnp.float32)
  data["advantages"] = jnp.asarray(rng.normal(size=(N, T)), jnp.float32)

  state, metrics = jax.jit(
      lambda s, d, key: policy_phase(s, d, key, rl=rl, model_config=MODEL, optimizer=SGD)
  )(create_train_state(params, SGD), data, jax.random.key(0))

  want_loss, want_metrics = ref.ppo_clip_loss(
      f64(logp), f64(data["old_logp"]), f64(data["advantages"]), lengths, rl.clip_eps, agg
  )
  assert 0 < want_metrics["clip_frac"] < 1, "the batch should exercise both branches"
  np.testing.assert_allclose(float(metrics["policy/loss"]), want_loss, **TOL)
  np.testing.assert_allclose(float(metrics["policy/ratio_min"]), want_metrics["ratio_min"], **TOL)
  np.testing.assert_allclose(float(metrics["policy/ratio_max"]), want_metrics["ratio_max"], **TOL)

  def direct_loss(p):  # PPO-clip over all N rows at once
    return ppo_clip_loss(
        logp_of(p, data),
        data["old_logp"],
        data["advantages"],
        data["response_mask"],
        clip_eps=rl.clip_eps,
        agg=agg,
    )[0]

  grads = jax.grad(direct_loss)(params)
  np.testing.assert_allclose(float(metrics["policy/grad_norm"]), optax.global_norm(grads), **TOL)
  assert int(state.step) == 1
  assert_params_close(state.params, jax.tree_util.tree_map(lambda p, g: p - g, params, grads))
