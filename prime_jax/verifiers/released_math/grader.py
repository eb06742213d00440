"""`released` math grading: the decision that labelled Eurus-2-7B-PRIME's training data.

Extraction (`extraction.released_answer`), then PRM800K's test (`prm800k.prm800k_equal`), then
the tolerant ToRA-style test (`tolerant.tolerant_equal`), once with math.pi and once with 3.14
when either side contains `\\pi`. An exception in the tolerant test scores 0 (released). The
behaviours, quirks and bugs are listed in docs/math_grading.md.
"""

from __future__ import annotations

import math

from prime_jax.verifiers.math_grader import check_text_pair
from prime_jax.verifiers.registry import ItemResult
from prime_jax.verifiers.released_math.extraction import released_answer
from prime_jax.verifiers.released_math.prm800k import prm800k_equal
from prime_jax.verifiers.released_math.tolerant import tolerant_equal

PI_VALUES = (math.pi, 3.14)


def released_match(answer: str, ground_truth: str) -> str | None:
  """Which released test accepts `answer`: 'prm800k', 'tolerant', or None.

  Raises what the tolerant test raises; `score_released_math` scores that 0.
  """
  if prm800k_equal(answer, ground_truth):
    return "prm800k"
  pis = PI_VALUES if "\\pi" in answer or "\\pi" in ground_truth else PI_VALUES[:1]
  # A list, not a generator: both π values are tried, and an exception in either is a 0.
  return "tolerant" if any([tolerant_equal(answer, ground_truth, pi) for pi in pis]) else None


def score_released_math(
    response: str, ground_truth: str, timeout_s: float | None = None
) -> ItemResult:
  """1.0 if the released PRIME grader accepts `response` for `ground_truth`, else 0.0.

  timeout_s is enforced by the caller (worker alarm / kill), as for `strict`.
  """
  del timeout_s
  check_text_pair(response, ground_truth)
  answer = released_answer(response)
  try:
    how = released_match(answer, ground_truth)
  except Exception:  # released: `except: is_correct = False` around the tolerant test
    return ItemResult(0.0, {"grader_exception": 1})
  if how is not None:
    return ItemResult(1.0, {f"match_{how}": 1})
  return ItemResult(0.0, {"no_answer" if not answer else "wrong": 1})
