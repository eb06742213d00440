"""`prime_jax.data.prepare`: every input format end to end through tfds, malformed rows, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import tensorflow_datasets as tfds

from data_test_rows import (CODE_TESTS, eurus_row, old_eurus_row, write_jsonl, write_parquet)
from prime_jax.data import Record, load_split, split_names
from prime_jax.data.formats import InputError
from prime_jax.data.prepare import PrepareError, main, prepare
from prime_jax.data.prompts import EURUS_SYSTEM_PROMPT
from prime_jax.data.storage import DataError, dataset_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def _records(data_dir, split):
  return list(load_split(data_dir, split))


def _expected_eurus(row, record_id):
  return Record(
      id=record_id,
      data_source=row["data_source"],
      ability=row["ability"],
      messages=json.dumps(
          [{"role": m["role"], "content": m["content"]} for m in row["prompt"]], ensure_ascii=False
      ),
      ground_truth=row["reward_model"]["ground_truth"],
  )


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_eurus_current_schema_round_trips(tmp_path, suffix):
  rows = [eurus_row(0), eurus_row(1, "code"), eurus_row(2)]
  path = tmp_path / f"train.{suffix}"
  (write_parquet if suffix == "parquet" else write_jsonl)(path, rows)
  report = prepare([path], tmp_path / "out", split="train")
  assert (report.num_records, report.abilities) == (3, {"math": 2, "code": 1})
  assert report.files[0].format == "eurus" and report.files[0].skipped == 0
  expected = [_expected_eurus(row, f"train.{suffix}:{i + 1}") for i, row in enumerate(rows)]
  assert _records(tmp_path / "out", "train") == expected
  # The chat keeps its system prompt and suffix exactly; code tests survive as JSON.
  assert expected[0].chat()[0]["content"] == EURUS_SYSTEM_PROMPT
  assert json.loads(_records(tmp_path / "out", "train")[1].ground_truth) == CODE_TESTS


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_eurus_old_schema(tmp_path, suffix):
  rows = [old_eurus_row(0), old_eurus_row(1, "Coding")]
  path = tmp_path / f"old.{suffix}"
  (write_parquet if suffix == "parquet" else write_jsonl)(path, rows)
  prepare([path], tmp_path / "out", split="validation")
  got = _records(tmp_path / "out", "validation")
  assert [r.id for r in got] == ["old-Math-0", "old-Coding-1"]
  assert [r.ability for r in got] == ["math", "code"]
  assert [r.data_source for r in got] == ["amc", "apps"]
  assert got[0].chat() == [{"role": "user", "content": rows[0]["instruction"]}]
  assert got[0].ground_truth == "0" and json.loads(got[1].ground_truth) == CODE_TESTS


def test_read_through_public_tfds_api(tmp_path):
  path = write_jsonl(tmp_path / "a.jsonl", [eurus_row(0), eurus_row(1)])
  prepare([path], tmp_path / "out", split="train")
  source = tfds.data_source("prime_records", data_dir=str(tmp_path / "out"), split="train")
  assert len(source) == 2 and source[1]["id"] == b"a.jsonl:2"
  builder = tfds.builder_from_directory(str(dataset_dir(tmp_path / "out")))
  assert builder.info.splits["train"].num_examples == 2


def test_problem_sets_and_documented_key_variants(tmp_path):
  math500 = write_jsonl(
      tmp_path / "math500.jsonl",
      [
          {"problem": "What is $1+1$?", "answer": "2", "unique_id": "test/algebra/1.json"},
          {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}"},
      ],
  )
  aime = write_jsonl(tmp_path / "aime.jsonl", [{"id": 60, "problem": "Find N.", "answer": 204}])
  olympiad = write_jsonl(
      tmp_path / "olympiadbench.jsonl", [{"question": "Find $k$.", "final_answer": ["$3$"]}]
  )
  minerva = write_jsonl(
      tmp_path / "minerva.jsonl",
      [
          {
              "problem": "Mass?",
              "solution": "So $m=\\boxed{\\frac{1}{2}}$ kg, not \\boxed{1}... "
              "final: \\boxed{3 \\times 10^{5}}",
          }
      ],
  )
  report = prepare(
      [math500, aime, olympiad, minerva], tmp_path / "out", split="test", fmt="problems"
  )
  assert report.num_records == 5
  got = _records(tmp_path / "out", "test")
  assert [(r.id, r.data_source, r.ground_truth) for r in got] == [
      ("test/algebra/1.json", "math500", "2"),
      ("math500.jsonl:2", "math500", "\\frac{1}{2}"),
      ("60", "aime", "204"),
      ("olympiadbench.jsonl:1", "olympiadbench", "$3$"),
      ("minerva.jsonl:1", "minerva", "3 \\times 10^{5}"),
  ]
  assert all(r.ability == "math" for r in got)
  assert got[0].chat() == [{"role": "user", "content": "What is $1+1$?"}]


def test_code_set_with_starter_code_and_auto_format(tmp_path):
  tests = {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}
  path = write_jsonl(
      tmp_path / "apps.jsonl",
      [
          {
              "problem_id": 7,
              "question": "Add two numbers.",
              "input_output": json.dumps(tests),
              "starter_code": "def add(a, b):\n",
          },
          {"question": "Echo.", "input_output": {"inputs": ["x\n"], "outputs": ["x\n"]}},
      ],
  )
  report = prepare([path], tmp_path / "out", split="test", data_source="apps")
  assert report.files[0].format == "code"
  first, second = _records(tmp_path / "out", "test")
  assert (first.id, first.ability, first.data_source) == ("7", "code", "apps")
  assert first.chat()[0]["content"] == "Add two numbers.\n\n```python\ndef add(a, b):\n```"
  assert json.loads(first.ground_truth) == tests
  assert json.loads(second.ground_truth) == {"inputs": ["x\n"], "outputs": ["x\n"]}


def _mixed_good_and_bad_jsonl(path):
  no_truth = eurus_row(5)
  no_truth["reward_model"]["ground_truth"] = "  "
  missing = eurus_row(6)
  del missing["ability"]
  bad_tests = eurus_row(7, "code")
  bad_tests["reward_model"]["ground_truth"] = '{"inputs": ["1"], "outputs": []}'
  return write_jsonl(
      path,
      [
          eurus_row(0),  # line 1
          b'{"data_source": "x", "prompt": [',  # line 2: bad JSON
          b'{"data_source": "\xff\xfe"}',  # line 3: not UTF-8
          no_truth,  # line 4: empty ground truth
          missing,  # line 5: missing field
          bad_tests,  # line 6: code tests that do not pair up
          eurus_row(1),  # line 7
          b"",  # blank: ignored, not a row
          eurus_row(1),  # line 9: a repeat; ids are lines
      ],
  )


def test_malformed_rows_are_skipped_counted_and_reported_by_line(tmp_path):
  path = _mixed_good_and_bad_jsonl(tmp_path / "mixed.jsonl")
  report = prepare([path], tmp_path / "out", max_bad_fraction=0.7)
  (file_report,) = report.files
  assert (file_report.rows, file_report.kept, file_report.skipped) == (8, 3, 5)
  reported = file_report.first_skipped
  assert [line.split(": ", 1)[0] for line in reported] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
  assert "bad JSON" in reported[0] and "UTF-8" in reported[1]
  assert "ground_truth is empty" in reported[2] and "'ability'" in reported[3]
  assert "1 inputs and 0 outputs" in reported[4]
  assert [r.id for r in _records(tmp_path / "out", "train")] == [
      "mixed.jsonl:1",
      "mixed.jsonl:7",
      "mixed.jsonl:9",
  ]
  assert f"{path}:2: bad JSON (Expecting value at column 33)" in report.summary()


def test_reports_only_the_first_few(tmp_path):
  rows = [eurus_row(i) for i in range(3)] + [b"not json"] * 8
  path = write_jsonl(tmp_path / "many_bad.jsonl", rows)
  report = prepare([path], tmp_path / "out", max_bad_fraction=0.9)
  assert report.files[0].skipped == 8 and len(report.files[0].first_skipped) == 5
  assert "... and 3 more" in report.summary()


def test_duplicate_ids_are_malformed_rows(tmp_path):
  path = write_jsonl(tmp_path / "old.jsonl", [old_eurus_row(0), old_eurus_row(0), old_eurus_row(1)])
  report = prepare([path], tmp_path / "out", max_bad_fraction=0.5)
  assert report.files[0].skipped == 1
  assert "duplicate id 'old-Math-0'" in report.files[0].first_skipped[0]


def test_parquet_non_utf8_binary_column(tmp_path):
  schema = pa.schema([("problem", pa.binary()), ("answer", pa.string())])
  path = write_parquet(
      tmp_path / "p.parquet",
      [{"problem": b"1+1?", "answer": "2"}, {"problem": b"\xff", "answer": "3"}],
      schema,
  )
  report = prepare([path], tmp_path / "out", max_bad_fraction=0.5)
  assert report.files[0].first_skipped == [
      f"{path}:row 2: not valid UTF-8 (invalid start byte at byte 0)"
  ]
  assert [r.chat()[0]["content"] for r in _records(tmp_path / "out", "train")] == ["1+1?"]


def test_too_many_bad_rows_is_an_error_naming_the_file_and_writes_nothing(tmp_path):
  good = write_jsonl(tmp_path / "good.jsonl", [eurus_row(i) for i in range(3)])
  mixed = _mixed_good_and_bad_jsonl(tmp_path / "mixed.jsonl")
  with pytest.raises(PrepareError, match=r"mixed\.jsonl: 5 of 8 rows are malformed") as e:
    prepare([good, mixed], tmp_path / "out")  # default max_bad_fraction 0.01
  assert f"{mixed}:2: bad JSON" in str(e.value)
  assert split_names(tmp_path / "out") == []
  leftovers = list((tmp_path / "out").rglob("*array_record*"))
  assert leftovers == []


def test_failed_prepare_leaves_existing_splits_untouched(tmp_path):
  out = tmp_path / "out"
  prepare([write_jsonl(tmp_path / "v.jsonl", [eurus_row(0)])], out, split="validation")
  with pytest.raises(PrepareError):
    prepare([write_jsonl(tmp_path / "t.jsonl", [b"{", eurus_row(1)])], out, split="train")
  assert split_names(out) == ["validation"] and len(load_split(out, "validation")) == 1


def test_existing_split_needs_overwrite(tmp_path):
  out = tmp_path / "out"
  prepare([write_jsonl(tmp_path / "a.jsonl", [eurus_row(0)])], out)
  with pytest.raises(DataError, match="already exists.*overwrite"):
    prepare([write_jsonl(tmp_path / "b.jsonl", [eurus_row(1), eurus_row(2)])], out)
  prepare([tmp_path / "b.jsonl"], out, overwrite=True)
  assert [r.id for r in _records(out, "train")] == ["b.jsonl:1", "b.jsonl:2"]
  assert len(list(dataset_dir(out).glob("*-train.array_record-*"))) == 1


def test_input_errors(tmp_path):
  good = write_jsonl(tmp_path / "good.jsonl", [eurus_row(0)])
  with pytest.raises(InputError, match=r"missing\.jsonl does not exist"):
    prepare([tmp_path / "missing.jsonl"], tmp_path / "out")
  (tmp_path / "data.csv").write_text("a,b\n")
  with pytest.raises(InputError, match=r"data\.csv: unknown file kind '\.csv'"):
    prepare([tmp_path / "data.csv"], tmp_path / "out")
  with pytest.raises(InputError, match="unknown format 'alpaca'"):
    prepare([good], tmp_path / "out", fmt="alpaca")
  weird = write_jsonl(tmp_path / "weird.jsonl", [{"text": "hello"}])
  with pytest.raises(InputError, match=r"cannot tell the format of .*weird\.jsonl.*'text'"):
    prepare([weird], tmp_path / "out")
  (tmp_path / "sub").mkdir()
  twin = write_jsonl(tmp_path / "sub" / "good.jsonl", [eurus_row(1)])
  with pytest.raises(InputError, match="several inputs are named"):
    prepare([good, twin], tmp_path / "out")
  empty = write_jsonl(tmp_path / "empty.jsonl", [])
  with pytest.raises(PrepareError, match="holds no rows"):
    prepare([empty], tmp_path / "out")
  assert split_names(tmp_path / "out") == []


def test_cli(tmp_path, capsys):
  path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "1+1?", "answer": "2"}, b"{oops"])
  out = tmp_path / "out"
  assert (
      main(
          ["--input", str(path), "--out", str(out), "--split", "test", "--max_bad_fraction", "0.5"]
      )
      == 0
  )
  stdout = capsys.readouterr().out
  assert f"{path}:2: bad JSON" in stdout and "wrote split 'test': 1 records (1 math)" in stdout
  assert main(["--input", str(path), "--out", str(out), "--split", "test", "--overwrite"]) == 1
  assert "m.jsonl: 1 of 2 rows are malformed" in capsys.readouterr().err


def test_module_entry_point_runs_without_tensorflow(tmp_path):
  """`python -m prime_jax.data.prepare` end to end in a fresh interpreter, then reading the split
  back there: TensorFlow is never imported (tfds only uses it when it is already loaded)."""
  path = write_jsonl(tmp_path / "t.jsonl", [eurus_row(0), eurus_row(1, "code")])
  script = f"""
import runpy, sys
sys.argv = ["prepare", "--input", {str(path)!r}, "--out", {str(tmp_path / "out")!r}]
try:
  runpy.run_module("prime_jax.data.prepare", run_name="__main__")
except SystemExit as e:
  assert e.code == 0, e.code
from prime_jax.data import load_split
print("read", [r.ability for r in load_split({str(tmp_path / "out")!r}, "train")])
assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
"""
  result = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
  )
  assert result.returncode == 0, result.stderr
  assert "wrote split 'train': 2 records (1 code, 1 math)" in result.stdout
  assert "read ['math', 'code']" in result.stdout
