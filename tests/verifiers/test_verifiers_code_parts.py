"""Code grading pieces that run in the grader: extraction, ground-truth parsing, comparison."""

import json

import pytest

from prime_jax.verifiers.code_compare import returned_matches, stdout_matches
from prime_jax.verifiers.code_grader import preload_modules
from prime_jax.verifiers.code_tests import extract_code, parse_ground_truth


def test_extract_code_takes_the_last_python_block():
  response = "```python\nprint(1)\n```\ntext\n```python\nprint(2)\n```\n```\nnot python\n```"
  assert extract_code(response) == "\nprint(2)\n"
  assert extract_code("```python\nprint(3)") == "\nprint(3)"  # unterminated: to the end
  assert extract_code("```py\nprint(1)\n```") is None
  assert extract_code("```python\n   \n```") is None


def test_parse_stdin_ground_truth_joins_line_lists_and_caps_tests():
  gt = json.dumps(
      {"inputs": ["1\n", ["2", "3"]] + ["x"] * 20, "outputs": ["1", ["a", "b"]] + ["y"] * 20}
  )
  suite = parse_ground_truth(gt, max_tests=10)
  assert suite.fn_name is None
  assert suite.inputs[:2] == ("1\n", "2\n3") and suite.outputs[:2] == ("1", "a\nb")
  assert len(suite.inputs) == len(suite.outputs) == 10


def test_parse_call_based_ground_truth_in_both_formats():
  gt = {
      "fn_name": "twoSum",
      "inputs": ["[2,7,11,15]\n9", [[3, 2, 4], 6]],
      "outputs": ["[0,1]", [[1, 2]]],
  }
  suite = parse_ground_truth(gt, max_tests=10)
  assert suite.inputs == ([[2, 7, 11, 15], 9], [[3, 2, 4], 6])
  assert suite.outputs == ([0, 1], [[1, 2]])


@pytest.mark.parametrize(
    "gt, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"inputs": ["1"]}', "'inputs' and 'outputs'"),
        ('{"inputs": ["1"], "outputs": []}', "1 inputs but 0 outputs"),
        ('{"inputs": [], "outputs": []}', "no test cases"),
        ('{"inputs": [1], "outputs": ["1"]}', "inputs\\[0\\] must be a string"),
        ('{"inputs": ["x"], "outputs": [1], "fn_name": "f"}', "not one JSON value per line"),
        ('{"inputs": [[1]], "outputs": [1], "fn_name": "no such"}', "identifier"),
    ],
)
def test_malformed_ground_truth_is_named(gt, message):
  with pytest.raises(ValueError, match=message):
    parse_ground_truth(gt, max_tests=10)


@pytest.mark.parametrize(
    "actual, expected, ok",
    [
        ("3\n", "3", True),
        ("1 2\n3  4\n\n", "1 2 3 4", True),  # whitespace-insensitive tokens
        ("1 2 3", "1 2", False),
        ("YES", "yes", False),  # case matters
        ("0.3333333", "0.333333333", True),  # float tolerance
        ("0.33", "0.333333333", False),
        ("3.0", "3", True),  # a float token may stand for an integer
        ("1000000000000000000001", "1000000000000000000000", False),  # integers are exact
        ("nan", "nan", True),
        ("nan", "1.0", False),
        ("", "", True),
        ("", "0", False),
    ],
)
def test_stdout_matches(actual, expected, ok):
  assert stdout_matches(actual, expected) is ok


@pytest.mark.parametrize(
    "returned, expected, ok",
    [
        ("[0, 1]", [0, 1], True),
        ("[0, 1]", [[0, 1]], True),  # one-element wrapper list, as in APPS
        ("1", [1, 2], False),  # but not "first element of a longer list"
        ("0.30000000000000004", 0.3, True),
        ("true", 1, False),  # bools are not numbers
        ('{"1": 2}', {"1": 2}, True),
        ('"abc"', "abc", True),
        ("", 1, False),
        (None, 1, False),
        ("[" * 100000 + "]" * 100000, [], False),  # too deep to decode: a failure, not a crash
    ],
)
def test_returned_matches(returned, expected, ok):
  assert returned_matches(returned, expected) is ok


def test_preload_modules_only_allowlisted_imports():
  code = "import numpy as np, antigravity\nfrom collections import deque\nimport os.path\n"
  assert preload_modules(code) == ("collections", "numpy", "os")
  assert preload_modules("def (:") == ()
