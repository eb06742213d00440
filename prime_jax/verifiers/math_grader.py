"""Math outcome grading (docs/math_grading.md): 1 iff the response's final answer equals the ground truth.

Decision order: normalised strings equal (words case-insensitively: `Yes` = `\\text{YES}`) ->
math-verify symbolic equivalence (tuples, intervals, sets, matrices, equations, radicals, ...)
-> numeric equality with relative tolerance 1e-4.
Integer ground truths must be matched exactly (a tolerance would accept 1000001 for 1000000).
No time limits are set here: sympy can hang, so this runs in a worker process that the pool
interrupts (alarm) and, if need be, kills at the item's time limit.
"""

from __future__ import annotations

import math
import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, grader, parse, parser, verify

from prime_jax.verifiers.math_answer import extract_answer, had_percent, normalize_answer
from prime_jax.verifiers.registry import ItemResult

REL_TOL = 1e-4
_WORD = re.compile(r"[A-Za-z]{2,}")  # a text answer; single letters stay case-sensitive variables
_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
# Timeouts are ours (see module docstring); silence math-verify's one-time warning about that.
grader.TIMEOUT_WARNING_SHOWN = parser.TIMEOUT_WARNING_SHOWN = True


def _parse(normalized: str) -> list:
  return parse(f"${normalized}$", extraction_config=_EXTRACTION, parsing_timeout=None)


def _number(parsed: list) -> sympy.Expr | None:
  """The parsed answer as a closed-form number (no free symbols), else None."""
  for item in parsed:
    if isinstance(item, sympy.Expr) and not isinstance(item, sympy.Symbol):
      try:
        if item.is_number and item.free_symbols == set():
          return item
      except Exception:  # sympy raises assorted errors on exotic objects
        return None
  return None


def _numeric_equal(gold: sympy.Expr, pred: sympy.Expr) -> bool:
  try:
    g = complex(sympy.N(gold, 30))
    p = complex(sympy.N(pred, 30))
  except (TypeError, ValueError, ArithmeticError):
    return False
  if not all(math.isfinite(v) for v in (g.real, g.imag, p.real, p.imag)):
    return False
  if gold.is_Integer:  # integer answers are exact
    return p == g
  return abs(g - p) <= REL_TOL * max(abs(g), abs(p))


def answers_equivalent(pred: str, gold: str) -> str | None:
  """How the extracted answer `pred` matches the ground truth `gold`, or None if it does not.

  Returns 'exact', 'symbolic' or 'numeric'.
  """
  norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
  if not norm_pred:
    return None
  if norm_pred == norm_gold:
    return "exact"
  if _WORD.fullmatch(norm_pred) and norm_pred.casefold() == norm_gold.casefold():
    return "exact"
  parsed_gold, parsed_pred = _parse(norm_gold), _parse(norm_pred)
  if parsed_gold and parsed_pred and verify(parsed_gold, parsed_pred, timeout_seconds=None):
    return "symbolic"
  g, p = _number(parsed_gold), _number(parsed_pred)
  if g is None or p is None:
    return None
  if _numeric_equal(g, p):
    return "numeric"
  if had_percent(gold) != had_percent(pred):  # 50\% may be written 0.5 (or vice versa)
    scaled = (g / 100, p) if had_percent(gold) else (g, p / 100)
    if _numeric_equal(*scaled):
      return "numeric"
  return None


def check_text_pair(response, ground_truth) -> None:
  """A TypeError unless both are str (every math grading mode's input contract)."""
  if not isinstance(response, str) or not isinstance(ground_truth, str):
    raise TypeError(
        f"math grading needs str response and ground truth, got "
        f"{type(response).__name__} and {type(ground_truth).__name__}"
    )


def score_math(response: str, ground_truth: str, timeout_s: float | None = None) -> ItemResult:
  """1.0 if the response's final answer equals `ground_truth` (LaTeX), else 0.0.

  timeout_s is enforced by the caller (worker alarm / kill); accepted for the ability API.
  """
  del timeout_s
  check_text_pair(response, ground_truth)
  answer = extract_answer(response)
  if answer is None:
    return ItemResult(0.0, {"no_answer": 1})
  how = answers_equivalent(answer, ground_truth)
  if how is None:
    return ItemResult(0.0, {"wrong": 1})
  return ItemResult(1.0, {f"match_{how}": 1})
