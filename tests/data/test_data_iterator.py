"""`PromptIterator`: epochs, per-epoch shuffling, and resume from a saved state."""

import json

import pytest

from prime_jax.data import PromptIterator, Record, load_split, write_records


def _records(n):
  return [
      Record(
          id=f"r{i}",
          data_source="s",
          ability="math",
          messages=json.dumps([{"role": "user", "content": str(i)}]),
          ground_truth=str(i),
      )
      for i in range(n)
  ]


def _ids(records):
  return [r.id for r in records]


def test_every_epoch_visits_each_record_once_in_a_new_order():
  source = _records(20)
  it = PromptIterator(source, seed=3)
  epochs = [_ids(it.take(20)) for _ in range(3)]
  assert all(sorted(e) == sorted(_ids(source)) for e in epochs)
  assert len({tuple(e) for e in epochs}) == 3 and epochs[0] != _ids(source)
  assert it.state()["epoch"] == 2 and it.state()["position"] == 20


def test_deterministic_in_the_seed_and_unshuffled_order():
  source = _records(10)

  def walk(seed, n, **kwargs):
    return _ids(PromptIterator(source, seed=seed, **kwargs).take(n))

  assert walk(1, 25) == walk(1, 25)
  assert walk(1, 10) != walk(2, 10)
  assert walk(1, 12, shuffle=False) == _ids(source + source[:2])


def test_positions_read_later_are_the_records_take_gives():
  source = _records(10)
  walked, taken = PromptIterator(source, seed=2), PromptIterator(source, seed=2)
  positions = walked.take_positions(15)  # across an epoch boundary; reads nothing
  assert _ids(walked.read(positions)) == _ids(taken.take(15))
  assert walked.state() == taken.state() and walked.read([]) == []


@pytest.mark.parametrize("stop", [0, 7, 13, 26])  # start, mid-epoch, epoch 1, epoch boundary
def test_resume_from_saved_state_gives_the_same_prompts(tmp_path, stop):
  write_records(_records(13), tmp_path, "train")
  uninterrupted = PromptIterator(load_split(tmp_path, "train"), seed=5)
  expected = _ids(uninterrupted.take(stop + 30))[stop:]

  first = PromptIterator(load_split(tmp_path, "train"), seed=5)
  first.take(stop)
  saved = json.loads(json.dumps(first.state()))  # as a checkpoint stores it
  resumed = PromptIterator(load_split(tmp_path, "train"), seed=5)
  resumed.restore(saved)
  assert _ids(resumed.take(30)) == expected


def test_restore_onto_other_data_or_seed_is_an_error():
  state = PromptIterator(_records(10), seed=0).state()
  with pytest.raises(ValueError, match="saved with num_records=10 but this run has num_records=11"):
    PromptIterator(_records(11), seed=0).restore(state)
  with pytest.raises(ValueError, match="seed=0 but this run has seed=1"):
    PromptIterator(_records(10), seed=1).restore(state)
  with pytest.raises(ValueError, match="out of range"):
    PromptIterator(_records(10), seed=0).restore({**state, "position": 11})
  with pytest.raises(ValueError, match="empty record source"):
    PromptIterator([], seed=0)
