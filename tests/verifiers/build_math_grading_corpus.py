"""Writes math_grading_corpus.jsonl: (response, ground truth) pairs with each mode's label.

    python tests/verifiers/build_math_grading_corpus.py

Each template below carries the label of `strict` and of `released`, written from the documented
behaviour of each mode (docs/verifiers.md for strict, docs/math_grading.md for released), with the
reason in `why`; instances vary the numbers without changing the reason. Seeded: the file is
reproducible. test_math_grading_corpus.py checks both graders against it.
"""

from __future__ import annotations

import json
import math
import os
import random
from fractions import Fraction

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_grading_corpus.jsonl")
REASONING = (
    "We set up the problem, simplify each term and check the cases carefully before combining "
    "them into a single result. "
)


def boxed(answer: str) -> str:
  return f"{REASONING}So the final answer is $\\boxed{{{answer}}}$."


def frac(p: int, q: int) -> str:
  return f"\\frac{{{p}}}{{{q}}}"


def reduced_fractions(rng, n, lo=2, hi=13):
  """n distinct reduced proper fractions p/q with q in [lo, hi)."""
  out = set()
  while len(out) < n:
    q = rng.randrange(lo, hi)
    p = rng.randrange(1, q)
    if math.gcd(p, q) == 1:
      out.add((p, q))
  return sorted(out)


# Each template: (category, why, strict label, released label, instances(rng) -> [(resp, gt)]).
TEMPLATES = []


def template(category, why, strict, released):
  def register(fn):
    TEMPLATES.append((category, why, strict, released, fn))
    return fn

  return register


# ------------------------------------------------------------------------------------ fractions


@template("fractions", "same fraction", 1, 1)
def _(rng):
  return [(boxed(frac(p, q)), frac(p, q)) for p, q in reduced_fractions(rng, 3)]


@template("fractions", "dfrac is frac (both normalise it)", 1, 1)
def _(rng):
  return [(boxed(f"\\dfrac{{{p}}}{{{q}}}"), frac(p, q)) for p, q in reduced_fractions(rng, 3)]


@template("fractions", "a/b: strict parses it, released MATH-normalises a/b to \\frac", 1, 1)
def _(rng):
  return [(boxed(f"{p}/{q}"), frac(p, q)) for p, q in reduced_fractions(rng, 3)]


@template("fractions", "brace-less \\frac34 is rewritten by both", 1, 1)
def _(rng):
  return [(boxed(f"\\frac{p}{q}"), frac(p, q)) for p, q in reduced_fractions(rng, 3, 2, 10)]


@template(
    "fractions",
    "unreduced: strict compares values; released requires two plain fractions to be equal strings",
    1,
    0,
)
def _(rng):
  return [(boxed(frac(2 * p, 2 * q)), frac(p, q)) for p, q in reduced_fractions(rng, 3)]


@template("fractions", "inverted fraction", 0, 0)
def _(rng):
  return [(boxed(frac(q, p)), frac(p, q)) for p, q in reduced_fractions(rng, 3)]


@template("fractions", "numerator off by one", 0, 0)
def _(rng):
  return [(boxed(frac(p + q, q * 7)), frac(p, q)) for p, q in reduced_fractions(rng, 2)]


@template(
    "fractions",
    "mixed number '7 3/4': strict fix; released injects + between digits and simplifies",
    1,
    1,
)
def _(rng):
  pairs = []
  for p, q in reduced_fractions(rng, 3):
    w = rng.randrange(1, 9)
    pairs.append((boxed(f"{w} {p}/{q}"), frac(w * q + p, q)))
  return pairs


@template("fractions", "mixed number with \\frac (rendered '7 3/4' by released)", 1, 1)
def _(rng):
  pairs = []
  for p, q in reduced_fractions(rng, 2):
    w = rng.randrange(1, 9)
    pairs.append((boxed(f"{w}\\frac{{{p}}}{{{q}}}"), frac(w * q + p, q)))
  return pairs


@template("fractions", "minus sign outside vs inside the fraction", 1, 1)
def _(rng):
  return [(boxed("-" + frac(p, q)), frac(-p, q)) for p, q in reduced_fractions(rng, 2)]


@template(
    "fractions",
    "4-digit decimal of a LaTeX fraction: strict within 1e-4; released cannot parse LaTeX in its "
    "tolerant test and sympy's difference is not 0",
    1,
    0,
)
def _(rng):
  out = []
  for p, q in [(3, 7), (5, 7), (2, 9), (4, 11)]:
    out.append((boxed(f"{p / q:.5f}"), frac(p, q)))
  return out


# ------------------------------------------------------------------------------------- decimals


@template("decimals", "0.5 vs \\frac{1}{2} (MATH maps 0.5 to \\frac{1}{2})", 1, 1)
def _(rng):
  return [(boxed("0.5"), "\\frac{1}{2}"), (boxed("\\frac{1}{2}"), "0.5")]


@template("decimals", "trailing zero: equal values; released's sympy difference is 0", 1, 1)
def _(rng):
  return [(boxed(f"{x}0"), x) for x in ("2.5", "0.75", "13.2", "4.125")]


@template("decimals", "leading dot", 1, 1)
def _(rng):
  return [(boxed(x[1:]), x) for x in ("0.125", "0.75", "0.3")]


@template("decimals", "terminating decimal vs LaTeX fraction: sympy difference is 0", 1, 1)
def _(rng):
  return [(boxed(frac(p, q)), str(p / q)) for p, q in [(15, 4), (3, 8), (7, 5)]]


@template("decimals", "decimal within 1e-4 relative of a decimal", 1, 1)
def _(rng):
  return [(boxed("2.5001"), "2.5"), (boxed("12.3456"), "12.3457"), (boxed("0.33334"), "0.33333")]


@template("decimals", "decimal off by more than 1e-4 (and not x100 or /100)", 0, 0)
def _(rng):
  return [(boxed("2.51"), "2.5"), (boxed("0.33"), "0.3"), (boxed("13.3"), "13.2")]


@template("decimals", "integer written as a decimal", 1, 1)
def _(rng):
  return [(boxed(f"{n}.0"), str(n)) for n in (7, 42, 105)]


# ------------------------------------------------------------------------------------- percents


@template("percents", "percent sign dropped or added", 1, 1)
def _(rng):
  return [
      (boxed("25"), "25\\%"),
      (boxed("25\\%"), "25"),
      (boxed("12.5\\%"), "12.5"),
      (boxed("40"), "40\\%"),
  ]


@template("percents", "percent as a fraction of one, % in the ground truth", 1, 1)
def _(rng):
  return [(boxed("0.25"), "25\\%"), (boxed("0.6"), "60\\%"), (boxed("0.125"), "12.5\\%")]


@template("percents", "percent in the answer, fraction of one in the ground truth", 1, 1)
def _(rng):
  return [(boxed("40\\%"), "0.4"), (boxed("75\\%"), "0.75")]


@template(
    "percents",
    "no % sign anywhere: strict needs one; released tries gt/100 and gt*100",
    0,
    1,
)
def _(rng):
  return [
      (boxed("0.25"), "25"),
      (boxed("2500"), "25"),
      (boxed("40"), "0.4"),
      (boxed("0.07"), "7"),
      (boxed("1200"), "12"),
  ]


@template("percents", "wrong percent", 0, 0)
def _(rng):
  return [(boxed("40\\%"), "50\\%"), (boxed("4"), "40\\%"), (boxed("0.3"), "40")]


# --------------------------------------------------------------------------- scientific notation


@template("scientific", "e-notation: released reads it as a float near an integer", 1, 1)
def _(rng):
  return [(boxed("1.5e3"), "1500"), (boxed("2e5"), "200000"), (boxed("3.2E4"), "32000")]


@template(
    "scientific",
    "\\times 10^{k} vs the integer: strict evaluates; released needs both sides integer or both "
    "not, and its tolerant test cannot parse LaTeX",
    1,
    0,
)
def _(rng):
  return [
      (boxed("1.5\\times 10^{3}"), "1500"),
      (boxed("1500"), "1.5\\times 10^{3}"),
      (boxed("2\\times10^6"), "2000000"),
  ]


@template("scientific", "same \\times 10^k up to spacing", 1, 1)
def _(rng):
  return [
      (boxed("6.02\\times10^{23}"), "6.02\\times 10^{23}"),
      (boxed("3 \\times 10^{8}"), "3\\times 10^{8}"),
  ]


@template("scientific", "mantissa or exponent wrong", 0, 0)
def _(rng):
  return [
      (boxed("6.2\\times 10^{23}"), "6.02\\times 10^{23}"),
      (boxed("6.02\\times 10^{22}"), "6.02\\times 10^{23}"),
  ]


@template(
    "scientific",
    "10^6 vs 1000000: strict evaluates the power; released's sympy reads ^ as XOR (12)",
    1,
    0,
)
def _(rng):
  return [(boxed("10^6"), "1000000"), (boxed("10^4"), "10000")]


@template("scientific", "10^6 vs 12: the XOR quirk accepts it (10 xor 6 = 12)", 0, 1)
def _(rng):
  return [(boxed("10^6"), "12"), (boxed("10^4"), "14")]


# ------------------------------------------------------------------------ near-equal integers


@template(
    "near_integers",
    "integer within 1e-4 relative: strict is exact on integers; released's tolerance covers them",
    0,
    1,
)
def _(rng):
  return [
      (boxed("1000001"), "1000000"),
      (boxed("100000"), "99999"),
      (boxed("12346"), "12345"),
      (boxed("250010"), "250000"),
      (boxed("99999999"), "100000000"),
  ]


@template("near_integers", "integer off by more than 1e-4 relative", 0, 0)
def _(rng):
  return [
      (boxed("101"), "100"),
      (boxed("12347"), "12345"),
      (boxed("2025"), "2024"),
      (boxed("1000200"), "1000000"),
  ]


@template("near_integers", "thousands separators", 1, 1)
def _(rng):
  return [
      (boxed("1,000,000"), "1000000"),
      (boxed("10000"), "10,000"),
      (boxed("1{,}234"), "1234"),
  ]


@template("near_integers", "same integer", 1, 1)
def _(rng):
  return [(boxed(str(n)), str(n)) for n in rng.sample(range(2, 100000), 4)]


@template("near_integers", "sign flipped", 0, 0)
def _(rng):
  return [(boxed(f"-{n}"), str(n)) for n in rng.sample(range(2, 1000), 3)]


# --------------------------------------------------------------------------------- pi and roots


@template("pi_roots", "same multiple of pi", 1, 1)
def _(rng):
  return [(boxed(f"{k}\\pi"), f"{k}\\pi") for k in (2, 3, 36)]


@template(
    "pi_roots",
    "decimal = k*3.14 but not within 1e-4 of k*pi: released tries pi = 3.14",
    0,
    1,
)
def _(rng):
  return [
      (boxed("3.14"), "\\pi"),
      (boxed("6.28"), "2\\pi"),
      (boxed("12.56"), "4\\pi"),
      (boxed("31.4"), "10\\pi"),
  ]


@template("pi_roots", "decimal within 1e-4 of k*pi", 1, 1)
def _(rng):
  return [(boxed(f"{k * math.pi:.5g}"), f"{k}\\pi") for k in (2, 5, 36)]


@template(
    "pi_roots",
    "decimal of pi/2: strict within 1e-4; released's \\frac{\\pi}{2} does not evaluate",
    1,
    0,
)
def _(rng):
  return [(boxed("1.5708"), "\\frac{\\pi}{2}"), (boxed("0.7854"), "\\frac{\\pi}{4}")]


@template("pi_roots", "brace-less sqrt", 1, 1)
def _(rng):
  return [(boxed(f"\\sqrt{n}"), f"\\sqrt{{{n}}}") for n in (2, 3, 7)]


@template("pi_roots", "simplified radical: released's sympy sees 2*sqrt(2) - sqrt(8) = 0", 1, 1)
def _(rng):
  return [
      (boxed("2\\sqrt{2}"), "\\sqrt{8}"),
      (boxed("\\sqrt{12}"), "2\\sqrt{3}"),
      (boxed("3\\sqrt{5}"), "\\sqrt{45}"),
  ]


@template("pi_roots", "wrong radical", 0, 0)
def _(rng):
  return [(boxed("3\\sqrt{2}"), "2\\sqrt{3}"), (boxed("\\sqrt{6}"), "2\\sqrt{2}")]


@template(
    "pi_roots",
    "decimal of a LaTeX radical: strict within 1e-4; released's sympy difference is not 0 and "
    "its tolerant test cannot parse LaTeX",
    1,
    0,
)
def _(rng):
  return [(boxed("0.86603"), "\\frac{\\sqrt{3}}{2}"), (boxed("1.41421"), "\\sqrt{2}")]


@template("pi_roots", "pi with spacing", 1, 1)
def _(rng):
  return [(boxed("2 \\pi"), "2\\pi"), (boxed("\\frac{\\pi}{3}"), "\\frac{\\pi}{3}")]


# ------------------------------------------------------------------------------------ intervals


@template("intervals", "same interval up to spacing", 1, 1)
def _(rng):
  return [
      (boxed("[1,5)"), "[1, 5)"),
      (boxed("(-\\infty,3]"), "(-\\infty, 3]"),
      (boxed("(0,\\infty)"), "(0, \\infty)"),
      (boxed("[2,7]"), "[2, 7]"),
  ]


@template("intervals", "union with \\cup, spacing differs", 1, 1)
def _(rng):
  return [(boxed("(-\\infty,-2)\\cup(3,\\infty)"), "(-\\infty, -2) \\cup (3, \\infty)")]


@template("intervals", "open vs half-open the other way: brackets compared", 0, 0)
def _(rng):
  return [(boxed("(1, 5)"), "[1, 5)"), (boxed("(1, 5)"), "[1, 5]"), (boxed("[2, 8]"), "[2, 7]")]


@template(
    "intervals",
    "closedness differs on the side released strips: '[a, b]' or '(a, b)' answers have their "
    "brackets stripped unless the ground truth opens with the other bracket",
    0,
    1,
)
def _(rng):
  return [(boxed("[1, 5]"), "[1, 5)"), (boxed("(1, 5)"), "(1, 5]"), (boxed("[0, 2]"), "[0, 2)")]


@template("intervals", "left/right delimiters", 1, 1)
def _(rng):
  return [(boxed("\\left[ 0, 1 \\right]"), "[0, 1]"), (boxed("\\left( 1, 2 \\right]"), "(1, 2]")]


# --------------------------------------------------------------------------------------- tuples


@template("tuples", "same tuple up to spacing", 1, 1)
def _(rng):
  return [(boxed("(1,2)"), "(1, 2)"), (boxed("(3,-4)"), "(3, -4)"), (boxed("(1,2,3)"), "(1, 2, 3)")]


@template("tuples", "order matters", 0, 0)
def _(rng):
  return [(boxed("(2, 1)"), "(1, 2)"), (boxed("(-4, 3)"), "(3, -4)")]


@template("tuples", "fraction element vs decimal element (sympy difference 0 per element)", 1, 1)
def _(rng):
  return [(boxed("(\\frac{1}{2}, 3)"), "(0.5, 3)"), (boxed("(0.25, 1)"), "(\\frac{1}{4}, 1)")]


@template(
    "tuples",
    "element within 1e-4 relative: strict compares tuple elements exactly; released's tolerant "
    "test compares element-wise with its tolerance",
    0,
    1,
)
def _(rng):
  return [(boxed("(2, 3.0001)"), "(2, 3)"), (boxed("(1.5, 7.0002)"), "(1.5, 7)")]


@template("tuples", "wrong length", 0, 0)
def _(rng):
  return [(boxed("(1, 2)"), "(1, 2, 3)"), (boxed("(1, 2, 3)"), "(1, 2)")]


# ----------------------------------------------------------------------------------------- sets


@template("sets", "same set, same order, spacing differs", 1, 1)
def _(rng):
  return [(boxed("\\{1,2,3\\}"), "\\{1, 2, 3\\}"), (boxed("\\{-1, 4\\}"), "\\{-1,4\\}")]


@template(
    "sets",
    "same set, other order: strict compares sets; released compares element by element",
    1,
    0,
)
def _(rng):
  return [(boxed("\\{3, 2, 1\\}"), "\\{1, 2, 3\\}"), (boxed("\\{1, -1\\}"), "\\{-1, 1\\}")]


@template("sets", "missing element", 0, 0)
def _(rng):
  return [(boxed("\\{1, 2\\}"), "\\{1, 2, 3\\}"), (boxed("\\{1, 3\\}"), "\\{1, 2\\}")]


@template("sets", "\\varnothing vs \\emptyset: strict fix; released renders both as ∅", 1, 1)
def _(rng):
  return [(boxed("\\varnothing"), "\\emptyset"), (boxed("\\emptyset"), "\\varnothing")]


# ------------------------------------------------------------------------------------- matrices


@template("matrices", "same matrix up to spacing", 1, 1)
def _(rng):
  return [
      (boxed("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
      (
          boxed("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
          "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
      ),
  ]


@template("matrices", "wrong entries", 0, 0)
def _(rng):
  return [
      (boxed("\\begin{pmatrix}2\\\\1\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
      (
          boxed("\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}"),
          "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
      ),
  ]


@template(
    "matrices",
    "entries written differently (1.0 vs 1): strict compares values; released's matrix "
    "comparison never runs (its '\\begin' test string holds a backspace)",
    1,
    0,
)
def _(rng):
  return [
      (boxed("\\begin{pmatrix}1.0\\\\2.0\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
      (
          boxed("\\begin{pmatrix}0.5\\\\3\\end{pmatrix}"),
          "\\begin{pmatrix}\\frac12\\\\3\\end{pmatrix}",
      ),
  ]


# ------------------------------------------------------------------------------- LaTeX spacing


@template("latex_spacing", "\\left( \\right) and spaces", 1, 1)
def _(rng):
  return [(boxed("\\left( 1, 2 \\right)"), "(1, 2)"), (boxed("\\left(3,4\\right)"), "(3, 4)")]


@template("latex_spacing", "\\tfrac and spaced \\frac 3 4", 1, 1)
def _(rng):
  return [(boxed("\\tfrac34"), "\\frac{3}{4}"), (boxed("\\frac 3 4"), "\\frac{3}{4}")]


@template("latex_spacing", "thin space after the answer: released renders \\, as a space", 1, 1)
def _(rng):
  return [(boxed("\\frac{1}{2}\\,"), "\\frac{1}{2}"), (boxed("2\\,\\sqrt{3}"), "2\\sqrt{3}")]


@template("latex_spacing", "spaces inside an expression", 1, 1)
def _(rng):
  return [(boxed("3 x + 2"), "3x+2"), (boxed("2 \\sqrt{3}"), "2\\sqrt{3}")]


@template("latex_spacing", "x^{2} vs x^2, no spaces: released's tolerant test drops braces", 1, 1)
def _(rng):
  return [(boxed(f"{k}x^{{2}}"), f"{k}x^2") for k in (2, 3, 5)]


@template(
    "latex_spacing",
    "x^{2} + 1 vs x^2+1: strict parses both; released renders LaTeX only when there is a "
    "backslash, '^{' keeps its sympy off, and dropping braces leaves the spaces different",
    1,
    0,
)
def _(rng):
  return [(boxed(f"x^{{2}} + {k}"), f"x^2+{k}") for k in (1, 4)]


# ------------------------------------------------------------------------------------- degrees


@template("degrees", "^\\circ on one side", 1, 1)
def _(rng):
  return [
      (boxed("30^\\circ"), "30"),
      (boxed("45"), "45^\\circ"),
      (boxed("90^{\\circ}"), "90^\\circ"),
  ]


@template(
    "degrees",
    "unicode degree sign: strict removes it; released keeps it and then cannot read a number",
    1,
    0,
)
def _(rng):
  return [(boxed("30°"), "30"), (boxed("120°"), "120")]


@template("degrees", "wrong angle", 0, 0)
def _(rng):
  return [(boxed("60^\\circ"), "30^\\circ"), (boxed("31^\\circ"), "30")]


@template(
    "degrees", "'degrees' as a word: strict reads the leading number; released strips it", 1, 1
)
def _(rng):
  return [(boxed("60 degrees"), "60"), (boxed("45 degree"), "45")]


# ---------------------------------------------------------------------------------- word units


@template("word_units", "unit in \\text{ ...}: both remove it", 1, 1)
def _(rng):
  return [
      (boxed("5\\text{ cm}"), "5"),
      (boxed("15 \\text{ minutes}"), "15"),
      (boxed("7\\text{ cm}^2"), "7"),
  ]


@template(
    "word_units",
    "plain-word unit: strict's parser reads the leading number and ignores trailing words; "
    "released strips the words of its unit list",
    1,
    1,
)
def _(rng):
  return [
      (boxed("5 cm"), "5"),
      (boxed("12 hours"), "12"),
      (boxed("10 meters"), "10"),
      (boxed("3 days"), "3"),
      (boxed("8 inches"), "8"),
  ]


@template("word_units", "unit after a pi term (strict fix; released's MATH cut at \\text{ )", 1, 1)
def _(rng):
  return [(boxed("36\\pi \\text{ cm}^2"), "36\\pi"), (boxed("4\\pi\\text{ m}"), "4\\pi")]


@template(
    "word_units",
    "a word that is not a unit: strict reads the leading number; released cannot parse the text",
    1,
    0,
)
def _(rng):
  return [(boxed("7 apples"), "7"), (boxed("9 coins"), "9")]


@template("word_units", "wrong number with a unit", 0, 0)
def _(rng):
  return [(boxed("4 days"), "3"), (boxed("6\\text{ cm}"), "5")]


@template("word_units", "dollar signs", 1, 1)
def _(rng):
  return [(boxed("\\$5"), "5"), (boxed("\\$5.50"), "5.50"), (boxed("\\$120"), "120")]


# ------------------------------------------------------------------------------------ equations


@template("equations", "single-variable equation vs its value (either side)", 1, 1)
def _(rng):
  return [(boxed("x=3"), "3"), (boxed("3"), "x=3"), (boxed("k = 4"), "k=4"), (boxed("y=-2"), "-2")]


@template(
    "equations",
    "the same equation: strict compares equations; released keeps the answer's text after '=' "
    "and compares it with the whole ground-truth equation",
    1,
    0,
)
def _(rng):
  return [
      (boxed("x^2+y^2=25"), "x^2+y^2=25"),
      (boxed("x^2+y^2=1"), "x^2+y^2=1"),
      (boxed("2x+3y=6"), "2x+3y=6"),
  ]


@template("equations", "line y = mx + b with a one-letter left side on both", 1, 1)
def _(rng):
  return [(boxed("y=2x+3"), "y = 2x + 3"), (boxed("y = 1 - x"), "y=1-x")]


@template("equations", "wrong value", 0, 0)
def _(rng):
  return [(boxed("x = 4"), "x=3"), (boxed("y = 2x + 4"), "y=2x+3")]


@template(
    "equations",
    "answer 'f(2)=5' for 5: strict compares an equation's right side with a number; released "
    "keeps what follows the '='",
    1,
    1,
)
def _(rng):
  return [(boxed("f(2)=5"), "5"), (boxed("a+b=12"), "12"), (boxed("P(A)=0.25"), "0.25")]


# ------------------------------------------------------------------------------ multiple choice


@template("multiple_choice", "choice with and without \\text / parentheses", 1, 1)
def _(rng):
  return [
      (boxed("(B)"), "\\text{(B)}"),
      (boxed("\\text{(D)}"), "\\text{(D)}"),
      (boxed("C"), "C"),
  ]


@template("multiple_choice", "wrong choice", 0, 0)
def _(rng):
  return [(boxed("\\text{(C)}"), "\\text{(B)}"), (boxed("(A)"), "(E)"), (boxed("D"), "B")]


@template(
    "multiple_choice",
    "letter case: strict compares single-letter symbols case-insensitively; released lower-cases",
    1,
    1,
)
def _(rng):
  return [(boxed("a"), "A"), (boxed("(c)"), "C")]


# ----------------------------------------------------------------------------------- text answers


@template("text", "same word", 1, 1)
def _(rng):
  return [
      (boxed("\\text{Monday}"), "\\text{Monday}"),
      (boxed("Yes"), "\\text{Yes}"),
      (boxed("\\text{odd}"), "\\text{odd}"),
  ]


@template("text", "case differs (strict fix: words compare case-insensitively)", 1, 1)
def _(rng):
  return [
      (boxed("Yes"), "\\text{YES}"),
      (boxed("Even"), "\\text{even}"),
      (boxed("\\text{no}"), "\\text{No}"),
      (boxed("TRUE"), "\\text{True}"),
  ]


@template("text", "different word", 0, 0)
def _(rng):
  return [
      (boxed("\\text{even}"), "\\text{odd}"),
      (boxed("No"), "\\text{Yes}"),
      (boxed("Monday"), "\\text{Tuesday}"),
  ]


@template(
    "text",
    "released strips the unit 'day' from inside words: Sunday -> Sun",
    0,
    1,
)
def _(rng):
  return [(boxed("Sun"), "\\text{Sunday}"), (boxed("\\text{Mon}"), "Monday")]


# --------------------------------------------------------------------------------- unboxed


@template("unboxed", "'the answer is N.'", 1, 1)
def _(rng):
  return [(f"{REASONING}Therefore, the answer is {n}.", str(n)) for n in (12, 7, 305)]


@template("unboxed", "'Final Answer: N' (strict fix; released reads after 'answer:')", 1, 1)
def _(rng):
  return [(f"{REASONING}\nFinal Answer: {n}", str(n)) for n in (42, 9, 1000)]


@template(
    "unboxed",
    "no answer marker, value after 'is'/'=' in the next-to-last sentence or alone: strict finds "
    "no answer; released drops the last sentence after '. ' and grades the tail",
    0,
    1,
)
def _(rng):
  return (
      [(f"The total is {n}", str(n)) for n in (42, 17)]
      + [(f"{REASONING}Thus x = {n}. Done.", str(n)) for n in (8, 64)]
      + [(f"{REASONING}so the value is {n}. I hope it is correct.", str(n)) for n in (42, 3)]
  )


@template("unboxed", "value in the last sentence after earlier ones: released drops it", 0, 0)
def _(rng):
  return [(f"{REASONING}The total is {n}", str(n)) for n in (42, 17)] + [
      (f"{REASONING}Thus x = {n}.", str(n)) for n in (8, 64)
  ]


@template("unboxed", "answer in math mode after 'the answer is'", 1, 1)
def _(rng):
  return [(f"The answer is ${frac(p, q)}$. I hope it is correct.", frac(p, q)) for p, q in [(3, 4)]]


@template("unboxed", "no final value at all", 0, 0)
def _(rng):
  return [(f"{REASONING}I am not sure how to finish.", "5"), (REASONING, "3")]


@template("unboxed", "tail is a phrase, not a value", 0, 0)
def _(rng):
  return [(f"{REASONING}We get 8 apples in total.", "8")]


# ------------------------------------------------------------------------------- empty boxes


@template(
    "empty_box",
    "empty box after a sentence ending '= N.': strict has no answer; released grades the tail",
    0,
    1,
)
def _(rng):
  return [(f"{REASONING}We find x = {n}. \\boxed{{}}", str(n)) for n in (42, 6, 250)]


@template("empty_box", "empty or blank box and nothing else", 0, 0)
def _(rng):
  return [("\\boxed{}", "1"), ("\\boxed{ }", "1"), (f"{REASONING}\\boxed{{}}", "2")]


# ------------------------------------------------------------------------------ several boxes


@template("several_boxes", "the last box counts", 1, 1)
def _(rng):
  return [
      ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),
      ("\\boxed{\\frac{1}{2}} or rather \\boxed{\\frac{1}{3}}", "\\frac{1}{3}"),
  ]


@template("several_boxes", "an earlier box does not count", 0, 0)
def _(rng):
  return [("First \\boxed{3}, then corrected: \\boxed{4}", "3"), ("\\boxed{2} and \\boxed{5}", "2")]


# ------------------------------------------------------------------------ long and truncated


@template("long", "long reasoning then the right box", 1, 1)
def _(rng):
  return [(REASONING * 60 + f"So the final answer is $\\boxed{{{n}}}$.", str(n)) for n in (17, 256)]


@template("long", "long reasoning then a wrong box", 0, 0)
def _(rng):
  return [(REASONING * 60 + "So the final answer is $\\boxed{18}$.", "17")]


@template("long", "an early 'the answer is' then a final box: the box counts", 1, 1)
def _(rng):
  return [(f"Maybe the answer is 7. {REASONING * 5}Final: \\boxed{{8}}", "8")]


@template(
    "truncated",
    "cut off after 'x = N. Now': strict has no answer; released drops the cut sentence and "
    "grades the tail",
    0,
    1,
)
def _(rng):
  return [(REASONING * 10 + f"Therefore x = {n}. Now we check", str(n)) for n in (12, 5)]


@template("truncated", "cut off right after 'x = N': released drops that last sentence", 0, 0)
def _(rng):
  return [(REASONING * 10 + f"Therefore x = {n}", str(n)) for n in (12, 5)]


@template("truncated", "cut off inside the box or mid-sentence", 0, 0)
def _(rng):
  return [
      (REASONING * 10 + "so the answer is \\boxed{1", "12"),
      (REASONING * 10 + "we find that x = 12 and", "12"),
  ]


# ---------------------------------------------------------------------------------- near misses


@template("near_misses", "close but wrong", 0, 0)
def _(rng):
  return [
      (boxed("\\frac{1}{4}"), "\\frac{1}{3}"),
      (boxed("12.5"), "12"),
      (boxed("(1, 3)"), "(1, 2)"),
      (boxed("x^2-1"), "x^2+1"),
      (boxed("0.26"), "25"),
      (boxed("3.15"), "3.14"),
      (boxed("2\\sqrt{5}"), "2\\sqrt{3}"),
      (boxed("-\\frac{3}{4}"), "\\frac{3}{4}"),
  ]


# ------------------------------------------------- more instances of the forms above (seeded)


@template("fractions", "same fraction, spaced \\frac arguments", 1, 1)
def _(rng):
  return [(boxed(f"\\frac{{ {p} }}{{ {q} }}"), frac(p, q)) for p, q in reduced_fractions(rng, 5)]


@template("fractions", "different fraction of the same denominator", 0, 0)
def _(rng):
  return [(boxed(frac(q - p, q)), frac(p, q)) for p, q in reduced_fractions(rng, 6) if 2 * p != q]


@template("near_integers", "large integer + 1 (relative gap < 1e-4)", 0, 1)
def _(rng):
  return [(boxed(str(n + 1)), str(n)) for n in rng.sample(range(20_000, 10_000_000), 6)]


@template("near_integers", "small integer + 1 (relative gap > 1e-3)", 0, 0)
def _(rng):
  return [(boxed(str(n + 1)), str(n)) for n in rng.sample(range(10, 999), 6)]


@template("near_integers", "same integer, thousands commas in the answer", 1, 1)
def _(rng):
  return [(boxed(f"{n:,}"), str(n)) for n in rng.sample(range(1_000, 9_999_999), 5)]


@template("percents", "k/100 or 100k for k with no % sign (released only)", 0, 1)
def _(rng):
  ks = rng.sample(range(2, 99), 6)
  return [(boxed(f"{k / 100:g}"), str(k)) for k in ks[:3]] + [
      (boxed(str(k * 100)), str(k)) for k in ks[3:]
  ]


@template("percents", "k% vs k/100", 1, 1)
def _(rng):
  return [(boxed(f"{k}\\%"), f"{k / 100:g}") for k in rng.sample(range(2, 99), 4)]


@template("pi_roots", "k*3.14 for k*pi (outside 1e-4 of k*pi; released's 3.14 attempt)", 0, 1)
def _(rng):
  return [(boxed(f"{k * 3.14:g}"), f"{k}\\pi") for k in (3, 5, 6, 8, 12)]


@template("pi_roots", "six significant digits of k*pi", 1, 1)
def _(rng):
  return [(boxed(f"{k * math.pi:.6g}"), f"{k}\\pi") for k in (3, 7, 9, 16)]


@template("intervals", "random half-open interval, spacing differs", 1, 1)
def _(rng):
  out = []
  for _ in range(5):
    a = rng.randrange(-20, 10)
    b = a + rng.randrange(1, 20)
    out.append((boxed(f"[{a},{b})"), f"[{a}, {b})"))
  return out


@template("intervals", "wrong right endpoint", 0, 0)
def _(rng):
  out = []
  for _ in range(4):
    a = rng.randrange(-20, 10)
    b = a + rng.randrange(1, 20)
    out.append((boxed(f"[{a}, {b + 1})"), f"[{a}, {b})"))
  return out


@template("tuples", "random pair, spacing differs", 1, 1)
def _(rng):
  return [
      (boxed(f"({a},{b})"), f"({a}, {b})")
      for a, b in (rng.sample(range(-30, 30), 2) for _ in range(5))
  ]


@template("tuples", "random pair swapped", 0, 0)
def _(rng):
  return [
      (boxed(f"({b}, {a})"), f"({a}, {b})")
      for a, b in (rng.sample(range(-30, 30), 2) for _ in range(4))
  ]


@template("sets", "same elements, same order", 1, 1)
def _(rng):
  return [
      (boxed("\\{" + ",".join(map(str, xs)) + "\\}"), "\\{" + ", ".join(map(str, xs)) + "\\}")
      for xs in (sorted(rng.sample(range(-9, 20), 3)) for _ in range(3))
  ]


@template("equations", "x = N vs N", 1, 1)
def _(rng):
  return [(boxed(f"x = {n}"), str(n)) for n in rng.sample(range(-50, 200), 4)]


@template("equations", "x = N+1 vs x=N", 0, 0)
def _(rng):
  return [(boxed(f"x = {n + 1}"), f"x={n}") for n in rng.sample(range(-50, 200), 3)]


@template("text", "word answers in another case (strict fix; released lower-cases)", 1, 1)
def _(rng):
  words = ("odd", "never", "impossible", "always", "right", "false")
  return [(boxed(w.capitalize()), f"\\text{{{w.upper()}}}") for w in words]


@template("multiple_choice", "choice in parentheses vs \\text{(X)}", 1, 1)
def _(rng):
  return [(boxed(f"({c})"), f"\\text{{({c})}}") for c in "ACE"]


@template("near_misses", "integer off by 7", 0, 0)
def _(rng):
  return [(boxed(str(n + 7)), str(n)) for n in rng.sample(range(20, 999), 6)]


@template("decimals", "integer written with .00", 1, 1)
def _(rng):
  return [(boxed(f"{n}.00"), str(n)) for n in rng.sample(range(2, 5000), 4)]


@template("scientific", "more e-notation", 1, 1)
def _(rng):
  return [(boxed("4.5e2"), "450"), (boxed("7E3"), "7000"), (boxed("2.5e4"), "25000")]


@template("several_boxes", "boxes with numbers; the last one counts", 1, 1)
def _(rng):
  return [
      (f"Try \\boxed{{{a}}}. No: \\boxed{{{b}}}", str(b))
      for a, b in (rng.sample(range(1, 500), 2) for _ in range(4))
  ]


@template("several_boxes", "boxes with numbers; the first one is the ground truth", 0, 0)
def _(rng):
  return [
      (f"Try \\boxed{{{a}}}. No: \\boxed{{{b}}}", str(a))
      for a, b in (rng.sample(range(1, 500), 2) for _ in range(3))
  ]


@template("unboxed", "'the answer is N.' / 'Final Answer: N', more numbers", 1, 1)
def _(rng):
  ns = rng.sample(range(1, 10_000), 6)
  return [(f"{REASONING}Hence the answer is {n}.", str(n)) for n in ns[:3]] + [
      (f"{REASONING}\nFinal Answer: {n}", str(n)) for n in ns[3:]
  ]


@template("empty_box", "empty box after 'so x = N. ', more numbers", 0, 1)
def _(rng):
  return [(f"{REASONING}So x = {n}. \\boxed{{}}", str(n)) for n in rng.sample(range(1, 999), 4)]


@template("long", "long reasoning then the right box, more numbers", 1, 1)
def _(rng):
  return [
      (REASONING * 40 + f"The final answer is $\\boxed{{{n}}}$.", str(n))
      for n in rng.sample(range(1, 999), 3)
  ]


def build(seed: int = 0) -> list[dict]:
  rng = random.Random(seed)
  rows = []
  for category, why, strict, released, instances in TEMPLATES:
    for response, truth in instances(rng):
      rows.append(
          dict(
              category=category,
              why=why,
              response=response,
              ground_truth=truth,
              strict=strict,
              released=released,
          )
      )
  return rows


def main() -> None:
  rows = build()
  with open(OUT, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  print(f"{len(rows)} pairs -> {OUT}")


if __name__ == "__main__":
  main()
