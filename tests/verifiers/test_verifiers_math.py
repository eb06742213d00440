"""Math grading: extraction, normalisation and the case suite (math_cases.jsonl, 100% agreement)."""

import json
import os

import pytest

from prime_jax.verifiers import grade_with_stats
from prime_jax.verifiers.math_answer import extract_answer, last_boxed, normalize_answer

CASES_PATH = os.path.join(os.path.dirname(__file__), "math_cases.jsonl")
CASE_TIMEOUT_S = 5.0


def load_cases():
  """Rows of math_cases.jsonl; long responses are stored as [text, repeat] runs."""
  cases = []
  with open(CASES_PATH) as f:
    for line in f:
      row = json.loads(line)
      if "response_parts" in row:
        row["response"] = "".join(text * n for text, n in row.pop("response_parts"))
      cases.append(row)
  return cases


def test_case_file_covers_the_required_forms():
  cases = load_cases()
  assert len(cases) >= 150
  assert {c["expected"] for c in cases} == {0, 1}
  notes = " ".join(c["note"] for c in cases)
  for form in (
      "tuple",
      "interval",
      "set",
      "matrix",
      "equation",
      "fraction",
      "decimal",
      "radical",
      "pi",
      "scientific",
      "percent",
      "degree",
      "unit",
      "thousands",
      "100 KB",
      "nested braces",
      "empty box",
      "sympy-hang",
  ):
    assert form in notes, f"no case covers {form}"


def test_all_cases_agree_and_return_within_their_time_limit(pool):
  cases = load_cases()
  scores, stats = grade_with_stats(
      "math",
      [c["response"] for c in cases],
      [c["ground_truth"] for c in cases],
      timeout_s=CASE_TIMEOUT_S,
      pool=pool,
  )
  disagreements = [
      (c["note"], c["expected"], float(s), status)
      for c, s, status in zip(cases, scores, stats.statuses, strict=True)
      if s != c["expected"] or (status != "ok" and not c["pathological"])
  ]
  assert disagreements == []
  assert max(stats.item_seconds) <= CASE_TIMEOUT_S + pool.hard_grace_s + 0.5
  assert stats.count("ok") >= len(cases) - 3  # only the deliberate hangs may time out


@pytest.mark.parametrize(
    "text, boxed",
    [
        ("a \\boxed{1} b \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not grouping
        ("\\fbox{x} then \\boxed{y}", "y"),
        ("\\boxed{y} then \\fbox{x}", "x"),
        ("\\boxed 7$", "7"),
        ("\\boxed{1", None),  # unbalanced
        ("no box", None),
    ],
)
def test_last_boxed(text, boxed):
  assert last_boxed(text) == boxed


@pytest.mark.parametrize(
    "response, answer",
    [
        ("\\boxed{}", None),
        ("Hence the answer is $\\frac{3}{4}$. Done.", "\\frac{3}{4}"),
        ("The answer is 12.", "12"),
        ("the answer is: 5\nmore text", "5"),
        ("answer is 1. Actually the answer is 2.", "2"),
        ("Some reasoning.\nFinal Answer: 42", "42"),
        ("**Answer:** $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("nothing here", None),
    ],
)
def test_extract_answer(response, answer):
  assert extract_answer(response) == answer


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\frac1{x}", "\\frac{1}{x}"),
        ("90^\\circ", "90"),
        ("25\\%", "25"),
        ("5\\text{ cm}^2", "5"),
        ("\\text{Monday}", "Monday"),
        ("\\$1,000.", "1000"),
        ("1{,}000", "1000"),
        ("x = 3", "3"),
        ("\\sqrt2", "\\sqrt{2}"),
        (".5", "0.5"),
        ("2.50E+3", "2.50\\times10^{3}"),
        ("3.00", "3"),
        ("{{7}}", "7"),
        ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("a\\,b\\;c\\!d", "abcd"),
        ("7 3/4", "\\frac{31}{4}"),  # a mixed number
        ("-2 1/3", "\\frac{-7}{3}"),
        ("73/4", "73/4"),  # no space: a plain fraction
        ("7 5/4", "75/4"),  # not a proper fraction: not read as a mixed number
        ("\\varnothing", "\\emptyset"),
        ("36\\pi \\text{ cm}^2", "36\\pi"),  # a unit after a constant
    ],
)
def test_normalize_answer(raw, normalized):
  assert normalize_answer(raw) == normalized


# The strict grader's fixes of issue 15 (each was graded 0 before).
STRICT_FIXES = [
    ("\\boxed{7 3/4}", "\\frac{31}{4}"),
    ("\\boxed{\\varnothing}", "\\emptyset"),
    ("\\boxed{Yes}", "\\text{YES}"),
    ("Final Answer: 42", "42"),
    ("\\boxed{36\\pi \\text{ cm}^2}", "36\\pi"),
]


def test_strict_fixes(pool):
  responses, truths = zip(*STRICT_FIXES)
  scores, _ = grade_with_stats("math", responses, truths, pool=pool, mode="strict")
  assert scores.tolist() == [1.0] * len(STRICT_FIXES)
  # ...without accepting what is still wrong
  wrong = [
      ("\\boxed{7 1/4}", "\\frac{31}{4}"),
      ("\\boxed{No}", "\\text{YES}"),
      ("\\boxed{x}", "X Y"),
  ]
  scores, _ = grade_with_stats("math", *zip(*wrong), pool=pool, mode="strict")
  assert scores.tolist() == [0.0] * len(wrong)
