"""The PRM's mini-batch order (strided over the data-parallel shards, as released) against
index lists built by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from prime_jax.algo import merge_minibatches, split_minibatches


def released_order(num_rows, num_minibatches, num_shards):
  """Mini-batch k = the k-th local block of every shard, shards in order, by plain loops."""
  shard_rows = num_rows // num_shards
  block = shard_rows // num_minibatches
  order = []
  for k in range(num_minibatches):
    rows = []
    for shard in range(num_shards):
      first = shard * shard_rows + k * block
      rows += list(range(first, first + block))
    order.append(rows)
  return order


def test_released_run_layout_written_out():
  """16 rows, 2 shards (the normalisation scopes), 2 PRM steps: blocks of 4 rows."""
  got = split_minibatches(np.arange(16), num_minibatches=2, num_shards=2)
  assert np.asarray(got).tolist() == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
  # The released run: 1024 responses, 8 shards of 128, 4 PRM steps of 256 (blocks of 32).
  got = np.asarray(split_minibatches(np.arange(1024), num_minibatches=4, num_shards=8))
  assert got.shape == (4, 256)
  assert got[1, :64].tolist() == list(range(32, 64)) + list(range(160, 192))
  assert got[3, -32:].tolist() == list(range(992, 1024))


@pytest.mark.parametrize(
    "num_rows, num_minibatches, num_shards",
    [(16, 2, 2), (48, 3, 4), (64, 4, 1), (64, 1, 8), (96, 4, 3), (1024, 4, 8)],
)
def test_order_matches_the_hand_built_index_list(num_rows, num_minibatches, num_shards):
  got = split_minibatches(
      jnp.arange(num_rows), num_minibatches=num_minibatches, num_shards=num_shards
  )
  assert np.asarray(got).tolist() == released_order(num_rows, num_minibatches, num_shards)


def test_one_shard_is_contiguous_and_every_row_appears_once():
  got = np.asarray(split_minibatches(np.arange(24), num_minibatches=3))
  assert got.tolist() == [list(range(8 * k, 8 * k + 8)) for k in range(3)]
  strided = np.asarray(split_minibatches(np.arange(24), num_minibatches=3, num_shards=2))
  assert sorted(strided.reshape(-1).tolist()) == list(range(24))


def test_merge_inverts_split_on_every_leaf():
  rng = np.random.default_rng(0)
  rows = np.arange(32)
  tree = dict(
      acc=rows * 2.0, tokens=rows[:, None, None] + 100 * rng.integers(1, 9, size=(32, 5, 3))
  )
  for shards in (1, 2, 4):
    split = split_minibatches(tree, num_minibatches=4, num_shards=shards, group_size=2)
    assert split["tokens"].shape == (4, 8, 5, 3)
    order = np.asarray(split_minibatches(rows, num_minibatches=4, num_shards=shards))
    # Every leaf is permuted by the same row order.
    np.testing.assert_array_equal(np.asarray(split["acc"]), 2.0 * order)
    np.testing.assert_array_equal(
        np.asarray(split["tokens"]) % 100, np.broadcast_to(order[:, :, None, None], (4, 8, 5, 3))
    )
    merged = merge_minibatches(split, num_shards=shards)
    for key in tree:
      np.testing.assert_array_equal(np.asarray(merged[key]), tree[key])


def test_blocks_must_tile_the_batch_in_whole_groups():
  with pytest.raises(ValueError, match="whole groups of 4"):
    split_minibatches(np.arange(32), num_minibatches=4, num_shards=4, group_size=4)  # blocks of 2
  with pytest.raises(ValueError, match="3 mini-batch"):
    split_minibatches(np.arange(32), num_minibatches=3)
  with pytest.raises(ValueError, match="num_shards"):
    split_minibatches(np.arange(32), num_minibatches=2, num_shards=0)
  split_minibatches(np.arange(32), num_minibatches=2, num_shards=4, group_size=4)  # blocks of 4
