"""The released grader's two answer normalisers (docs/math_grading.md, "Normalisation").

`hendrycks_normalize`: the MATH benchmark's string clean-up (its `\\frac`, `\\sqrt` and `a/b`
rewrites, unit and percent removal), tried first. `prm800k_normalize`: PRM800K's normaliser,
which renders LaTeX as plain text with pylatexenc (`\\frac{a+b}{c}` -> "a+b/c": nested or
compound fractions lose their grouping), strips word units anywhere in the text, lower-cases
and reads "7 3/4" as 7+3/4. Both keep the released quirks on purpose; the docs list them.
"""

from __future__ import annotations

import functools
import re

from pylatexenc.latex2text import LatexNodes2Text

_TEXT_WRAPPER = re.compile(r"^\\text\{(?P<text>.+?)\}$")

# ------------------------------------------------------------------------------ Hendrycks (MATH)


def _braced_fracs(s: str) -> str:
  """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{x}` -> `\\frac{1}{x}` (single-character arguments).

  Raises IndexError on a `\\frac` at the very end, which makes the caller give up (released).
  """
  head, *rests = s.split("\\frac")
  out = [head]
  for rest in rests:
    out.append("\\frac")
    if rest[0] == "{":
      out.append(rest)
    elif len(rest) < 2:
      return s  # released: the whole string is returned unchanged
    elif rest[1] != "{":
      out.append("{" + rest[0] + "}{" + rest[1] + "}" + rest[2:])
    else:
      out.append("{" + rest[0] + "}" + rest[1:])
  return "".join(out)


def _slash_as_frac(s: str) -> str:
  """`3/4` -> `\\frac{3}{4}` when both sides are integers written canonically."""
  parts = s.split("/")
  if len(parts) != 2:
    return s
  try:
    a, b = int(parts[0]), int(parts[1])
  except ValueError:
    return s
  return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _units_before_text_space(s: str) -> str:
  """Drops everything from `\\text{ ` (a space first: MATH's unit convention) on.

  Raises ValueError when it occurs twice, which makes the caller give up (released).
  """
  if "\\text{ " not in s:
    return s
  parts = s.split("\\text{ ")
  if len(parts) != 2:
    raise ValueError("more than one '\\text{ '")
  return parts[0]


def _braced_sqrts(s: str) -> str:
  """`\\sqrt3` -> `\\sqrt{3}`; IndexError on a `\\sqrt` at the very end (caller gives up)."""
  head, *rests = s.split("\\sqrt")
  return head + "".join(
      "\\sqrt" + rest if rest[0] == "{" else "\\sqrt{" + rest[0] + "}" + rest[1:] for rest in rests
  )


def _hendrycks_strip(s: str) -> str:
  s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
  s = s.replace("tfrac", "frac").replace("dfrac", "frac")
  s = s.replace("\\left", "").replace("\\right", "")
  s = s.replace("^{\\circ}", "").replace("^\\circ", "")
  s = s.replace("\\$", "")
  s = _units_before_text_space(s)
  s = s.replace("\\%", "")
  s = s.replace(" .", " 0.").replace("{.", "{0.")
  if not s:
    return s
  if s[0] == ".":
    s = "0" + s
  sides = s.split("=")
  if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3" -> " 3": a short left side goes
    s = sides[1]
  s = _braced_sqrts(s)
  s = s.replace(" ", "")
  s = _braced_fracs(s)
  if s == "0.5":
    s = "\\frac{1}{2}"
  return _slash_as_frac(s)


def hendrycks_normalize(answer: str) -> str:
  """MATH's normaliser: on any failure the (stripped, `\\text{}`-unwrapped) input comes back."""
  answer = answer.strip()
  try:
    wrapped = _TEXT_WRAPPER.search(answer)
    if wrapped is not None:
      answer = wrapped.group("text").strip()
    return _hendrycks_strip(answer)
  except Exception:  # released: `except:` around the whole clean-up
    return answer


# ------------------------------------------------------------------------------------ PRM800K

# Removed wherever they occur, also inside words ("Monday" -> "Mon", "perimeter" -> "peri").
_WORD_UNITS = (
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
    "liter",
)
_UNIT_PATTERNS = tuple(re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _WORD_UNITS)
_SCALE_WORDS = (("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12"))
_UNICODE_TO_SYMPY = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))
_PROPER_THOUSANDS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")


@functools.cache
def _latex_to_text() -> LatexNodes2Text:
  return LatexNodes2Text()


def latex_as_text(expr: str) -> str:
  """LaTeX rendered as plain text the way the released grader feeds it to sympy."""
  expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
  expr = expr.replace("\\frac", " \\frac")  # so that "7\frac{3}{4}" reads "7 3/4"
  expr = _latex_to_text().latex_to_text(expr)
  for symbol, name in _UNICODE_TO_SYMPY:
    expr = expr.replace(symbol, name)
  return expr.strip()


def strip_thousands_commas(expr: str) -> str:
  """`1,000,000` -> `1000000`, leaving commas that separate tuple elements."""
  while True:
    stripped = _PROPER_THOUSANDS.sub(r"\1\3\4", expr)
    if stripped == expr:
      return stripped
    expr = stripped


def _near_int(x: float) -> bool:
  try:
    return abs(x - int(round(x))) <= 1e-7
  except (OverflowError, ValueError):  # inf, nan
    return False


def str_is_int(text: str) -> bool:
  """A number within 1e-7 of an integer (thousands commas allowed)."""
  try:
    return _near_int(float(strip_thousands_commas(text)))
  except ValueError:
    return False


def _as_float(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def prm800k_normalize(expr: str) -> str:
  """PRM800K's normaliser as released (quirks kept; see the module docstring)."""
  wrapped = _TEXT_WRAPPER.search(expr)
  if wrapped is not None:
    expr = wrapped.group("text")
  expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
  expr = expr.replace(" or ", " , ").replace(" and ", " , ")
  for word, power in _SCALE_WORDS:
    expr = expr.replace(word, power)
  for pattern in _UNIT_PATTERNS:
    expr = pattern.sub("", expr)
  expr = re.sub(r"\^ *\\circ", "", expr)
  if expr and expr[0] == "{" and expr[-1] == "}":
    expr = expr[1:-1]
  expr = re.sub(r",\\! *", "", expr)
  value = _as_float(expr)
  if value is not None and _near_int(value):
    expr = str(int(round(value)))
  if "\\" in expr:
    try:
      expr = latex_as_text(expr)
    except Exception:  # released: any rendering failure keeps the LaTeX
      pass
  expr = re.sub("- *", "-", expr)
  expr = re.sub("([0-9]) +([0-9])", r"\1+\2", expr)  # "7 3/4" -> "7+3/4"
  expr = expr.lower()
  if str_is_int(expr):
    # int() truncates: "2,999.99999999" becomes "2999" (released; without the comma the
    # float test above has already rounded it).
    expr = str(int(float(expr.replace(",", ""))))
  return expr
