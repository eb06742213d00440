"""Optimiser state of a trained model (policy or implicit PRM) as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec


@flax.struct.dataclass
class TrainState:
  """step: scalar int32 optimiser steps taken; params: model params; opt_state: optax state."""

  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(
    lr: float, weight_decay: float, grad_clip: float
) -> optax.GradientTransformation:
  """AdamW at a constant learning rate after global-norm clipping (docs/algorithm.md: "The PRM's
  online update", "The policy loss")."""
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay),
  )


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def apply_gradients(
    state: TrainState, grads, optimizer: optax.GradientTransformation
) -> TrainState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return TrainState(
      step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )


def train_state_shardings(
    params_shardings, optimizer: optax.GradientTransformation, abstract_params
):
  """Shardings for a TrainState: optimiser moments follow their params, scalars replicated."""
  mesh = jax.tree_util.tree_leaves(params_shardings)[0].mesh
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt_shardings = optax.tree_map_params(
      optimizer,
      lambda _, s: s,
      abstract_opt,
      params_shardings,
      transform_non_params=lambda _: replicated,
  )
  return TrainState(step=replicated, params=params_shardings, opt_state=opt_shardings)
