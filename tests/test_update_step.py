"""The single compiled PRIME update step on a tiny random decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multidevice import run_with_devices
from prime_jax.algo import prime_advantages
from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer
from prime_jax.algo.update_step import make_update_step
from prime_jax.configs import base_config
from prime_jax.models import DecoderConfig, init_params
from prime_jax.scoring import token_logprobs
from prime_jax.train_state import create_train_state

MODEL = DecoderConfig(
    vocab_size=32,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    qkv_bias=True,
    max_position_embeddings=64,
)
MARK = 7  # responses containing this token are "correct": a signal the PRM can learn


def make_config(**rl):
  c = base_config()
  c.rl.update(
      dict(
          n_samples=4,
          prm_mini_batch=8,
          mini_batch=8,
          micro_batch=4,
          norm_shards=2,
          score_chunk=4,
          lr=1e-3,
          prm_lr=1e-3,
      )
  )
  c.rl.update(rl)
  return c


def make_batch(seed=0, groups=4, n=4, p=5, t=7):
  rng = np.random.default_rng(seed)
  num = groups * n
  prompt = rng.integers(1, 32, (num // n, p)).repeat(n, axis=0)
  prompt_mask = np.ones((num, p), bool)
  prompt_mask[::3, :2] = False  # some left padding
  response = rng.integers(8, 32, (num, t))
  lengths = rng.integers(2, t + 1, num)
  mask = np.arange(t)[None] < lengths[:, None]
  correct = rng.random(num) < 0.5
  correct[::n] = True  # every group mixed, so RLOO has signal
  correct[1::n] = False
  for i in np.flatnonzero(correct):
    response[i, rng.integers(0, lengths[i])] = MARK
  return dict(
      prompt_tokens=jnp.asarray(prompt, jnp.int32),
      prompt_mask=jnp.asarray(prompt_mask),
      response_tokens=jnp.asarray(response, jnp.int32),
      response_mask=jnp.asarray(mask),
      acc=jnp.asarray(correct, jnp.float32),
  )


def model_for(config):
  return MODEL.replace(value_head=config.rl.estimator == "ppo")


def make_states(config, seed=0):
  params = init_params(model_for(config), jax.random.key(seed))
  copy = lambda: jax.tree_util.tree_map(jnp.array, params)
  return (
      create_train_state(copy(), policy_optimizer(config.rl)),
      create_train_state(copy(), prm_optimizer(config.rl)),
      copy(),
  )


def logp(params, batch):
  return token_logprobs(
      params,
      batch["prompt_tokens"],
      batch["prompt_mask"],
      batch["response_tokens"],
      batch["response_mask"],
      config=MODEL,
      chunk_size=4,
  )


# Each case compiles the whole step (~10 s), so orthogonal switches share cases.
@pytest.mark.parametrize(
    "rl",
    [
        dict(prm_update="after"),
        dict(
            prm_update="before",
            prm_loss="dpo",
            reward_scale="beta",
            rloo_form="paper",
            loss_agg="token-mean",
            norm_scope="global",
        ),
        dict(prm_update="none", ref_type="policy", granularity="whole"),
        dict(estimator="reinforce", whiten_advantages=False),
        dict(estimator="grpo", entropy_coef=0.01, kl_coef=0.1, ppo_epochs=2, old_logp="sampler"),
        dict(estimator="prm_value"),
        dict(estimator="ppo"),
        dict(estimator="ppo", coef_proc=0.0),
    ],
)
def test_step_runs_for_each_mode(rl):
  config = make_config(**rl)
  step = make_update_step(config, None, model_for(config))
  policy, prm, ref = make_states(config)
  batch = make_batch()
  if config.rl.old_logp == "sampler":
    batch["old_logp"] = logp(policy.params, batch)
  policy, prm, metrics = step(policy, prm, ref, batch, jax.random.key(1))
  for k, v in metrics.items():
    assert np.all(np.isfinite(np.asarray(v))), k
  assert int(policy.step) == config.rl.ppo_epochs * 2  # 16 responses / mini-batch 8
  prm_steps = (
      0
      if (
          config.rl.prm_update == "none"
          or config.rl.coef_proc == 0
          and config.rl.estimator != "prm_value"
      )
      else 2
  )
  assert int(prm.step) == prm_steps
  assert ("prm/loss_before" in metrics) == (prm_steps > 0)
  if config.rl.whiten_advantages:  # every estimator's advantages, whitened over the batch
    assert abs(float(metrics["advantages_mean"])) < 1e-5
    assert abs(float(metrics["advantages_std"]) - 1) < 0.02
  else:  # REINFORCE as written: the advantages are its returns
    for stat in ("mean", "std", "min", "max"):
      assert float(metrics[f"advantages_{stat}"]) == float(metrics[f"returns_{stat}"])
  if config.rl.estimator == "ppo":  # the value head (zero at init) learned something
    assert float(metrics["policy/value_loss"]) > 0
    assert np.abs(np.asarray(policy.params["value_proj"]["kernel"])).max() > 0


def test_outcome_only_never_runs_prm_or_reference():
  config = make_config(coef_proc=0.0)
  policy, prm, _ = make_states(config)
  prm_before = jax.tree_util.tree_map(np.asarray, prm.params)
  # The reference is passed as None: the step must not touch it.
  policy, prm, metrics = make_update_step(config, None, MODEL)(
      policy, prm, None, make_batch(), jax.random.key(0)
  )
  assert not any(k.startswith(("prm/", "process_reward")) for k in metrics)
  jax.tree_util.tree_map(np.testing.assert_array_equal, prm.params, prm_before)


def test_prm_equal_to_reference_gives_outcome_only_update():
  """PRM = ref and no PRM update: zero process rewards, so PRIME's policy step is RLOO's."""
  batch = make_batch()
  results = []
  for rl in (dict(prm_update="none"), dict(coef_proc=0.0)):
    config = make_config(**rl)
    policy, prm, ref = make_states(config)
    policy, _, metrics = make_update_step(config, None, MODEL)(
        policy, prm, ref, batch, jax.random.key(3)
    )
    results.append((policy.params, metrics))
  assert float(results[0][1]["process_reward_max"]) == 0.0
  assert float(results[0][1]["process_reward_min"]) == 0.0
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), results[0][0], results[1][0]
  )


def test_after_mode_takes_each_mini_batch_rewards_before_its_update():
  """One PRM mini-batch in `after` mode: rewards come from the un-updated PRM (= ref), so 0
  up to float error (the grad-path forward may round differently from the reference's);
  two mini-batches: the second is scored after one update, so rewards appear; `before` mode
  re-scores everything after the updates. Unnormalised, so the float error stays visible."""
  batch = make_batch()

  def largest_reward(**rl):
    config = make_config(prm_lr=1e-2, prime_norm="none", **rl)
    policy, prm, ref = make_states(config)
    _, _, m = make_update_step(config, None, MODEL)(policy, prm, ref, batch, jax.random.key(0))
    return max(abs(float(m["process_reward_max"])), abs(float(m["process_reward_min"])))

  assert largest_reward(prm_update="after", prm_mini_batch=16, micro_batch=8) < 1e-5
  assert largest_reward(prm_update="after", prm_mini_batch=8) > 1e-3
  assert largest_reward(prm_update="before", prm_mini_batch=16, micro_batch=8) > 1e-3


def test_prm_mini_batches_are_strided_over_the_shards():
  """rl.prm_batch_order="strided" (2 shards of 8 rows, 2 PRM steps): PRM step k takes the k-th
  block of 4 rows of each shard, so its PRM ends where "contiguous" ends on the batch with its
  rows laid out in that order (rows 0-3, 8-11, 4-7, 12-15); "contiguous" on the batch itself
  takes other mini-batches and ends elsewhere."""
  batch = make_batch(seed=4)
  layout = np.r_[0:4, 8:12, 4:8, 12:16]
  reordered = jax.tree_util.tree_map(lambda x: x[layout], batch)

  def prm_after(order, b):
    config = make_config(prm_batch_order=order, prm_lr=1e-2, lr=0.0)
    policy, _, ref = make_states(config)
    prm = make_states(config, seed=1)[1]  # away from the reference: both mini-batches learn
    _, prm, m = make_update_step(config, None, MODEL)(policy, prm, ref, b, jax.random.key(0))
    return prm.params, float(m["prm/loss_before"])

  strided, contiguous_reordered, contiguous = (
      prm_after("strided", batch),
      prm_after("contiguous", reordered),
      prm_after("contiguous", batch),
  )
  np.testing.assert_allclose(strided[1], contiguous_reordered[1], rtol=1e-6)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      strided[0],
      contiguous_reordered[0],
  )
  gaps = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), strided[0], contiguous[0])
  assert max(jax.tree_util.tree_leaves(gaps)) > 1e-4


def test_dpo_compares_each_mini_batch_with_the_pre_update_pass():
  """prm_loss="dpo" with 2 PRM steps (strided: rows 0-3, 8-11, then 4-7, 12-15): the step's PRM
  loss and PRM match a plain loop that takes the others' Q from one pass of the PRM before the
  updates (the port's Q_bc), and not the loop that takes them from the current PRM."""
  from prime_jax.algo import implicit_rewards, prm_dpo_loss
  from prime_jax.algo.update_step import forward_passes
  from prime_jax.train_state import apply_gradients

  config = make_config(prm_loss="dpo", prm_lr=1e-2, lr=0.0, micro_batch=8)
  batch = make_batch(seed=6)
  policy, _, ref = make_states(config)
  prm = make_states(config, seed=1)[1]  # away from the reference: the others' Q are not 0
  start = jax.tree_util.tree_map(jnp.array, prm)  # the step donates `prm`
  _, prm, metrics = make_update_step(config, None, MODEL)(
      policy, prm, ref, batch, jax.random.key(0)
  )
  mask = batch["response_mask"]
  ref_logp = logp(ref, batch)

  def q_of(params, rows=slice(None)):
    sub = jax.tree_util.tree_map(lambda x: x[rows], batch)
    return implicit_rewards(logp(params, sub), ref_logp[rows], mask[rows])

  def loop(pre_update: bool):
    state, losses = start, []
    q_sum_before = jnp.sum(q_of(state.params), axis=1)
    for rows in (np.r_[0:4, 8:12], np.r_[4:8, 12:16]):
      before = q_sum_before[rows] if pre_update else None
      loss = lambda p: prm_dpo_loss(
          q_of(p, rows), batch["acc"][rows], mask[rows], beta=0.05, n=4, q_sum_before=before
      )
      value, grads = jax.value_and_grad(loss)(state.params)
      state, losses = apply_gradients(state, grads, prm_optimizer(config.rl)), losses + [value]
    return float(np.mean(losses)), state.params

  (port_loss, port_params), (current_loss, _) = loop(True), loop(False)
  np.testing.assert_allclose(float(metrics["prm/loss_before"]), port_loss, rtol=1e-5)
  assert abs(port_loss - current_loss) > 1e-4, (port_loss, current_loss)
  gaps = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), prm.params, port_params)
  assert max(jax.tree_util.tree_leaves(gaps)) < 1e-5, gaps
  # The pass is one more PRM forward over the batch, in the trainer's time split too.
  assert ("prm", "PRM pre-update fwd (DPO's others)", 1) in forward_passes(config.rl)


def test_prm_pair_accuracy_rises_on_a_learnable_signal():
  """A PRM that starts away from the reference (so its initial ranking is arbitrary) learns
  that responses containing MARK are the correct ones."""
  config = make_config(prm_lr=3e-4, lr=0.0, prm_update="before")
  step = make_update_step(config, None, MODEL)
  policy, _, ref = make_states(config)
  prm = make_states(config, seed=1)[1]
  batch = make_batch(seed=5)
  first = None
  for i in range(8):
    policy, prm, m = step(policy, prm, ref, batch, jax.random.key(i))
    first = first or {k: float(v) for k, v in m.items()}
  assert first["prm/acc_before"] < 0.8, first
  assert float(m["prm/acc_after"]) > 0.95
  assert float(m["prm/loss_after"]) < first["prm/loss_before"] - 0.01


def test_policy_logprob_of_positive_advantage_tokens_rises():
  config = make_config(coef_proc=0.0, lr=3e-3, mini_batch=16, micro_batch=8)
  policy, prm, ref = make_states(config)
  batch = make_batch(seed=2)
  before = logp(policy.params, batch)
  adv, _ = prime_advantages(
      jnp.zeros_like(before), batch["acc"], batch["response_mask"], n=4, coef_proc=0.0
  )
  policy, _, _ = make_update_step(config, None, MODEL)(policy, prm, ref, batch, jax.random.key(0))
  delta = np.asarray(logp(policy.params, batch) - before)
  pos, neg = np.asarray(adv > 0), np.asarray(adv < 0)
  assert delta[pos].mean() > 0 > delta[neg].mean()


def test_reference_params_bf16_and_host_offload_on_one_device():
  """config.ref: the reference is a bf16 copy, in pinned host memory with offload (CPU has it);
  offload without a mesh, or an unknown dtype, is an error."""
  from prime_jax.algo.step_placement import reference_params, update_step_shardings
  from prime_jax.sharding import make_mesh

  config = make_config()
  config.ref.update(dict(param_dtype="bfloat16", offload=True))
  mesh = make_mesh({"data": 1})
  shardings = update_step_shardings(config, mesh, MODEL)
  assert {s.memory_kind for s in jax.tree_util.tree_leaves(shardings["ref"])} == {"pinned_host"}
  assert {s.memory_kind for s in jax.tree_util.tree_leaves(shardings["policy"])} == {"device"}
  policy, _, _ = make_states(config)
  policy = jax.device_put(policy, shardings["policy"])
  ref = reference_params(policy.params, config, shardings["ref"])
  for r, p in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(policy.params)):
    assert r.dtype == jnp.bfloat16 and r.sharding.memory_kind == "pinned_host"
    np.testing.assert_array_equal(
        np.asarray(r, np.float32), np.asarray(p.astype(jnp.bfloat16), np.float32)
    )
  config.ref.update(dict(param_dtype="float32", offload=False))
  ref = reference_params(policy.params, config, update_step_shardings(config, mesh, MODEL)["ref"])
  q, q_ref = (t["layers"]["self_attn"]["q_proj"]["kernel"] for t in (policy.params, ref))
  assert q_ref.dtype == jnp.float32 and q_ref.sharding.memory_kind == "device"
  assert q_ref.unsafe_buffer_pointer() != q.unsafe_buffer_pointer()  # a copy: survives donation
  config.ref.offload = True
  with pytest.raises(ValueError, match="needs a mesh"):
    make_update_step(config, None, MODEL)
  config.ref.update(dict(offload=False, param_dtype="float16"))
  with pytest.raises(ValueError, match="param_dtype"):
    make_update_step(config, None, MODEL)


# One subprocess for all the 8-device runs: each compiles the whole step (~20-30 s on 2 cores).
_EIGHT_DEVICES = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from test_update_step import MODEL, make_batch, make_config, make_states
from prime_jax.algo.step_placement import reference_params, update_step_shardings
from prime_jax.algo.update_step import make_update_step
from prime_jax.sharding import make_mesh

assert jax.device_count() == 8
batch = make_batch()
key_names = lambda path: tuple(str(getattr(k, "name", getattr(k, "key", k))) for k in path)


def check_shardings(mesh, lowered, compiled, outputs, offload):
    # What DEFAULT_RULES say, written out: embed over fsdp, heads over tensor, batch over
    # data x fsdp; an axis the mesh lacks is dropped.
    has = lambda *axes: tuple(a for a in axes if a in mesh.axis_names)
    # The decoder's activation constraints are in the program: q [rows, S, heads=4, 8] with rows
    # over data x fsdp and heads over tensor (Shardy's notation).
    names = lambda axes: "{" + ", ".join(f'"{a}"' for a in axes) + "}"
    q_constraint = f"[{names(has('data', 'fsdp'))}, {{}}, {names(has('tensor'))}, {{}}]>"
    assert any("sharding_constraint" in line and q_constraint in line and "x4x8xf32>" in line
               for line in lowered.as_text().splitlines()), q_constraint
    one = lambda axes: None if not axes else axes[0] if len(axes) == 1 else axes
    q_spec = P(None, one(has("fsdp")), one(has("tensor")), None)  # [layers, embed, heads, hd]
    rows = NamedSharding(mesh, P(one(has("data", "fsdp"))))
    replicated = NamedSharding(mesh, P())
    (policy_in, prm_in, ref_in, batch_in, _), _ = compiled.input_shardings
    policy_out, prm_out, metrics_out = compiled.output_shardings
    found = set()
    for state_in, state_out, state in ((policy_in, policy_out, outputs[0]),
                                       (prm_in, prm_out, outputs[1])):
        flat_out = dict(jax.tree_util.tree_leaves_with_path(state_out))
        arrays = dict((key_names(p), a) for p, a in jax.tree_util.tree_leaves_with_path(state))
        for path, s in jax.tree_util.tree_leaves_with_path(state_in):
            names = key_names(path)
            assert s.is_equivalent_to(flat_out[path], len(arrays[names].shape)), names
            assert arrays[names].sharding.is_equivalent_to(s, len(arrays[names].shape)), names
            if names[-4:] == ("layers", "self_attn", "q_proj", "kernel"):  # params, mu, nu
                assert s.is_equivalent_to(NamedSharding(mesh, q_spec), 4), (names, s)
                found.add(next((n for n in names if n in ("params", "mu", "nu")), None))
            if not arrays[names].shape:  # step, Adam's count
                assert s.is_equivalent_to(replicated, 0), (names, s)
    assert found == {"params", "mu", "nu"}, found
    for path, s in jax.tree_util.tree_leaves_with_path(batch_in):
        assert s.is_equivalent_to(rows, batch[path[0].key].ndim), (path, s)
    for s in jax.tree_util.tree_leaves(metrics_out):
        assert s.is_equivalent_to(replicated, 0), s
    kinds = {s.memory_kind for s in jax.tree_util.tree_leaves(ref_in)}
    assert kinds == ({"pinned_host"} if offload else {"device"}), kinds
    q_ref = ref_in["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q_ref.is_equivalent_to(NamedSharding(mesh, q_spec, memory_kind=q_ref.memory_kind), 4)


def run(axes, ref_dtype="float32", offload=False):
    config = make_config(prm_update="after", prm_metrics_after=True)
    config.ref.update(dict(param_dtype=ref_dtype, offload=offload))
    mesh = None if axes is None else make_mesh(axes)
    policy, _, ref = make_states(config)
    # A PRM away from the reference: with PRM = ref the first rewards are float noise that
    # batch_norm magnifies, and noise is not expected to agree across device layouts.
    prm = make_states(config, seed=1)[1]
    step = make_update_step(config, mesh, MODEL)
    args = (policy, prm, reference_params(ref, config, None), batch)
    if mesh is not None:
        sh = update_step_shardings(config, mesh, MODEL)
        args = jax.device_put((policy, prm, None, batch), (sh["policy"], sh["prm"], None,
                                                           sh["batch"]))
        args = (*args[:2], reference_params(args[0].params, config, sh["ref"]), args[3])
    lowered = step.lower(*args, jax.random.key(0))
    compiled = lowered.compile()
    outputs = compiled(*args, jax.random.key(0))
    if mesh is not None:
        check_shardings(mesh, lowered, compiled, outputs, offload)
    policy, prm, m = outputs
    return jax.device_get((policy.params, prm.params, m))


close = lambda a, b: jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5), a, b)
one = run(None)
for axes in ({"data": 8}, {"fsdp": 4, "tensor": 2}, {"data": 2, "fsdp": 4}):
    close(run(axes), one)
    print("match", axes)
# The reference held in bf16, and offloaded to host memory between steps.
one_bf16 = run(None, "bfloat16")
close(run({"data": 2, "fsdp": 4}, "bfloat16", offload=True), one_bf16)
assert float(one_bf16[2]["prm/acc_before"]) != float(one[2]["prm/acc_before"]) or float(
    one_bf16[2]["prm/loss_before"]) != float(one[2]["prm/loss_before"])  # bf16 reached the step
print("match bf16 offload")
"""


def test_eight_devices_under_three_meshes_match_one_device():
  """Pure data, fsdp x tensor and data x fsdp meshes give the one-device metrics and params
  (1e-5, f32); the compiled step's inputs/outputs carry the rules' shardings and its program the
  decoder's activation constraints; a bf16 reference offloaded to host memory gives the
  one-device bf16 result."""
  out = run_with_devices(_EIGHT_DEVICES)
  assert out.count("match {") == 3 and "match bf16 offload" in out, out


def oracle_batch(seed=0):
  """make_batch with oracle process rewards: -1 on a run of tokens in the wrong responses."""
  batch = make_batch(seed)
  rng = np.random.default_rng(seed)
  mask = np.asarray(batch["response_mask"])
  rewards = np.zeros(mask.shape, np.float32)
  for i in np.flatnonzero(np.asarray(batch["acc"]) == 0):
    length = int(mask[i].sum())
    start = int(rng.integers(0, length))
    rewards[i, start : int(rng.integers(start + 1, length + 1))] = -1.0
  rewards[~mask] = 5.0  # padding is ignored whatever it holds
  return dict(batch, process_rewards=jnp.asarray(rewards))


def test_oracle_runs_no_prm_and_no_reference():
  from prime_jax.algo.step_placement import update_step_shardings
  from prime_jax.algo.update_step import forward_passes
  from prime_jax.config_checks import check_rl_config, uses_prm
  from prime_jax.sharding import make_mesh

  config = make_config(process_reward="oracle")
  assert not uses_prm(config.rl)
  assert [phase for phase, _, _ in forward_passes(config.rl)] == ["policy", "policy"]
  shardings = update_step_shardings(config, make_mesh({"data": 1}), MODEL)
  assert shardings["prm"] is None and shardings["ref"] is None
  with pytest.raises(ValueError, match="no oracle form"):
    check_rl_config(make_config(process_reward="oracle", estimator="prm_value").rl)
  with pytest.raises(ValueError, match="process_reward"):
    check_rl_config(make_config(process_reward="perfect").rl)


@pytest.mark.parametrize("granularity", ["token", "whole"])
def test_oracle_rewards_are_the_process_stream(granularity):
  """process_reward="oracle": the batch's rewards, at the configured density, batch_norm'ed per
  shard, through PRIME's RLOO returns and whitening: the step's statistics of all three match
  the numpy reference; no PRM state (None) and no reference params (None) are needed."""
  import algo.algo_numpy_reference as ref

  config = make_config(process_reward="oracle", granularity=granularity)
  policy, _, _ = make_states(config)
  batch = oracle_batch()
  policy, prm, metrics = make_update_step(config, None, MODEL)(
      policy, None, None, batch, jax.random.key(0)
  )
  assert prm is None and not any(k.startswith("prm/") for k in metrics)
  mask = np.asarray(batch["response_mask"])
  lengths = mask.sum(axis=1)
  rewards = np.asarray(batch["process_rewards"], np.float64)
  # Rewards as q = rewards - 0: the reference's granularity loop, written for q, applies as is.
  raw = ref.implicit_rewards(rewards, np.zeros_like(rewards), lengths, granularity)
  scores = ref.normalize_process_rewards(raw, lengths, num_shards=2)
  acc = np.asarray(batch["acc"], np.float64)
  advantages, returns = ref.prime_advantages(scores, acc, lengths, n=4)
  for name, x in (("process_reward", scores), ("returns", returns), ("advantages", advantages)):
    valid = x[mask]
    expected = dict(mean=valid.mean(), std=valid.std(), min=valid.min(), max=valid.max())
    for stat, value in expected.items():
      np.testing.assert_allclose(float(metrics[f"{name}_{stat}"]), value, atol=2e-5, err_msg=name)
  assert float(metrics["process_reward_min"]) < 0  # the oracle's -1s reached the stream
