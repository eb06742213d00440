"""Where the update step's states live and what optimises them: the policy's and the PRM's
optimisers, the shardings of the step's inputs on a mesh, and the frozen reference's copy and
placement (on the devices, or in host memory with `config.ref.offload`).
`prime_jax.algo.update_step.make_update_step` builds the step on these; the trainer, the memory
planner and the compile check place their states with them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from prime_jax.config_checks import ref_options, uses_prm
from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import init_params
from prime_jax.sharding import logical_sharding, param_shardings, training_rules
from prime_jax.train_state import make_optimizer, train_state_shardings


def policy_optimizer(rl) -> optax.GradientTransformation:
  return make_optimizer(rl.lr, rl.weight_decay, rl.grad_clip)


def prm_optimizer(rl) -> optax.GradientTransformation:
  return make_optimizer(rl.prm_lr, rl.prm_weight_decay, rl.prm_grad_clip)


def needs_frozen_ref(rl) -> bool:
  """Whether the step needs a frozen reference model (the PRM's or the KL penalty's, with
  rl.ref_type="freeze"; "policy" uses the old log-probs instead)."""
  return (uses_prm(rl) or rl.kl_coef != 0) and rl.ref_type == "freeze"


def update_step_shardings(config, mesh: Mesh, model_config: DecoderConfig, *, rules=None) -> dict:
  """Where the step's inputs live: {"policy", "prm"} TrainState shardings, "ref" params
  shardings (memory_kind "pinned_host" with `config.ref.offload`), "batch" (rows over the
  `batch` rule's axes). `rules` default to `config.sharding_rules`. `jax.device_put` states
  and batches onto these before the first call (the reference through `reference_params`): the
  step donates the states in place. "prm" is None when the step never runs the PRM and "ref"
  None when it needs no reference: pass None for them."""
  rules = rules or training_rules(config)
  abstract_params = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))
  p_shardings = param_shardings(model_config, mesh, rules)
  rl = config.rl
  return {
      "policy": train_state_shardings(p_shardings, policy_optimizer(rl), abstract_params),
      "prm": (
          train_state_shardings(p_shardings, prm_optimizer(rl), abstract_params)
          if uses_prm(rl)
          else None
      ),
      "ref": _ref_memory(p_shardings, config) if needs_frozen_ref(rl) else None,
      "batch": logical_sharding(mesh, ("batch",), rules),
  }


def _ref_memory(shardings, config):
  """The reference's shardings: in host memory ("pinned_host") with `config.ref.offload`."""
  if not ref_options(config).offload:
    return shardings
  devices = jax.tree_util.tree_leaves(shardings)[0].addressable_devices
  kinds = {m.kind for d in devices for m in d.addressable_memories()}
  if "pinned_host" not in kinds:
    raise ValueError(
        f"config.ref.offload: the {next(iter(devices)).platform} devices have "
        f"no pinned_host memory (memory kinds: {sorted(kinds)})"
    )
  return jax.tree_util.tree_map(lambda s: s.with_memory_kind("pinned_host"), shardings)


def reference_params(params, config, ref_shardings):
  """The frozen reference: a copy of `params` (the policy's, whose buffers the step donates) in
  `config.ref.param_dtype` (cast once here; its forward still computes in the model's dtype),
  placed on `ref_shardings` (`update_step_shardings(...)["ref"]`: on the devices, or in host
  memory with `config.ref.offload`). Device-to-device / device-to-host copies only."""
  dtype = jnp.dtype(ref_options(config).param_dtype)
  copy = jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if x.dtype != dtype else x.copy(), params
  )  # fresh buffers
  return jax.device_put(copy, ref_shardings)
