"""The released grader's first test: PRM800K's `grade_answer` (docs/math_grading.md).

Equal under the MATH normaliser, or under PRM800K's; else element by element (tuples and
intervals split on commas): two plain fractions must be written identically, an integer on one
side only fails, and otherwise sympy must simplify the difference to 0 (no tolerance). sympy is
only tried on short expressions: at most two distinct letters, no `^{`/`^(`, no exponent of two
digits or more.
"""

from __future__ import annotations

import re

import sympy
from sympy.parsing import sympy_parser

from prime_jax.verifiers.released_math.guarded import guarded_parse
from prime_jax.verifiers.released_math.normalization import (
    hendrycks_normalize,
    prm800k_normalize,
    str_is_int,
    strip_thousands_commas,
)

_BRACKETS = "()[]"
_PLAIN_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_HEAVY_SUBSTRINGS = ("^{", "^(")
_HEAVY_POWERS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_IMPLICIT = sympy_parser.standard_transformations + (
    sympy_parser.implicit_multiplication_application,
)


def split_elements(expr: str) -> list[str]:
  """A bracketed, unnested `(a, b, ...)`/`[a, b)` split into stripped elements, else [expr]."""
  expr = strip_thousands_commas(expr)
  if not expr:
    return []
  inner = expr[1:-1]
  if (
      len(expr) > 2
      and expr[0] in _BRACKETS
      and expr[-1] in _BRACKETS
      and not any(ch in inner for ch in _BRACKETS)
  ):
    return [element.strip() for element in inner.split(",")]
  return [expr]


def _sympy_may_try(expr: str) -> bool:
  letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
  if len(letters) > 2:
    return False
  if any(s in expr for s in _HEAVY_SUBSTRINGS):
    return False
  return not any(p.search(expr) for p in _HEAVY_POWERS)


def _difference_simplifies_to_zero(truth: str, given: str) -> bool:
  difference = f"({truth})-({given})"
  if not _sympy_may_try(difference):
    return False
  try:
    return sympy.simplify(guarded_parse(difference.replace("^", "**"), _IMPLICIT)) == 0
  except Exception:  # released: any parse or simplify failure is "not equal"
    return False


def _elements_equal(truth: str, given: str) -> bool:
  if _PLAIN_FRACTION.search(truth) and _PLAIN_FRACTION.search(given):
    return truth == given  # unreduced fractions must not pass
  if str_is_int(truth) != str_is_int(given):
    return False
  return _difference_simplifies_to_zero(truth, given)


def prm800k_equal(given: str, truth: str) -> bool:
  """Whether the released grader's first test accepts `given` for the ground truth `truth`."""
  if hendrycks_normalize(truth) == hendrycks_normalize(given):
    return True
  truth_n, given_n = prm800k_normalize(truth), prm800k_normalize(given)
  if truth_n == given_n:
    return True
  if not given_n:
    return False
  truth_parts, given_parts = split_elements(truth_n), split_elements(given_n)
  if len(truth_parts) > 1 and (truth_n[0] != given_n[0] or truth_n[-1] != given_n[-1]):
    return False  # a tuple or interval must keep its brackets
  if len(truth_parts) != len(given_parts):
    return False
  return all(_elements_equal(t, g) for t, g in zip(truth_parts, given_parts))
