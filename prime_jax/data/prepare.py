"""Turns local data files into a prepared split: `python -m prime_jax.data.prepare`.

    python -m prime_jax.data.prepare --input train.parquet --out DATA_DIR --split train
    python -m prime_jax.data.prepare --input math500.jsonl aime.jsonl --out EVAL_DIR \\
        --split test --format problems

Reads every input (formats: prime_jax.data.formats), converts each row into a record, and writes
the split into DATA_DIR as a tensorflow-datasets dataset (prime_jax.data.storage). A malformed
row (missing field, bad JSON, not UTF-8, empty ground truth, bad test cases, duplicate id) is
skipped and counted, and the first few are reported with their file and line. If more than
`--max_bad_fraction` of a file's rows are malformed, that is an error naming the file, and
nothing is written.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

from prime_jax.data import formats
from prime_jax.data.records import MalformedRecord
from prime_jax.data.storage import DataError, SplitWriter

MAX_REPORTED = 5  # malformed rows reported per file


class PrepareError(ValueError):
  """A file with too many malformed rows (or none at all)."""


@dataclasses.dataclass
class FileReport:
  """What happened to one input file's rows."""

  path: str
  format: Optional[str] = None
  rows: int = 0
  kept: int = 0
  skipped: int = 0
  first_skipped: list[str] = dataclasses.field(default_factory=list)  # "where: reason"

  def skip(self, where: str, reason: str) -> None:
    self.skipped += 1
    if len(self.first_skipped) < MAX_REPORTED:
      self.first_skipped.append(f"{where}: {reason}")

  def summary(self) -> str:
    lines = [
        f"{self.path} ({self.format}): {self.rows} rows, {self.kept} kept, "
        f"{self.skipped} malformed skipped"
    ]
    lines += [f"  {line}" for line in self.first_skipped]
    if self.skipped > len(self.first_skipped):
      lines.append(f"  ... and {self.skipped - len(self.first_skipped)} more")
    return "\n".join(lines)


@dataclasses.dataclass
class PrepareReport:
  dataset_dir: str
  split: str
  files: list[FileReport]
  abilities: dict[str, int]  # records written per ability

  @property
  def num_records(self) -> int:
    return sum(self.abilities.values())

  def summary(self) -> str:
    counts = ", ".join(f"{n} {a}" for a, n in sorted(self.abilities.items()))
    return "\n".join(
        [f.summary() for f in self.files]
        + [
            f"wrote split {self.split!r}: {self.num_records} records ({counts}) to {self.dataset_dir}"
        ]
    )


def prepare(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    split: str = "train",
    fmt: str = "auto",
    max_bad_fraction: float = 0.01,
    data_source: Optional[str] = None,
    overwrite: bool = False,
) -> PrepareReport:
  """Converts `inputs` into split `split` of the prepared dataset in `out` (see module doc)."""
  if fmt != "auto" and fmt not in formats.FORMATS:
    raise formats.InputError(f"unknown format {fmt!r}; expected auto or one of {formats.FORMATS}")
  if not 0.0 <= max_bad_fraction <= 1.0:
    raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
  if not inputs:
    raise formats.InputError("no input files given")
  paths = [formats.check_input(p) for p in inputs]
  names = collections.Counter(p.name for p in paths)
  if clashes := sorted(n for n, c in names.items() if c > 1):
    # Row ids default to "<file name>:<line>", so two files of one name would collide.
    raise formats.InputError(
        f"several inputs are named {clashes}; rename them so that row ids " "stay unique"
    )
  reports = []
  abilities = collections.Counter()
  with SplitWriter(out, split, overwrite=overwrite) as writer:
    for path in paths:
      report = _write_file(path, writer, fmt, data_source or path.stem, abilities)
      reports.append(report)
      if report.rows == 0:
        raise PrepareError(f"{path} holds no rows")
      if report.skipped > max_bad_fraction * report.rows:
        raise PrepareError(
            f"{path}: {report.skipped} of {report.rows} rows are malformed "
            f"({report.skipped / report.rows:.1%}, more than max_bad_fraction="
            f"{max_bad_fraction:g}); nothing was written.\n{report.summary()}"
        )
  return PrepareReport(str(writer.directory), split, reports, dict(abilities))


def _write_file(
    path: Path, writer: SplitWriter, fmt: str, data_source: str, abilities: collections.Counter
) -> FileReport:
  report = FileReport(str(path), None if fmt == "auto" else fmt)
  convert = None if fmt == "auto" else formats.converter(fmt, data_source)
  for row in formats.read_rows(path):
    report.rows += 1
    if row.fields is None:
      report.skip(row.where, row.error)
      continue
    if convert is None:
      report.format = formats.detect_format(row.fields)
      if report.format is None:
        raise formats.InputError(
            f"cannot tell the format of {path} from {row.where} (fields {sorted(row.fields)}); "
            f"pass --format ({', '.join(formats.FORMATS)})"
        )
      convert = formats.converter(report.format, data_source)
    try:
      record = convert(row)
      writer.add(record)
    except MalformedRecord as e:
      report.skip(row.where, str(e))
      continue
    report.kept += 1
    abilities[record.ability] += 1
  return report


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m prime_jax.data.prepare",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "--input",
      nargs="+",
      required=True,
      metavar="FILE",
      help=".jsonl or .parquet files, written in the order given",
  )
  parser.add_argument(
      "--out",
      required=True,
      metavar="DATA_DIR",
      help="data directory (the dataset goes to DATA_DIR/prime_records/1.0.0)",
  )
  parser.add_argument("--split", default="train", help="split name (train, validation, test...)")
  parser.add_argument(
      "--format",
      default="auto",
      choices=("auto",) + formats.FORMATS,
      help="row layout (see prime_jax/data/formats.py); auto: per file",
  )
  parser.add_argument(
      "--max_bad_fraction",
      type=float,
      default=0.01,
      help="largest fraction of malformed rows a file may have",
  )
  parser.add_argument(
      "--data_source",
      default=None,
      help="data_source of problems/code rows (default: each file's stem)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing split")
  args = parser.parse_args(argv)
  try:
    report = prepare(
        args.input,
        args.out,
        split=args.split,
        fmt=args.format,
        max_bad_fraction=args.max_bad_fraction,
        data_source=args.data_source,
        overwrite=args.overwrite,
    )
  except (formats.InputError, PrepareError, DataError) as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  return 0


if __name__ == "__main__":
  sys.exit(main())
