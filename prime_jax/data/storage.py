"""Prepared data as a tensorflow-datasets dataset (ArrayRecord files), written and read without
TensorFlow.

Layout: `DATA_DIR/prime_records/1.0.0/` holds `dataset_info.json`, `features.json` and each
split's shards `prime_records-<split>.array_record-NNNNN`, so the standard readers work:

    tfds.data_source("prime_records", data_dir=DATA_DIR, split="train")
    tfds.builder_from_directory(DATA_DIR + "/prime_records/1.0.0").as_data_source("train")

Writing uses `tfds.core.SequentialWriter` (tfds's TF-free writer: it serialises examples with
tfds's own tf.Example protos and writes ArrayRecord shards; `GeneratorBasedBuilder` would also
work without TF, but can only write every split of a dataset at once). Records are stored in the
order given (`disable_shuffling`), one split at a time, into a staging directory that is moved
into place only when the whole split was written, so a failed `prepare` leaves DATA_DIR as it
was. Splits can be added to an existing DATA_DIR; replacing one needs `overwrite=True`. Two
writers must not add splits to the same DATA_DIR at the same time.

Reading (`load_split`) gives each process a strided slice, records process_index,
process_index + process_count, ...: disjoint, together covering the split, sizes within one of
each other, and balanced in content even when the source file is sorted (say all math rows,
then all code rows). A process opens the split's shards but reads only the records it asks for.

Every record read is checked again (`Record.validate`): a shard damaged on disk, or written by
something other than `SplitWriter`, may hold a row that is unreadable, lacks a field, is not
UTF-8 or has an empty ground truth. Such a row, or a shard that cannot be opened, is a
`DataError` naming the shard file and the row in it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import tensorflow_datasets as tfds

from prime_jax import io_errors
from prime_jax.data.records import FIELDS, MalformedRecord, Record

DATASET_NAME = "prime_records"
VERSION = "1.0.0"
FILE_FORMAT = "array_record"
_EXAMPLES_PER_SHARD = 100_000
_WRITE_CHUNK = 4096  # records per SequentialWriter call (each call rewrites dataset_info.json)
_SPLIT_RE = re.compile(r"[A-Za-z0-9_]+")


class DataError(ValueError):
  """A prepared data directory or split that is missing or cannot be used."""


def dataset_dir(data_dir: str | os.PathLike) -> Path:
  """Where the tfds dataset of `data_dir` lives (`DATA_DIR/prime_records/1.0.0`)."""
  return Path(data_dir) / DATASET_NAME / VERSION


def dataset_features() -> tfds.features.FeaturesDict:
  """The tfds features of a prompt record: one Text feature per field of FIELDS."""
  return tfds.features.FeaturesDict({name: tfds.features.Text() for name in FIELDS})


def _dataset_info(directory: Path) -> tfds.core.DatasetInfo:
  identity = tfds.core.dataset_info.DatasetIdentity(
      name=DATASET_NAME, version=tfds.core.Version(VERSION), data_dir=str(directory), module_name=""
  )
  return tfds.core.DatasetInfo(
      builder=identity,
      features=dataset_features(),
      disable_shuffling=True,
      description="prime-jax prompts: one record per prompt (prime_jax.data.records).",
  )


def _existing_splits(directory: Path) -> dict[str, tfds.core.SplitInfo]:
  if not (directory / "dataset_info.json").is_file():
    return {}
  builder = tfds.builder_from_directory(str(directory))
  if set(builder.info.features.keys()) != set(FIELDS):
    raise DataError(
        f"{directory} holds a dataset with fields {sorted(builder.info.features)}, "
        f"not prime-jax records {list(FIELDS)}; use another --out directory"
    )
  return dict(builder.info.splits.items())


class SplitWriter:
  """Writes one split of records; the split appears in DATA_DIR only on `commit()`.

  Use as a context manager: leaving the block normally commits, an exception discards.

      with SplitWriter(data_dir, "train") as writer:
        for record in records:
          writer.add(record)   # validates; raises MalformedRecord or DataError (duplicate id)
  """

  def __init__(self, data_dir: str | os.PathLike, split: str, *, overwrite: bool = False):
    if not _SPLIT_RE.fullmatch(split):
      raise DataError(f"split name {split!r} must be letters, digits and underscores")
    self.split = split
    self.directory = dataset_dir(data_dir)
    self._overwrite = overwrite
    existing = _existing_splits(self.directory)
    if split in existing and not overwrite:
      raise DataError(
          f"split {split!r} already exists in {data_dir} "
          f"({existing[split].num_examples} records); pass overwrite=True "
          "(--overwrite) to replace it"
      )
    self.directory.parent.mkdir(parents=True, exist_ok=True)
    self._staging = Path(tempfile.mkdtemp(prefix=f"incomplete.{split}.", dir=self.directory.parent))
    self._info = _dataset_info(self._staging)
    self._writer = tfds.core.SequentialWriter(
        self._info, max_examples_per_shard=_EXAMPLES_PER_SHARD, file_format=FILE_FORMAT
    )
    self._writer.initialize_splits([split])
    self._pending: list[dict[str, str]] = []
    self._ids: set[str] = set()
    self.num_records = 0

  def add(self, record: Record) -> None:
    record.validate()
    if record.id in self._ids:
      raise MalformedRecord(f"duplicate id {record.id!r} in split {self.split!r}")
    self._ids.add(record.id)
    self._pending.append(record.to_dict())
    self.num_records += 1
    if len(self._pending) >= _WRITE_CHUNK:
      self._flush()

  def _flush(self) -> None:
    if self._pending:
      self._writer.add_examples({self.split: self._pending})
      self._pending = []

  def commit(self) -> Path:
    """Moves the finished split into DATA_DIR (replacing an old one when overwriting); returns
    the dataset directory."""
    if not self.num_records:
      self.discard()
      raise DataError(f"no records to write for split {self.split!r}")
    self._flush()
    self._writer.close_splits([self.split])
    staged = self._info.splits[self.split]
    self.directory.mkdir(parents=True, exist_ok=True)
    splits = _existing_splits(self.directory)  # re-read: another split may have been added
    if self.split in splits:
      if not self._overwrite:
        raise DataError(f"split {self.split!r} appeared in {self.directory} while writing")
      for path in splits.pop(self.split).filepaths:
        Path(path).unlink(missing_ok=True)
    for path in staged.filepaths:
      shutil.move(os.fspath(path), self.directory / Path(path).name)
    splits[self.split] = dataclasses.replace(
        staged, filename_template=staged.filename_template.replace(data_dir=self.directory)
    )
    info = _dataset_info(self.directory)
    info.set_file_format(FILE_FORMAT)
    info.set_splits(tfds.core.SplitDict(list(splits.values())))
    info.write_to_directory(self.directory)
    shutil.rmtree(self._staging, ignore_errors=True)
    return self.directory

  def discard(self) -> None:
    shutil.rmtree(self._staging, ignore_errors=True)

  def __enter__(self) -> "SplitWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.commit()
    else:
      self.discard()


def write_records(
    records: Iterable[Record | Mapping],
    data_dir: str | os.PathLike,
    split: str,
    *,
    overwrite: bool = False,
) -> int:
  """Stores `records` as split `split` of DATA_DIR; returns how many were written.

  Records are `Record`s or mappings with the record fields, whose `messages` may be a list of
  {"role", "content"} dicts (as `prime_jax.tasks` makes them). Any invalid record is an error
  (`MalformedRecord` naming the record), and nothing is written.
  """
  with SplitWriter(data_dir, split, overwrite=overwrite) as writer:
    for record in records:
      if not isinstance(record, Record):
        record = Record.from_chat(**record)
      try:
        writer.add(record)
      except MalformedRecord as e:
        raise MalformedRecord(f"record {record.id!r}: {e}") from None
  return writer.num_records


def split_names(data_dir: str | os.PathLike) -> list[str]:
  """The splits prepared in DATA_DIR (empty when there is no dataset there)."""
  return sorted(_existing_splits(dataset_dir(data_dir)))


class RecordSource(Sequence[Record]):
  """Random access to one process's records of a split: `len(source)`, `source[i]`.

  Holds the tfds data source of the whole split, the positions of this process's slice and the
  split's shards (file, number of records), to name the file and row of a bad record.
  """

  def __init__(
      self, data_source, positions: range, *, split: str, shards: Sequence[tuple[str, int]] = ()
  ):
    self._source = data_source
    self._positions = positions
    self._shards = list(shards)
    self.split = split

  def __len__(self) -> int:
    return len(self._positions)

  def __getitem__(self, index: int) -> Record:
    return self._read([self._positions[index]])[0]  # IndexError past the end ends iteration

  def __getitems__(self, indices: Sequence[int]) -> list[Record]:
    """Several records in one batched read (several times faster than one at a time)."""
    return self._read([self._positions[i] for i in indices])

  def _read(self, positions: list[int]) -> list[Record]:
    try:
      examples = self._source.__getitems__(positions)
    except Exception as e:  # pylint: disable=broad-except
      if len(positions) == 1:
        raise DataError(f"{self.where(positions[0])} cannot be read: {io_errors.describe(e)}")
      return [self._read([p])[0] for p in positions]  # one at a time: find the bad row
    return [self._record(p, example) for p, example in zip(positions, examples)]

  def _record(self, position: int, example: Mapping[str, bytes]) -> Record:
    try:
      return Record(**{name: _text(example, name) for name in FIELDS}).validate()
    except MalformedRecord as e:
      raise DataError(f"{self.where(position)}: {e}") from None

  def where(self, position: int) -> str:
    """'FILE row R (record P of split S)' for a position in the split."""
    row = position
    for path, length in self._shards:
      if row < length:
        return f"{path} row {row} (record {position} of split {self.split!r})"
      row -= length
    return f"record {position} of split {self.split!r}"

  def __repr__(self) -> str:
    return (
        f"RecordSource(split={self.split!r}, records={len(self)}, " f"positions={self._positions})"
    )


def _text(example: Mapping[str, bytes], name: str) -> str:
  value = example.get(name) if isinstance(example, Mapping) else None
  if value is None:
    raise MalformedRecord(f"field {name} is missing")
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError as e:
    raise MalformedRecord(f"{name} is not valid UTF-8 (byte {e.start})") from None


def _shard_problem(paths: Sequence[str]) -> str:
  """The first shard that array_record cannot open, and why."""
  from array_record.python import array_record_module

  for path in paths:
    try:
      array_record_module.ArrayRecordReader(os.fspath(path)).close()
    except Exception as e:  # pylint: disable=broad-except
      return f"{path}: {io_errors.describe(e)}"
  return "no single shard fails on its own"


def load_split(
    data_dir: str | os.PathLike, split: str, *, process_index: int = 0, process_count: int = 1
) -> RecordSource:
  """This process's records of `split`: positions process_index, process_index + process_count,
  ... of the split (see the module docstring)."""
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index {process_index} must be in [0, process_count=" f"{process_count})"
    )
  directory = dataset_dir(data_dir)
  if not (directory / "dataset_info.json").is_file():
    raise DataError(
        f"no prepared data in {data_dir} (expected {directory}/dataset_info.json); "
        "create it with `python -m prime_jax.data.prepare --input FILES --out "
        f"{data_dir} --split {split}`"
    )
  splits = _existing_splits(directory)
  if split not in splits:
    raise DataError(f"{data_dir} has no split {split!r}; it has {sorted(splits)}")
  shards = [(os.fspath(p), n) for p, n in zip(splits[split].filepaths, splits[split].shard_lengths)]
  try:
    source = tfds.builder_from_directory(str(directory)).as_data_source(split=split)
    total = len(source)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f"split {split!r} of {data_dir} cannot be opened ({io_errors.describe(e)}): "
        f"{_shard_problem([path for path, _ in shards])}"
    ) from None
  if total < process_count:
    raise DataError(
        f"split {split!r} of {data_dir} has {total} records, fewer than the "
        f"{process_count} processes reading it"
    )
  return RecordSource(
      source, range(process_index, total, process_count), split=split, shards=shards
  )
