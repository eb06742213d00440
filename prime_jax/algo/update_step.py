"""The single compiled PRIME update step (docs/algorithm.md, "One RL step", 2) in one jitted graph.

    (policy_state, prm_state, ref_params, batch, rng) -> (policy_state, prm_state, metrics)

1. old log-probs of the policy (recomputed, or the sampler's when `rl.old_logp="sampler"`);
2. reference log-probs (a frozen model, or the old log-probs when `rl.ref_type="policy"`);
3. `prm_phase` (`prime_jax.algo.prm_phase`): the implicit PRM per mini-batch, for
   `rl.prm_update` in after | before | none; mini-batch k is the k-th block of every
   data-parallel shard (`rl.prm_batch_order="strided"`, as released) or the k-th contiguous block
   of the batch ("contiguous"); with `rl.prm_loss="dpo"` the others' Q of each group come from
   one forward of the PRM before the updates, as in the port;
4. process rewards (granularity, scale, batch_norm) and `estimator_advantages` of the configured
   estimator, whitened over the batch for every estimator when `rl.whiten_advantages`
   (`prime_jax.algo.advantages`; docs/estimators.md);
5. `policy_phase` (`prime_jax.algo.policy_phase`): PPO-clip over shuffled policy mini-batches
   with gradient accumulation over micro-batches (`model_passes.optimizer_step`).
Outcome-only runs (`coef_proc=0`, not `prm_value`) never run the PRM or the reference, nor do
oracle runs (`rl.process_reward="oracle"`): their process scores arrive in the batch, from the
task's step oracle, and take step 4 in place of the PRM's q.
Every forward pass is micro-batched and turns hidden states into log-probs chunk by chunk, so no
[N, T, vocab] array exists (`prime_jax.algo.model_passes`).

This module is the step itself (`update_step`: the five steps above, in order) and what builds it
(`make_update_step`: the model-dependent config check, then `jax.jit` with the optimisers and
shardings of `prime_jax.algo.step_placement`). Every function of the step is a module-level pure
function: arrays and states are its arguments, the static choices (`rl` = config.rl, the
decoder's `model_config`, optimisers, sizes, the micro-batches' sharding) are keywords, bound with
`functools.partial` by `make_update_step` before `jax.jit`. The formulas themselves are in `prime_jax.algo.prime` (the paper's) and the
modules it points to.

`batch` holds, with N = B·n rows (the n samples of a prompt contiguous):
  prompt_tokens [N, P] int32 (left-padded), prompt_mask [N, P] bool,
  response_tokens [N, T] int32 (right-padded), response_mask [N, T] bool (EOS included),
  acc [N] float32 outcome scores in [0, 1], old_logp [N, T] when `rl.old_logp="sampler"`, and
  process_rewards [N, T] float32 (the oracle's -1 / 0 token rewards) when
  `rl.process_reward="oracle"`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prime_jax.algo.advantages import (
    estimator_advantages,
    normalized_process_rewards,
    oracle_process_rewards,
    prm_process_rewards,
)
from prime_jax.algo.model_passes import score_batch
from prime_jax.algo.policy_phase import policy_phase
from prime_jax.algo.prm_phase import prm_phase
from prime_jax.algo.step_placement import (
    needs_frozen_ref,
    policy_optimizer,
    prm_optimizer,
    update_step_shardings,
)
from prime_jax.algo.token_ops import masked_stats
from prime_jax.config_checks import check_model_for, check_rl_config, ref_options, uses_prm
from prime_jax.models.config import DecoderConfig
from prime_jax.sharding import activation_rules, logical_sharding, training_rules
from prime_jax.train_state import TrainState

INPUT_KEYS = ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask")


def forward_passes(rl) -> list[tuple[str, str, int]]:
  """(phase, pass, cost in forward passes over the batch) that the step runs for `rl`; a
  forward+backward costs 3. Phase "prm" is the PRM and its reference, "policy" the rest. The
  trainer splits the one compiled step's time between the two by these shares (time/prm_est,
  time/policy_est), the update-step benchmark counts FLOPs with them."""
  out = []
  if rl.old_logp == "recompute":
    out.append(("policy", "policy old-logp fwd", 1))
  if uses_prm(rl):
    if rl.ref_type == "freeze":
      out.append(("prm", "reference fwd", 1))
    out.append(
        (
            "prm",
            "PRM fwd" if rl.prm_update == "none" else "PRM fwd+bwd",
            1 if rl.prm_update == "none" else 3,
        )
    )
    if rl.prm_update != "none" and rl.prm_loss == "dpo":
      out.append(("prm", "PRM pre-update fwd (DPO's others)", 1))
    if rl.prm_update == "before" or rl.prm_metrics_after:
      out.append(("prm", "PRM re-score fwd", 1))
  out.append(("policy", "policy fwd+bwd", 3 * rl.ppo_epochs))
  return out


# ----------------------------------------------------------------------- the whole step


def update_step(
    policy_state: TrainState,
    prm_state: Optional[TrainState],
    ref_params,
    batch: dict,
    rng,
    *,
    rl,
    model_config: DecoderConfig,
    policy_opt: optax.GradientTransformation,
    prm_opt: optax.GradientTransformation,
    micro_sharding: Optional[NamedSharding] = None,
    ref_on_device=None,
):
  """One PRIME update (the module docstring's steps 1-5): (policy_state, prm_state, metrics).

  The keywords are static (bound by `make_update_step`): `rl` = config.rl, the decoder's
  `model_config`, the two optimisers, and with a mesh the micro-batches' sharding and, with
  `config.ref.offload`, the reference's device shardings (its params arrive in host memory).
  """
  is_ppo = rl.estimator == "ppo"
  run_prm = uses_prm(rl)
  needs_ref = run_prm or rl.kl_coef != 0
  scoring = dict(rl=rl, model_config=model_config, micro_sharding=micro_sharding)
  inputs = {k: batch[k] for k in INPUT_KEYS}
  mask, acc = batch["response_mask"], batch["acc"].astype(jnp.float32)

  # 1. old log-probs (and PPO's old values: one forward gives both)
  old_values = None
  if is_ppo:
    old = score_batch(policy_state.params, inputs, with_values=True, **scoring)
    old_logp, old_values = old.logp, old.values
    if rl.old_logp == "sampler":
      old_logp = batch["old_logp"]
  elif rl.old_logp == "recompute":
    old_logp = score_batch(policy_state.params, inputs, **scoring).logp
  else:
    old_logp = batch["old_logp"]
  metrics = {
      "acc_mean": jnp.mean(acc),
      "response_length_mean": jnp.mean(jnp.sum(mask, axis=1).astype(jnp.float32)),
      "tokens": jnp.sum(mask),
  }

  # 2. reference log-probs
  ref_logp = None  # ref_params is None unless a frozen reference is needed
  if needs_ref and rl.ref_type == "policy":
    ref_logp = old_logp
  elif needs_ref:
    if ref_on_device is not None:  # host -> devices, for this forward only
      ref_params = jax.device_put(ref_params, ref_on_device)
    ref_logp = score_batch(ref_params, inputs, **scoring).logp

  # 3-4. the PRM phase and the process rewards
  q = scores = jnp.zeros(mask.shape, jnp.float32)
  if rl.process_reward == "oracle":
    scores = oracle_process_rewards(batch["process_rewards"], mask, rl=rl)
  elif run_prm:
    prm_state, logp_prm, prm_metrics = prm_phase(
        prm_state, dict(inputs, acc=acc, ref_logp=ref_logp), optimizer=prm_opt, **scoring
    )
    metrics.update(prm_metrics)
    q, scores = prm_process_rewards(logp_prm, ref_logp, mask, rl=rl)
  if run_prm or rl.process_reward == "oracle":
    scores = normalized_process_rewards(scores, mask, rl=rl)
    metrics.update(masked_stats("process_reward", scores, mask))

  # 4. advantages
  advantages, returns = estimator_advantages(rl, scores, q, acc, mask, old_values)
  metrics.update(masked_stats("returns", returns, mask))
  metrics.update(masked_stats("advantages", advantages, mask))

  # 5. the policy phase
  data = dict(inputs, acc=acc, old_logp=old_logp, advantages=advantages)
  if is_ppo:
    data.update(returns=returns, old_values=old_values)
    metrics.update(masked_stats("values", old_values, mask))
  if rl.kl_coef:
    data["ref_logp"] = ref_logp
  policy_state, policy_metrics = policy_phase(
      policy_state, data, rng, optimizer=policy_opt, **scoring
  )
  metrics.update(policy_metrics)
  return policy_state, prm_state, metrics


def _update_step_on_mesh(*args, mesh: Mesh, rules, **static):
  """`update_step` traced under the logical-axis `rules`, so the decoder's activation
  constraints follow them."""
  with activation_rules(mesh, rules):
    return update_step(*args, **static)


def make_update_step(
    config, mesh: Optional[Mesh], model_config: DecoderConfig, *, rules=None
) -> Callable:
  """Builds the jitted update step for `config.rl` and the decoder `model_config`:
  `jax.jit(functools.partial(update_step, **static))`.

  With a mesh, states keep the sharding of the logical-axis rules (`rules`, default
  `config.sharding_rules`), batch rows are split over the `batch` rule's axes, the decoder's
  activations are constrained by the same rules (the step is traced under
  `prime_jax.sharding.activation_rules`), and the policy/PRM states are donated. With
  `config.ref.offload` the reference params arrive in host memory and are moved to the devices
  inside the step, for the reference forward only. Without a mesh (mesh=None) it runs wherever
  its inputs are (and `config.ref.offload` is an error).
  """
  rl = config.rl
  check_rl_config(rl)
  check_model_for(rl, model_config)
  offload_ref = ref_options(config).offload and needs_frozen_ref(rl)
  if mesh is None and offload_ref:
    raise ValueError(
        "config.ref.offload needs a mesh (it places the reference params with "
        "NamedShardings of memory_kind='pinned_host')"
    )
  static = dict(
      rl=rl,
      model_config=model_config,
      policy_opt=policy_optimizer(rl),
      prm_opt=prm_optimizer(rl),
  )
  if mesh is None:
    return jax.jit(functools.partial(update_step, **static), donate_argnums=(0, 1))

  rules = rules or training_rules(config)
  batch_spec = logical_sharding(mesh, ("batch",), rules).spec
  shardings = update_step_shardings(config, mesh, model_config, rules=rules)
  static["micro_sharding"] = NamedSharding(mesh, PartitionSpec(None, *batch_spec))
  if offload_ref:  # the reference's device shardings inside the step
    static["ref_on_device"] = jax.tree_util.tree_map(
        lambda s: s.with_memory_kind("device"), shardings["ref"]
    )
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
      functools.partial(_update_step_on_mesh, mesh=mesh, rules=rules, **static),
      donate_argnums=(0, 1),
      in_shardings=(
          shardings["policy"],
          shardings["prm"],
          shardings["ref"],
          shardings["batch"],
          replicated,
      ),
      out_shardings=(shardings["policy"], shardings["prm"], replicated),
  )
