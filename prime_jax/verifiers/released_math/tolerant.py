"""The released grader's second test: ToRA-style `math_equal` (docs/math_grading.md).

Numbers compare with relative tolerance 1e-4 against the ground truth, the ground truth / 100
and the ground truth * 100 (no percent sign needed; integers too, so 1000001 passes for
1000000); `\\pi` is replaced by a number (the caller tries math.pi and 3.14) and the result
evaluated; a `_` subscript keeps only what precedes it (`1011_2` -> 1011, and `x_1` raises).
Then brackets, element-wise tuples, and sympy: `parse_expr` without `^` -> `**` (so `10^6` is
XOR, 12), `simplify(a - b) == 0`, else numeric closeness.

Exceptions propagate, as in the released code: the caller scores them 0.
"""

from __future__ import annotations

import math
import re
from math import isclose

import sympy

from prime_jax.verifiers.released_math.guarded import (
    guarded_numeric,
    guarded_parse,
    literal_arithmetic,
)

TOLERANCE = 1e-4
MAX_PREDICTION_CHARS = 1000
_INTERVAL_FORMS = (
    (re.compile(r"^Interval\((.*)\)$"), "[{}]"),
    (re.compile(r"^Interval\.Ropen\((.*)\)$"), "[{})"),
    (re.compile(r"^Interval\.Lopen\((.*)\)$"), "({}]"),
    (re.compile(r"^Interval\.open\((.*)\)$"), "({})"),
)


def _pi_as_number(text: str, pi: float):
  """Replaces each `\\pi` by `*pi` after a digit, else `1*pi`, then evaluates the whole text.

  Where the evaluation fails the substituted text is kept (`\\frac{\\pi}{2}` ->
  `\\frac{1*3.14}{2}`), as released.
  """
  at = text.find("\\pi")
  while at != -1:
    factor = f"*{pi}" if at > 0 and text[at - 1].isdigit() else f"1*{pi}"
    text = text[:at] + factor + text[at + 3 :]
    at = text.find("\\pi", at + 1)
  try:
    return literal_arithmetic(text)
  except Exception:  # released: contextlib.suppress(Exception) around eval
    return text


def _prepare(answer: str, pi: float):
  """The released `normalize`: `$5` -> "5", `25%` -> "25", base subscripts, then `\\pi`."""
  if re.match(r"\$\d+(\.\d+)?", answer):
    return answer[1:]
  if re.match(r"^\d+(\.\d+)?%$", answer) or re.match(r"^\d+(\.\d+)?\\%$", answer):
    return answer.replace("\\%", "").replace("%", "")
  if "_" in answer:
    return int(float(answer.split("_")[0]))  # ValueError for `x_1`: the item scores 0
  if "\\pi" in answer:
    return _pi_as_number(answer, pi)
  return answer


def _as_number(value) -> float | None:
  """float of the value's text without thousands commas (`{,}` or `,`), else None."""
  text = str(value)
  try:
    return float(text.replace("{,}", "") if "{,}" in text else text.replace(",", ""))
  except ValueError:
    return None


def _numbers_close(prediction: float, reference: float) -> bool:
  for scaled in (reference / 100, reference, reference * 100):
    try:
      if isclose(scaled, prediction, rel_tol=TOLERANCE):
        return True
    except Exception:  # released: skip a candidate that cannot be compared
      continue
  return False


def _interval_as_brackets(prediction: str) -> str:
  for pattern, brackets in _INTERVAL_FORMS:
    match = pattern.match(prediction)
    if match:
      return brackets.format(match.group(1))
  return prediction


def _same_without_brackets(prediction: str, reference: str) -> bool:
  pred, ref = prediction, reference
  if (pred.startswith("[") and pred.endswith("]") and not ref.startswith("(")) or (
      pred.startswith("(") and pred.endswith(")") and not ref.startswith("[")
  ):
    pred, ref = pred.strip("[]()"), ref.strip("[]()")
  for bracket in "{}()":
    pred, ref = pred.replace(bracket, ""), ref.replace(bracket, "")
  return pred == ref


def _parts_equal(pred_parts: list[str], ref_parts: list[str]) -> bool:
  """Element-wise, every pair evaluated (a list, as released: any exception propagates).

  The recursion uses the default π; `\\pi` has already been substituted by then.
  """
  return len(pred_parts) == len(ref_parts) and all(
      [tolerant_equal(p, r) for p, r in zip(pred_parts, ref_parts)]
  )


def _sympy_value(text: str):
  try:
    return guarded_parse(text)
  except Exception:  # released: parse_expr, then parse_latex (unavailable), else the text
    return text


def _symbolic_equal(prediction: str, reference: str) -> bool:
  a, b = _sympy_value(prediction), _sympy_value(reference)
  try:
    if sympy.simplify(a - b) == 0:
      return True
  except Exception:
    pass
  try:
    return isclose(guarded_numeric(a), guarded_numeric(b), rel_tol=TOLERANCE)
  except Exception:
    return False


def tolerant_equal(prediction: str, reference: str, pi: float = math.pi) -> bool:
  """The released `math_equal(prediction, reference, pi=pi)`; may raise (caller scores 0)."""
  prediction, reference = _prepare(prediction, pi), _prepare(reference, pi)
  if isinstance(prediction, str) and len(prediction) > MAX_PREDICTION_CHARS:
    prediction = prediction[:MAX_PREDICTION_CHARS]
  if isinstance(prediction, str) and isinstance(reference, str):
    if prediction.strip().lower() == reference.strip().lower():
      return True
    if prediction.replace(" ", "") == reference.replace(" ", ""):
      return True
  pred_number, ref_number = _as_number(prediction), _as_number(reference)
  if pred_number is not None and ref_number is not None:
    return _numbers_close(pred_number, ref_number)  # numbers: no other test
  if not prediction and prediction not in (0, False):
    return False
  reference, prediction = str(reference).strip(), str(prediction).strip()
  prediction = _interval_as_brackets(prediction)
  if _same_without_brackets(prediction, reference):
    return True
  if (
      prediction
      and reference
      and prediction[0] in "(["
      and prediction[-1] in ")]"
      and prediction[0] == reference[0]
      and prediction[-1] == reference[-1]
      and _parts_equal(prediction[1:-1].split(","), reference[1:-1].split(","))
  ):
    return True
  if "," in prediction and "," in reference:
    pred_parts = [p.strip() for p in prediction.split(",")]
    ref_parts = [r.strip() for r in reference.split(",")]
    if len(pred_parts) == len(ref_parts):
      return _parts_equal(pred_parts, ref_parts)  # decides, whatever the outcome
  if prediction.startswith("Point") and reference[0] == "(" and reference[-1] == ")":
    pred_parts = prediction[prediction.find("(") + 1 : -1].split(",")
    if _parts_equal(pred_parts, reference[1:-1].split(",")):
      return True
  # (The released matrix comparisons test for "\begin{pmatrix}" written with "\b", a
  # backspace, so they never run; neither do they here.)
  return _symbolic_equal(prediction, reference)
