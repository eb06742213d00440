"""Both math grading modes against math_grading_corpus.jsonl (labels written per mode from the
documented behaviour; build_math_grading_corpus.py says why for each template)."""

import collections
import json
import os

import pytest

from build_math_grading_corpus import OUT as CORPUS_PATH
from build_math_grading_corpus import build
from prime_jax.verifiers import grade_with_stats

CATEGORIES = {
    "fractions",
    "decimals",
    "percents",
    "scientific",
    "near_integers",
    "pi_roots",
    "intervals",
    "tuples",
    "sets",
    "matrices",
    "latex_spacing",
    "degrees",
    "word_units",
    "equations",
    "multiple_choice",
    "text",
    "unboxed",
    "empty_box",
    "several_boxes",
    "long",
    "truncated",
    "near_misses",
}


def load_corpus():
  with open(CORPUS_PATH, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_corpus_file_is_what_the_builder_writes_and_covers_the_issue_categories():
  rows = load_corpus()
  assert rows == build()
  assert len(rows) >= 400
  assert {r["category"] for r in rows} == CATEGORIES
  # The two modes must disagree somewhere in both directions, or the corpus tests nothing.
  assert any(r["strict"] > r["released"] for r in rows)
  assert any(r["strict"] < r["released"] for r in rows)


@pytest.mark.parametrize("mode", ["strict", "released"])
def test_mode_agrees_with_its_labels(mode, pool):
  rows = load_corpus()
  scores, stats = grade_with_stats(
      "math",
      [r["response"] for r in rows],
      [r["ground_truth"] for r in rows],
      pool=pool,
      mode=mode,
  )
  wrong = collections.defaultdict(list)
  for row, score, status in zip(rows, scores, stats.statuses, strict=True):
    if score != row[mode] or status != "ok":
      wrong[row["category"]].append((row["why"], row["response"][-60:], row["ground_truth"]))
  assert dict(wrong) == {}
