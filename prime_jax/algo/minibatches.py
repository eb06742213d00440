"""The PRM's mini-batches over a step's batch: strided over the data-parallel shards, as released.

The released run cuts the batch into the data-parallel shards that also scope `batch_norm`
(8 contiguous shards of 128 responses) and each worker walks its own shard in order, in K local
blocks; a global PRM optimiser step k therefore takes the k-th block of *every* shard. So every
normalisation shard holds rewards from every PRM version of the step (`prm_update="after"`
scores mini-batch k with the PRM after k updates); with contiguous mini-batches whole shards
would be scored by one PRM version (docs/estimators.md).
"""

import jax

from prime_jax.algo.validation import check_positive_int

PRM_BATCH_ORDERS = ("strided", "contiguous")


def _check_blocks(num_rows: int, num_minibatches: int, num_shards: int, group_size: int) -> int:
  """Checks that num_shards x num_minibatches blocks tile the batch in whole groups; returns the
  block size (rows)."""
  check_positive_int("num_minibatches", num_minibatches)
  check_positive_int("num_shards", num_shards)
  check_positive_int("group_size", group_size)
  blocks = num_shards * num_minibatches
  if num_rows % blocks or (num_rows // blocks) % group_size:
    raise ValueError(
        f"{num_rows} responses cannot be cut into {num_shards} shard(s) x {num_minibatches} "
        f"mini-batch block(s) of whole groups of {group_size}"
    )
  return num_rows // blocks


def split_minibatches(tree, *, num_minibatches: int, num_shards: int = 1, group_size: int = 1):
  """[N, ...] leaves -> [K, N/K, ...]: the K mini-batches, in the order the PRM takes them.

  The batch is cut into `num_shards` contiguous shards of N/S rows, each shard into K contiguous
  local blocks of b = N/(S·K) rows, and mini-batch k is the k-th block of every shard, shards in
  order: rows {s·N/S + k·b + j : s < S, j < b}. num_shards = 1 gives contiguous mini-batches
  (rows [k·N/K, (k+1)·N/K)). Reshapes only (no gather): under a mesh whose data axis splits the
  rows into the same shards, every mini-batch stays spread over all of them.

  Args:
    tree: a pytree of arrays with the N responses on axis 0 (N static).
    num_minibatches: K, the PRM optimiser steps of the RL step.
    num_shards: S, the data-parallel shards (`rl.norm_shards` in the released layout).
    group_size: n; every block must hold whole groups of n contiguous rows (the DPO loss and
      the pair accuracy compare a response with its group).
  Returns:
    the tree with leaves [K, N/K, ...].
  """

  def split(x):
    block = _check_blocks(x.shape[0], num_minibatches, num_shards, group_size)
    blocks = x.reshape((num_shards, num_minibatches, block) + x.shape[1:])
    return blocks.swapaxes(0, 1).reshape((num_minibatches, num_shards * block) + x.shape[1:])

  return jax.tree_util.tree_map(split, tree)


def merge_minibatches(tree, *, num_shards: int = 1):
  """The inverse of `split_minibatches`: [K, M, ...] leaves (mini-batch k's rows in its order)
  -> [K·M, ...] in batch order."""

  def merge(x):
    num_minibatches, rows = x.shape[:2]
    if rows % num_shards:
      raise ValueError(f"mini-batches of {rows} rows are not {num_shards} equal shard blocks")
    blocks = x.reshape((num_minibatches, num_shards, rows // num_shards) + x.shape[2:])
    return blocks.swapaxes(0, 1).reshape((num_minibatches * rows,) + x.shape[2:])

  return jax.tree_util.tree_map(merge, tree)
