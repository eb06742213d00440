"""Judge-style output comparison (runs in the grader, never inside the sandbox).

stdout: whitespace-separated tokens must agree one for one; two tokens that are both integers
must be equal, and tokens that are both numbers with at least one non-integer agree within
`FLOAT_TOL` (absolute or relative), as competitive-programming checkers do.
Call-based: the returned JSON value must equal the expected value (floats within tolerance,
tuples as lists), or equal its only element when the expected value is a one-element wrapper
list, as in APPS/PRIME ground truths.
"""

from __future__ import annotations

import json
import math
import re

FLOAT_TOL = 1e-6
_INT = re.compile(r"[+-]?\d+")


def _number(token: str) -> float | None:
  try:
    value = float(token)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def _floats_close(a: float, b: float) -> bool:
  return abs(a - b) <= FLOAT_TOL * max(1.0, abs(a), abs(b))


def tokens_match(actual: str, expected: str) -> bool:
  if actual == expected:
    return True
  if _INT.fullmatch(actual) and _INT.fullmatch(expected):
    return int(actual) == int(expected)
  a, e = _number(actual), _number(expected)
  return a is not None and e is not None and _floats_close(a, e)


def stdout_matches(actual: str, expected: str) -> bool:
  """Whether program output `actual` is accepted for expected output `expected`."""
  got, want = actual.split(), expected.split()
  return len(got) == len(want) and all(tokens_match(g, w) for g, w in zip(got, want, strict=True))


def values_equal(actual, expected) -> bool:
  """Structural equality of JSON values with float tolerance (bool is not a number here)."""
  if isinstance(actual, bool) or isinstance(expected, bool):
    return actual is expected
  if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
    if isinstance(actual, int) and isinstance(expected, int):
      return actual == expected
    return _floats_close(float(actual), float(expected))
  if isinstance(actual, list) and isinstance(expected, list):
    return len(actual) == len(expected) and all(
        values_equal(a, e) for a, e in zip(actual, expected, strict=True)
    )
  if isinstance(actual, dict) and isinstance(expected, dict):
    return actual.keys() == expected.keys() and all(
        values_equal(actual[k], expected[k]) for k in actual
    )
  return type(actual) is type(expected) and actual == expected


def returned_matches(returned_json: str | None, expected) -> bool:
  """Whether a call-based test's returned value (JSON text) is accepted."""
  if returned_json is None or returned_json == "":
    return False
  try:
    actual = json.loads(returned_json)
  except (ValueError, RecursionError):
    return False
  try:
    if values_equal(actual, expected):
      return True
    return isinstance(expected, list) and len(expected) == 1 and values_equal(actual, expected[0])
  except RecursionError:
    return False
