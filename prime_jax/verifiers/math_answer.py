"""Final-answer extraction and LaTeX normalisation for math grading (pure string functions).

Extraction follows the released PRIME/MATH convention: the last `\\boxed{...}` or `\\fbox{...}`
(brace-matched; an unterminated last box yields nothing), else the text after the last
"answer is" or "answer:" ("Final Answer: 42"). Normalisation maps equivalent spellings of one
answer to one string.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"answer(?:\s+is\s*:?|\s*:)", re.IGNORECASE)


def _braced(text: str, open_at: int) -> str | None:
  """Content of the brace group opening at text[open_at] == '{', or None if unbalanced.

  Escaped braces (`\\{`, `\\}`) are literal characters, not grouping.
  """
  depth, i, n = 0, open_at, len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[open_at + 1 : i]
    i += 1
  return None


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{}`/`\\fbox{}` (also `\\boxed 5`), None if absent/unbalanced."""
  start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
  if start < 0:
    return None
  cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
  rest = start + len(cmd)
  if rest < len(text) and text[rest] == "{":
    return _braced(text, rest)
  if rest < len(text) and text[rest] == " ":  # "\boxed 5": one token up to '$' or whitespace
    token = re.match(r"\s*([^\s$]+)", text[rest:])
    return token.group(1) if token else None
  return None


def _answer_is(text: str) -> str | None:
  matches = list(_ANSWER_IS.finditer(text))
  if not matches:
    return None
  tail = text[matches[-1].end() :].strip().lstrip("*").strip()  # "**Answer:** 5" (Markdown)
  line = tail.split("\n", 1)[0].strip()
  inline = re.fullmatch(r"\$+(.+?)\$+.*", line)
  if inline:
    line = inline.group(1)
  line = re.sub(r"\.\s.*$", "", line)  # the sentence ends at ". "
  return line.rstrip(".").strip() or None


def extract_answer(response: str) -> str | None:
  """The model's final answer: last boxed expression, else "answer is/answer: ...", else None."""
  boxed = last_boxed(response)
  if boxed is not None:
    return boxed.strip() or None
  return _answer_is(response)


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------

_TEXT_COMMANDS = (
    "\\text",
    "\\textbf",
    "\\textit",
    "\\mbox",
    "\\mathrm",
    "\\mathbf",
    "\\operatorname",
)
_SPACING = re.compile(r"\\\\|\\[,;:! ]")  # spacing commands; a row break is matched to keep it
_DELETE = ("\\displaystyle", "\\quad", "\\qquad", "\\$", "$", "~")
_SCI = re.compile(r"^([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)[eE]([+-]?\d+)$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_UNIT_WORD = re.compile(r"^[a-zA-Z\s^{}\d/.\\]*$")
# What a quantity that takes a unit ends with: a digit, a group, or a constant like `\pi`.
_QUANTITY_END = re.compile(r"(\d|[})]|\\[a-zA-Z]+)$")
# "7 3/4": a whole number, a space, a proper fraction (without the space it is 73/4).
_MIXED_NUMBER = re.compile(r"^([+-]?)(\d+)\s+(\d+)/(\d+)$")
_EMPTY_SET = ("\\varnothing", "∅")


def _unwrap_text(s: str) -> str:
  """Drop `\\text{...}` units after a quantity; replace other `\\text{X}` by X."""
  out, i = [], 0
  while i < len(s):
    cmd = next(
        (c for c in _TEXT_COMMANDS if s.startswith(c + "{", i) or s.startswith(c + " {", i)), None
    )
    if cmd is None:
      out.append(s[i])
      i += 1
      continue
    open_at = s.index("{", i)
    inner = _braced(s, open_at)
    if inner is None:
      out.append(s[i:])
      break
    prefix = "".join(out).rstrip()
    end = open_at + len(inner) + 2
    is_unit = (
        prefix
        and _QUANTITY_END.search(prefix)
        and cmd in ("\\text", "\\mbox", "\\mathrm")
        and _UNIT_WORD.match(inner)
        and any(ch.isalpha() for ch in inner)
        and re.fullmatch(r"\s*(\^\{?\d\}?)?\s*", s[end:])
    )
    if is_unit:  # the unit (and any power on it) ends the answer
      break
    out.append(inner)
    i = end
  return "".join(out)


def _fix_fracs(s: str) -> str:
  """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{x}` -> `\\frac{1}{x}` (single-token arguments)."""

  def arg(t: str, j: int) -> tuple[str, int] | None:
    if j >= len(t):
      return None
    if t[j] == "{":
      inner = _braced(t, j)
      return None if inner is None else ("{" + inner + "}", j + len(inner) + 2)
    if t[j] == "\\":
      m = re.match(r"\\[a-zA-Z]+", t[j:])
      if m:
        return "{" + m.group(0) + "}", j + len(m.group(0))
    return "{" + t[j] + "}", j + 1

  out, i = [], 0
  while True:
    k = s.find("\\frac", i)
    if k < 0:
      out.append(s[i:])
      return "".join(out)
    out.append(s[i:k] + "\\frac")
    j = k + len("\\frac")
    first = arg(s, j)
    second = arg(s, first[1]) if first else None
    if not first or not second:
      out.append(s[j:])
      return "".join(out)
    out.append(first[0] + second[0])
    i = second[1]


def _strip_outer_braces(s: str) -> str:
  """`{{x}}` -> `x`: grouping braces around the whole answer mean nothing (linear time)."""
  match, stack, i = {}, [], 0
  while i < len(s):
    if s[i] == "\\":
      i += 2
      continue
    if s[i] == "{":
      stack.append(i)
    elif s[i] == "}" and stack:
      match[stack.pop()] = i
    i += 1
  lo, hi = 0, len(s) - 1
  while lo < hi and match.get(lo) == hi:
    lo, hi = lo + 1, hi - 1
  return s[lo : hi + 1]


def _strip_equation_lhs(s: str) -> str:
  """`x=3` -> `3` when the left side is a short variable name (one `=` only)."""
  parts = s.split("=")
  if len(parts) == 2 and re.fullmatch(r"[a-zA-Z](_\{?\w+\}?)?|\\[a-zA-Z]+", parts[0]):
    return parts[1]
  return s


def _mixed_number_as_fraction(s: str) -> str:
  """`7 3/4` -> `\\frac{31}{4}` (a proper fraction after the whole part), else `s` unchanged."""
  match = _MIXED_NUMBER.match(s)
  if not match:
    return s
  whole, num, den = map(int, match.group(2, 3, 4))
  if not 0 < num < den:
    return s
  minus = "-" if match.group(1) == "-" else ""
  return f"\\frac{{{minus}{whole * den + num}}}{{{den}}}"


def normalize_answer(answer: str) -> str:
  """Canonical string form of a LaTeX answer (see module docstring for what is equated).

  Removes spaces, `\\left`/`\\right`, spacing commands, `$`, degree marks, `\\%`, unit
  `\\text{}`, trailing periods and thousands separators; maps `\\dfrac`/`\\tfrac` to `\\frac`,
  brace-less `\\frac12`/`\\sqrt2`, `.5` -> `0.5`, `1.5e3` -> `1.5\\times10^{3}`, `x=3` -> `3`,
  the mixed number `7 3/4` -> `\\frac{31}{4}`, `\\varnothing`/`∅` -> `\\emptyset`.
  """
  s = _mixed_number_as_fraction(answer.strip().replace("\n", " "))
  for spelling in _EMPTY_SET:
    s = s.replace(spelling, "\\emptyset")
  s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
  s = re.sub(r"\\big{1,2}[lr]?(?![a-zA-Z])|\\Big{1,2}[lr]?(?![a-zA-Z])", "", s)
  s = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else "", s)
  for token in _DELETE:
    s = s.replace(token, "")
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("\\circ", "").replace("°", "")
  s = s.replace("\\%", "").replace("%", "")
  s = _unwrap_text(s)
  s = s.replace(" ", "")
  s = s.replace("{,}", ",") if re.search(r"\d\{,\}\d", s) else s
  s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
  s = _fix_fracs(s)
  s = s.rstrip(".")
  s = _strip_outer_braces(s)
  s = _strip_equation_lhs(s)
  if _THOUSANDS.match(s):
    s = s.replace(",", "")
  sci = _SCI.match(s)
  if sci:
    s = f"{sci.group(1)}\\times10^{{{int(sci.group(2))}}}"
  s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
  if re.fullmatch(r"[+-]?\d+\.0*", s):
    s = s.split(".")[0]
  return s


def had_percent(answer: str) -> bool:
  """Whether the raw answer carried a percent sign (then X% may also mean X/100)."""
  return "%" in answer
