"""A deterministic, resumable walk over a random-access record source.

Epoch e visits every record of the source once, in the order of a permutation drawn from
(seed, e) (or in stored order with shuffle=False), then epoch e + 1 begins. The position is two
integers, so a checkpoint saves `iterator.state()` and a restarted run calls
`iterator.restore(state)` and continues with exactly the records an uninterrupted run would get.

The walk is over source positions (`take_positions`), which are plain integers: the trainer's
processes all walk the same order over the whole split, and each reads (`read`) only the records
of the positions it handles, so their states are equal and a run's prompts do not depend on how
many processes it has.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from prime_jax.data.records import Record


class PromptIterator(Iterator[Record]):
  """Infinite iterator over `source` (a sequence of records: `len` and `[i]`)."""

  def __init__(self, source: Sequence[Record], *, seed: int, shuffle: bool = True):
    if len(source) == 0:
      raise ValueError("cannot iterate over an empty record source")
    self.source = source
    self.seed = int(seed)
    self.shuffle = shuffle
    self.epoch = 0
    self.position = 0  # index into the epoch's order of the next record
    self._order_epoch, self._order = -1, None

  def _epoch_order(self) -> np.ndarray:
    if self._order_epoch != self.epoch:
      n = len(self.source)
      self._order = (
          np.random.default_rng([self.seed, self.epoch]).permutation(n)
          if self.shuffle
          else np.arange(n)
      )
      self._order_epoch = self.epoch
    return self._order

  def take_positions(self, n: int) -> list[int]:
    """Source positions of the next `n` records (nothing is read); advances the state."""
    positions = []
    while len(positions) < n:
      if self.position == len(self.source):
        self.epoch, self.position = self.epoch + 1, 0
      stop = min(len(self.source), self.position + n - len(positions))
      positions.extend(int(i) for i in self._epoch_order()[self.position : stop])
      self.position = stop
    return positions

  def take(self, n: int) -> list[Record]:
    """The next `n` records, read in one batch when the source can (`RecordSource` can)."""
    return self.read(self.take_positions(n))

  def read(self, positions: Sequence[int]) -> list[Record]:
    """The records at source `positions`, in one batched read when the source can
    (`RecordSource` can); the state is unchanged."""
    positions = [int(i) for i in positions]
    if hasattr(self.source, "__getitems__"):
      return self.source.__getitems__(positions) if positions else []
    return [self.source[i] for i in positions]

  def __next__(self) -> Record:
    return self.take(1)[0]

  def state(self) -> dict[str, int]:
    """Plain ints (JSON- and pytree-friendly); `num_records`, `seed` and `shuffle` are there so
    that restoring onto different data is an error instead of silently different prompts."""
    return dict(
        epoch=self.epoch,
        position=self.position,
        num_records=len(self.source),
        seed=self.seed,
        shuffle=int(self.shuffle),
    )

  def restore(self, state: Mapping[str, int]) -> None:
    expected = dict(num_records=len(self.source), seed=self.seed, shuffle=int(self.shuffle))
    for key, value in expected.items():
      if int(state[key]) != value:
        raise ValueError(
            f"data iterator state was saved with {key}={int(state[key])} but this "
            f"run has {key}={value}; the data or its seed changed since the "
            "checkpoint"
        )
    epoch, position = int(state["epoch"]), int(state["position"])
    if epoch < 0 or not 0 <= position <= len(self.source):
      raise ValueError(
          f"data iterator state epoch={epoch} position={position} is out of range "
          f"for {len(self.source)} records"
      )
    self.epoch, self.position = epoch, position
