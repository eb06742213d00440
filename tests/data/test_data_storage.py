"""`write_records` / `load_split`: round trip, per-process slices, validation, errors."""

import json

import pytest

from prime_jax.data import (
    DataError,
    MalformedRecord,
    Record,
    load_split,
    split_names,
    write_records,
)


def _task_records(n, split="train"):
  """Records as prime_jax.tasks makes them: dicts whose messages are a list."""
  return [
      dict(
          id=f"arithmetic-{split}-{i:06d}",
          data_source="arithmetic",
          ability="arithmetic",
          messages=[{"role": "user", "content": f"a={i:02d};+01"}],
          ground_truth=str(i + 1),
      )
      for i in range(n)
  ]


def test_round_trip_keeps_order_and_text_exactly(tmp_path):
  records = [
      Record.from_chat(
          id=f"r{i}",
          data_source="src",
          ability="math",
          ground_truth=f"\\frac{{{i}}}{{2}}",
          messages=[
              {"role": "system", "content": "sys"},
              {"role": "user", "content": f"Ünïcödé 🙂 {i}\n\t$x^2$"},
          ],
      )
      for i in range(7)
  ]
  assert write_records(records, tmp_path, "train") == 7
  assert list(load_split(tmp_path, "train")) == records


def test_task_records_and_several_splits(tmp_path):
  write_records(_task_records(5), tmp_path, "train")
  write_records(_task_records(2, "eval"), tmp_path, "eval")
  assert split_names(tmp_path) == ["eval", "train"]
  got = load_split(tmp_path, "eval")
  assert [r.id for r in got] == ["arithmetic-eval-000000", "arithmetic-eval-000001"]
  assert got[1].chat() == [{"role": "user", "content": "a=01;+01"}]
  assert len(load_split(tmp_path, "train")) == 5


@pytest.mark.parametrize("n,count", [(10, 2), (11, 2), (7, 3), (3, 3)])
def test_process_slices_are_disjoint_cover_the_split_and_balance(tmp_path, n, count):
  write_records(_task_records(n), tmp_path, "train")
  slices = [
      [r.id for r in load_split(tmp_path, "train", process_index=p, process_count=count)]
      for p in range(count)
  ]
  ids = [i for s in slices for i in s]
  assert len(ids) == len(set(ids)) == n
  assert set(ids) == {r["id"] for r in _task_records(n)}
  assert max(map(len, slices)) - min(map(len, slices)) <= 1
  # Strided, so a file sorted by kind (all math, then all code) still splits evenly by kind.
  stored = [r["id"] for r in _task_records(n)]
  assert slices == [stored[p::count] for p in range(count)]


def test_invalid_record_is_an_error_and_nothing_is_written(tmp_path):
  records = _task_records(3)
  records[1]["ground_truth"] = ""
  with pytest.raises(
      MalformedRecord, match="record 'arithmetic-train-000001': ground_truth is empty"
  ):
    write_records(records, tmp_path, "train")
  assert split_names(tmp_path) == []
  assert not any(tmp_path.rglob("*array_record*"))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("messages", '[{"role": "user"}]', "exactly 'role' and 'content'"),
        ("messages", "not json", "messages is not valid JSON"),
        ("messages", json.dumps([{"role": "narrator", "content": "x"}]), "role 'narrator'"),
        ("messages", json.dumps([{"role": "system", "content": "x"}]), "no non-empty user message"),
        ("ability", "Math", "lower-case name"),
        ("id", "\ud800", "id is not valid UTF-8"),
        ("ground_truth", json.dumps({"inputs": []}), "needs lists 'inputs' and 'outputs'"),
        ("ground_truth", "[1, 2]", "must be a JSON object"),
    ],
)
def test_record_validation(field, value, message):
  good = dict(
      id="c1",
      data_source="taco",
      ability="code",
      messages=json.dumps([{"role": "user", "content": "Add."}]),
      ground_truth=json.dumps({"inputs": ["1\n"], "outputs": ["1\n"], "fn_name": "f"}),
  )
  Record(**good).validate()
  with pytest.raises(MalformedRecord, match=message):
    Record(**{**good, field: value}).validate()


def test_duplicate_ids_are_an_error(tmp_path):
  records = _task_records(2)
  records[1]["id"] = records[0]["id"]
  with pytest.raises(MalformedRecord, match="duplicate id"):
    write_records(records, tmp_path, "train")


def test_load_errors(tmp_path):
  with pytest.raises(DataError, match="no prepared data .*prime_jax.data.prepare"):
    load_split(tmp_path / "nowhere", "train")
  write_records(_task_records(2), tmp_path, "train")
  with pytest.raises(DataError, match=r"has no split 'validation'; it has \['train'\]"):
    load_split(tmp_path, "validation")
  with pytest.raises(DataError, match="2 records, fewer than the 3 processes"):
    load_split(tmp_path, "train", process_index=0, process_count=3)
  with pytest.raises(ValueError, match="process_index 2 must be in"):
    load_split(tmp_path, "train", process_index=2, process_count=2)
  with pytest.raises(DataError, match="no records to write"):
    write_records([], tmp_path, "empty")
  with pytest.raises(DataError, match="split name 'train-1'"):
    write_records(_task_records(1), tmp_path, "train-1")
