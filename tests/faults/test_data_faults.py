"""Malformed prepared data: a damaged ArrayRecord shard and rows no writer of ours would store (a
missing field, text that is not UTF-8, an empty ground truth). Reading such a row is a
`DataError` naming the shard file and the row; the files are left as they are. (Malformed rows
of *input* files are skipped and counted by `prime_jax.data.prepare`, tested in tests/data.)"""

import re
import time

import pytest
from array_record.python import array_record_module

from fault_tools import tree_digest
from prime_jax.data import DataError, PromptIterator, load_split, write_records
from prime_jax.data.records import Record
from prime_jax.data.storage import dataset_dir, dataset_features

ROWS = 40
BAD_ROW = 17


def records():
  return [
      Record.from_chat(
          id=f"r{i}",
          data_source="test",
          ability="math",
          messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
          ground_truth=str(2 * i),
      )
      for i in range(ROWS)
  ]


def shard(data_dir):
  (path,) = dataset_dir(data_dir).glob("prime_records-train.array_record-*")
  return path


def rewrite_shard(data_dir, bad_example: dict):
  """Rewrites the train shard with row BAD_ROW replaced by `bad_example` (serialised like tfds
  does, but with no validation)."""
  from tensorflow_datasets.core import example_serializer

  features = dataset_features()
  info = {k: v for k, v in features.get_serialized_info().items() if k in bad_example}
  examples = [r.to_dict() for r in records()]
  path = shard(data_dir)
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for i, example in enumerate(examples):
    if i == BAD_ROW:
      encoded = {k: v for k, v in features.encode_example({**example, **bad_example}).items()}
      encoded = {k: encoded[k] for k in bad_example}
      writer.write(example_serializer.ExampleSerializer(info).serialize_example(encoded))
    else:
      writer.write(
          example_serializer.ExampleSerializer(features.get_serialized_info()).serialize_example(
              features.encode_example(example)
          )
      )
  writer.close()


@pytest.fixture
def data_dir(tmp_path):
  write_records(records(), tmp_path, "train")
  return tmp_path


def missing_field():
  return {k: v for k, v in records()[BAD_ROW].to_dict().items() if k != "ground_truth"}


BAD_ROWS = {
    "a missing field": (missing_field, "field ground_truth is missing"),
    "a prompt that is not UTF-8": (
        lambda: dict(
            records()[BAD_ROW].to_dict(), messages=b'[{"role": "user", "content": "\xff"}]'
        ),
        r"messages is not valid UTF-8 \(byte 30\)",
    ),
    "an empty ground truth": (
        lambda: dict(records()[BAD_ROW].to_dict(), ground_truth="  "),
        "ground_truth is empty",
    ),
}


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_a_malformed_row_is_an_error_naming_the_file_and_row(data_dir, kind, figures):
  make, reason = BAD_ROWS[kind]
  rewrite_shard(data_dir, make())
  before = tree_digest(data_dir)
  source = load_split(data_dir, "train")
  iterator = PromptIterator(source, seed=0, shuffle=False)
  assert [r.id for r in iterator.take(BAD_ROW)] == [f"r{i}" for i in range(BAD_ROW)]
  start = time.perf_counter()
  with pytest.raises(DataError) as e:
    iterator.take(4)  # a batch holding the bad row
  seconds = time.perf_counter() - start
  assert re.fullmatch(
      rf"{re.escape(str(shard(data_dir)))} row {BAD_ROW} \(record {BAD_ROW} of split 'train'\): "
      rf"{reason}",
      str(e.value),
  ), str(e.value)
  assert source[BAD_ROW + 1].id == f"r{BAD_ROW + 1}"  # the other rows still read
  assert tree_digest(data_dir) == before
  figures(
      fault=f"prepared data: {kind} (row {BAD_ROW} of a shard)",
      outcome="reading it raises a DataError, one line naming the shard file, the row and the "
      "field (the trainer stops with it); the data files are left as they are",
      recover_s=seconds,
      lost="nothing (the data must be fixed or prepared again)",
  )


def test_a_damaged_shard_is_an_error_naming_the_file_and_row(data_dir, figures):
  path = shard(data_dir)
  data = bytearray(path.read_bytes())
  at = 2048  # inside the records' chunk (the file's first ~8 kB; the rest is padding and footer)
  data[at : at + 64] = bytes(b ^ 0xFF for b in data[at : at + 64])
  path.write_bytes(bytes(data))
  source = load_split(data_dir, "train")
  start = time.perf_counter()
  with pytest.raises(DataError) as e:
    source.__getitems__(list(range(ROWS)))
  seconds = time.perf_counter() - start
  assert re.fullmatch(
      rf"{re.escape(str(path))} row \d+ \(record \d+ of split 'train'\) cannot be read: "
      r"RuntimeError: .*(hash mismatch|Riegeli).*",
      str(e.value),
  ), str(e.value)
  assert path.read_bytes() == bytes(data)
  figures(
      fault="prepared data: an ArrayRecord shard with 64 bytes flipped",
      outcome="the first unreadable row raises a DataError, one line naming the file, the row "
      "and the reader's error (a chunk hash mismatch); the file is left as it is",
      recover_s=seconds,
      lost="nothing (the data must be prepared again)",
  )


def test_an_empty_shard_is_an_error_naming_the_file(data_dir):
  shard(data_dir).write_bytes(b"")
  with pytest.raises(DataError, match=re.escape(str(shard(data_dir))) + r" .*64KB"):
    list(load_split(data_dir, "train"))
