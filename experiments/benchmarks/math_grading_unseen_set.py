"""Writes an unlabelled set of model-style math responses for checking `released` against PRIME.

    python experiments/benchmarks/math_grading_unseen_set.py --out unseen_set.jsonl [--seed 15]

Independent of tests/verifiers/build_math_grading_corpus.py (the corpus `released` was written
against): other templates, other response styles, no labels. Each row is {"category", "kind",
"response", "ground_truth"}; label it with label_with_released_reference.py, then measure with
math_grading.py. Each category draws answer forms (equal, equivalent, near, wrong) for random
values and wraps them in one of several response styles (boxed at the end, "Final Answer:",
"The answer is", unboxed, multi-sentence), so the set is varied but reproducible for a seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from fractions import Fraction

STEPS = (
    "First, we rewrite the condition in terms of {a}.",
    "Substituting {a} into the second equation gives {b}.",
    "Note that {a} and {b} have no common factor.",
    "Squaring both sides, we get {c} on the right.",
    "By Vieta's formulas the sum of the roots is {a}.",
    "Checking the case n = {a} separately, nothing changes.",
    "Multiplying through by {b} clears the denominators.",
    "The discriminant is {c}, which is positive.",
    "Adding the two cases gives {a} + {b} = {c}.",
    "We can verify this by plugging back in.",
)
ENDINGS = (
    "Therefore, the answer is $\\boxed{{{ans}}}$.",
    "So the final answer is $\\boxed{{{ans}}}$.",
    "Thus we obtain $\\boxed{{{ans}}}$.",
    "$$\\boxed{{{ans}}}$$",
    "Final Answer: The final answer is ${ans}$. I hope it is correct.",
    "The answer is $\\boxed{{{ans}}}$",
    "Hence the result is \\boxed{{{ans}}}.",
    "**Final answer:** $\\boxed{{{ans}}}$",
    "Answer: {ans}",
)


def reasoning(rng: random.Random, n: int) -> str:
  """n sentences of step-like reasoning with random small numbers (as models write them)."""
  out = []
  for _ in range(n):
    a, b = rng.randrange(2, 40), rng.randrange(2, 40)
    out.append(rng.choice(STEPS).format(a=a, b=b, c=a + b))
  return " ".join(out)


def respond(rng: random.Random, ans: str, ending: str | None = None) -> str:
  """A multi-sentence response ending in `ans` in a random (or the given) style."""
  head = reasoning(rng, rng.randrange(1, 5))
  ending = ending or rng.choice(ENDINGS)
  sep = rng.choice((" ", "\n\n", "\n"))
  return f"{head}{sep}{ending.format(ans=ans)}"


def tex_frac(p: int, q: int, cmd: str = "frac") -> str:
  sign = "-" if p * q < 0 else ""
  return f"{sign}\\{cmd}{{{abs(p)}}}{{{abs(q)}}}"


def reduced(rng: random.Random) -> Fraction:
  while True:
    q = rng.randrange(3, 20)
    p = rng.randrange(1, 3 * q)
    f = Fraction(p, q)
    if f.denominator > 1:
      return f


# Each category: rng -> list of (kind, answer as written, ground truth); `respond` wraps them.


def fractions(rng):
  f = reduced(rng)
  p, q = f.numerator, f.denominator
  k = rng.randrange(2, 5)
  g = reduced(rng)
  whole, rest = divmod(p, q)
  return [
      ("same", tex_frac(p, q), tex_frac(p, q)),
      ("dfrac", tex_frac(p, q, "dfrac"), tex_frac(p, q)),
      ("slash", f"{p}/{q}", tex_frac(p, q)),
      ("decimal 4dp", f"{p / q:.4f}", tex_frac(p, q)),
      ("decimal 2dp", f"{p / q:.2f}", tex_frac(p, q)),
      ("unreduced", tex_frac(k * p, k * q), tex_frac(p, q)),
      ("negative placement", f"\\frac{{-{p}}}{{{q}}}", f"-\\frac{{{p}}}{{{q}}}"),
      (
          "mixed number",
          f"{whole}\\frac{{{rest}}}{{{q}}}" if whole else tex_frac(p, q),
          tex_frac(p, q),
      ),
      ("other fraction", tex_frac(g.numerator, g.denominator), tex_frac(p, q) if g != f else "1"),
      ("gt slash", tex_frac(p, q), f"{p}/{q}"),
  ]


def decimals(rng):
  x = round(rng.uniform(0.05, 99), rng.choice((1, 2, 3)))
  f = Fraction(str(x))
  return [
      ("same", f"{x}", f"{x}"),
      ("trailing zero", f"{x}0", f"{x}"),
      ("as fraction", tex_frac(f.numerator, f.denominator), f"{x}"),
      ("rounded", f"{round(x, 1)}", f"{x}"),
      ("tiny error", f"{x + x * 3e-6:.7f}", f"{x}"),
      ("off by 0.01", f"{x + 0.01:.3f}", f"{x}"),
      ("no leading zero", f"{x % 1:.2f}"[1:], f"{x % 1:.2f}"),
  ]


def percents(rng):
  p = rng.randrange(1, 99)
  return [
      ("escaped %", f"{p}\\%", f"{p}"),
      ("plain %", f"{p}%", f"{p}\\%"),
      ("no % either", f"{p}", f"{p}\\%"),
      ("as proportion", f"{p / 100}", f"{p}"),
      ("as proportion vs %", f"{p / 100}", f"{p}\\%"),
      ("percent word", f"{p} \\text{{ percent}}", f"{p}"),
      ("x100", f"{p * 100}", f"{p}"),
      ("wrong", f"{p + 1}\\%", f"{p}\\%"),
  ]


def scientific(rng):
  m, e = rng.randrange(11, 99) / 10, rng.randrange(3, 9)
  value = int(round(m * 10**e))
  return [
      ("times", f"{m} \\times 10^{{{e}}}", f"{m} \\times 10^{{{e}}}"),
      ("no braces", f"{m}\\times10^{e}", f"{m} \\times 10^{{{e}}}"),
      ("expanded", f"{value}", f"{m} \\times 10^{{{e}}}"),
      ("commas", f"{value:,}", f"{value}"),
      ("e-notation", f"{m}e{e}", f"{value}"),
      ("cdot", f"{m} \\cdot 10^{{{e}}}", f"{value}"),
      ("shifted mantissa", f"{int(m * 10)} \\times 10^{{{e - 1}}}", f"{m} \\times 10^{{{e}}}"),
      ("power only", f"10^{{{e}}}", f"{10**e}"),
      ("wrong exponent", f"{m} \\times 10^{{{e + 1}}}", f"{m} \\times 10^{{{e}}}"),
  ]


def near_integers(rng):
  n = rng.choice((rng.randrange(2, 100), rng.randrange(1000, 99999), rng.randrange(10**6, 10**8)))
  return [
      ("same", f"{n}", f"{n}"),
      ("plus one", f"{n + 1}", f"{n}"),
      ("minus one", f"{n - 1}", f"{n}"),
      ("point zero", f"{n}.0", f"{n}"),
      ("commas", f"{n:,}", f"{n}"),
      ("tiny off", f"{n + 0.0001}", f"{n}"),
      ("times ten", f"{10 * n}", f"{n}"),
      ("half off", f"{n + 0.5}", f"{n}"),
  ]


def pi_roots(rng):
  k = rng.randrange(2, 9)
  r = rng.choice((2, 3, 5, 6, 7))
  return [
      ("k pi", f"{k}\\pi", f"{k}\\pi"),
      ("pi decimal 2dp", f"{k * math.pi:.2f}", f"{k}\\pi"),
      ("pi decimal 4dp", f"{k * math.pi:.4f}", f"{k}\\pi"),
      ("pi 3.14", f"{k * 3.14:.2f}", f"{k}\\pi"),
      ("pi over", f"\\frac{{\\pi}}{{{k}}}", f"\\frac{{\\pi}}{{{k}}}"),
      ("pi over as frac", f"\\frac{{1}}{{{k}}}\\pi", f"\\frac{{\\pi}}{{{k}}}"),
      ("sqrt", f"\\sqrt{{{r}}}", f"\\sqrt{{{r}}}"),
      ("sqrt unbraced", f"\\sqrt {r}", f"\\sqrt{{{r}}}"),
      ("sqrt decimal", f"{math.sqrt(r):.3f}", f"\\sqrt{{{r}}}"),
      ("k sqrt vs sqrt", f"\\sqrt{{{k * k * r}}}", f"{k}\\sqrt{{{r}}}"),
      ("k sqrt decimal", f"{k * math.sqrt(r):.4f}", f"{k}\\sqrt{{{r}}}"),
      ("wrong root", f"\\sqrt{{{r + 1}}}", f"\\sqrt{{{r}}}"),
  ]


def intervals(rng):
  a = rng.randrange(-9, 5)
  b = a + rng.randrange(1, 9)
  return [
      ("same", f"({a}, {b}]", f"({a}, {b}]"),
      ("no spaces", f"({a},{b}]", f"({a}, {b}]"),
      ("other closedness", f"({a}, {b})", f"({a}, {b}]"),
      ("both closed", f"[{a}, {b}]", f"({a}, {b}]"),
      ("inequality", f"{a} < x \\le {b}", f"({a}, {b}]"),
      ("infinity", f"(-\\infty, {b})", f"(-\\infty, {b})"),
      ("infinity spaced", f"\\left(-\\infty,{b}\\right)", f"(-\\infty, {b})"),
      ("union", f"(-\\infty, {a}) \\cup ({b}, \\infty)", f"(-\\infty,{a})\\cup({b},\\infty)"),
      ("wrong end", f"[{a}, {b + 1}]", f"[{a}, {b}]"),
  ]


def tuples(rng):
  x, y = rng.randrange(-9, 10), rng.randrange(-9, 10)
  f = reduced(rng)
  return [
      ("same", f"({x}, {y})", f"({x}, {y})"),
      ("no spaces", f"({x},{y})", f"({x}, {y})"),
      ("swapped", f"({y}, {x})", f"({x}, {y})" if x != y else f"({x}, {y + 1})"),
      ("equations", f"x = {x}, y = {y}", f"({x}, {y})"),
      ("float element", f"({x}.0, {y})", f"({x}, {y})"),
      (
          "decimal fraction element",
          f"({float(f):.4f}, {y})",
          f"({tex_frac(f.numerator, f.denominator)}, {y})",
      ),
      ("three elements", f"({x}, {y}, 0)", f"({x}, {y})"),
      ("left right", f"\\left({x}, {y}\\right)", f"({x}, {y})"),
  ]


def sets(rng):
  xs = sorted(rng.sample(range(-9, 15), rng.randrange(2, 5)))
  s = ", ".join(map(str, xs))
  return [
      ("list", s, s),
      ("braces vs list", f"\\{{{s}\\}}", s),
      ("reordered", ", ".join(map(str, xs[::-1])), s),
      ("braced both", f"\\{{{s}\\}}", f"\\{{{s}\\}}"),
      ("missing element", ", ".join(map(str, xs[:-1])), s),
      ("x equals list", f"x = {s}", s),
      ("roots with or", " \\text{ or } ".join(map(str, xs)), s),
  ]


def matrices(rng):
  a, b, c, d = (rng.randrange(-9, 10) for _ in range(4))
  gt = f"\\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{pmatrix}}"
  col = f"\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}"
  return [
      ("same", gt, gt),
      ("tight", f"\\begin{{pmatrix}}{a}&{b}\\\\{c}&{d}\\end{{pmatrix}}", gt),
      ("bmatrix", f"\\begin{{bmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{bmatrix}}", gt),
      ("python list", f"[[{a}, {b}], [{c}, {d}]]", gt),
      ("sympy Matrix", f"Matrix([[{a}, {b}], [{c}, {d}]])", gt),
      ("wrong entry", f"\\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d + 1} \\end{{pmatrix}}", gt),
      ("column", col, col),
      ("column floats", f"\\begin{{pmatrix}} {a}.0 \\\\ {b}.0 \\end{{pmatrix}}", col),
  ]


def latex_spacing(rng):
  r, q = rng.choice((2, 3, 5, 7)), rng.randrange(2, 9)
  x, y = rng.randrange(1, 9), rng.randrange(1, 9)
  gt = f"\\frac{{\\sqrt{{{r}}}}}{{{q}}}"
  return [
      ("spaces", f"\\frac {{ \\sqrt {{ {r} }} }} {{ {q} }}", gt),
      ("thin spaces", f"\\frac{{\\sqrt{{{r}}}}}{{{q}}}\\,", gt),
      ("displaystyle", f"\\displaystyle\\frac{{\\sqrt{{{r}}}}}{{{q}}}", gt),
      ("left right", f"\\left( {x}, {y} \\right)", f"({x},{y})"),
      ("big parens", f"\\big( {x}, {y} \\big)", f"({x},{y})"),
      ("negative spacing", f"{x}\\!{y}", f"{x}{y}"),
      ("dfrac spaces", f"\\dfrac{{ {x} }}{{ {x + y} }}", tex_frac(x, x + y)),
      ("mathrm", f"\\mathrm{{{x}}}", f"{x}"),
  ]


def degrees(rng):
  a = rng.choice((15, 30, 36, 45, 60, 72, 75, 90, 120, 135, 150))
  return [
      ("circ vs plain", f"{a}^\\circ", f"{a}"),
      ("braced circ", f"{a}^{{\\circ}}", f"{a}^\\circ"),
      ("unicode", f"{a}°", f"{a}"),
      ("word", f"{a} \\text{{ degrees}}", f"{a}"),
      (
          "radians",
          f"\\frac{{{Fraction(a, 180).numerator}\\pi}}{{{Fraction(a, 180).denominator}}}",
          f"{a}",
      ),
      ("wrong", f"{a + 5}^\\circ", f"{a}^\\circ"),
  ]


def word_units(rng):
  n = rng.randrange(2, 500)
  unit = rng.choice(("cm", "meters", "inches", "feet", "miles", "hours", "minutes", "days"))
  return [
      ("text unit", f"{n} \\text{{ {unit}}}", f"{n}"),
      ("bare unit", f"{n} {unit}", f"{n}"),
      ("squared unit", f"{n} \\text{{ cm}}^2", f"{n}"),
      ("dollars", f"\\${n}", f"{n}"),
      ("dollars word", f"{n} \\text{{ dollars}}", f"{n}"),
      ("units word", f"{n} \\text{{ units}}", f"{n}"),
      ("gt with unit", f"{n}", f"{n}\\text{{ {unit}}}"),
      ("wrong number", f"{n + 2} \\text{{ {unit}}}", f"{n}"),
  ]


def equations(rng):
  m, c = rng.randrange(2, 9), rng.randrange(1, 9)
  r = rng.randrange(2, 9)
  return [
      ("same line", f"y = {m}x + {c}", f"y = {m}x + {c}"),
      ("rhs only", f"{m}x + {c}", f"y = {m}x + {c}"),
      ("equation vs rhs", f"y = {m}x + {c}", f"{m}x + {c}"),
      ("reordered", f"y = {c} + {m}x", f"y = {m}x + {c}"),
      ("circle", f"x^2 + y^2 = {r * r}", f"x^2+y^2={r * r}"),
      ("x equals", f"x = {r}", f"{r}"),
      ("wrong slope", f"y = {m + 1}x + {c}", f"y = {m}x + {c}"),
  ]


def multiple_choice(rng):
  letters = "ABCDE"
  i = rng.randrange(5)
  L, W = letters[i], letters[(i + 1) % 5]
  return [
      ("letter", L, L),
      ("paren letter", f"({L})", L),
      ("text paren", f"\\text{{({L})}}", f"\\text{{({L})}}"),
      ("bold", f"\\textbf{{({L})}}", L),
      ("letter with value", f"({L}) {rng.randrange(2, 99)}", L),
      ("lowercase", L.lower(), L),
      ("wrong letter", W, L),
  ]


def text(rng):
  pairs = rng.choice(
      (
          ("even", "odd"),
          ("yes", "no"),
          ("Monday", "Tuesday"),
          ("Sunday", "Saturday"),
          ("true", "false"),
      )
  )
  word, other = pairs
  return [
      ("same", f"\\text{{{word}}}", f"\\text{{{word}}}"),
      ("plain vs text", word, f"\\text{{{word}}}"),
      ("capitalised", word.capitalize(), word),
      ("wrong word", f"\\text{{{other}}}", f"\\text{{{word}}}"),
      ("sentence", f"\\text{{the answer is {word}}}", word),
  ]


def expressions(rng):
  """Algebra answers: the sympy steps (PRM800K's with at most two letters; the tolerant one)."""
  a, b = rng.randrange(2, 9), rng.randrange(1, 9)
  e = rng.randrange(2, 7)
  return [
      ("factored", f"(x+{b})(x-{b})", f"x^2-{b * b}"),
      ("expanded", f"x^2 + {a + b}x + {a * b}", f"(x+{a})(x+{b})"),
      ("python power", f"x**2 - {b * b}", f"x^2-{b * b}"),
      ("caret power vs value", f"{a}^{e}", f"{a**e}"),
      ("caret xor value", f"{a}^{e}", f"{a ^ e}"),
      ("three letters", f"a b + {b} c", f"{b}c + ab"),
      ("three letters reordered", f"{a}xyz", f"{a}zyx"),
      ("sqrt call", f"sqrt({b + 1})", f"\\sqrt{{{b + 1}}}"),
      ("cube root", f"\\sqrt[3]{{{a}}}", f"\\sqrt[3]{{{a}}}"),
      ("plus minus", f"{a} \\pm \\sqrt{{{b}}}", f"{a} \\pm \\sqrt{{{b}}}"),
      ("base subscript", f"{bin(a * b)[2:]}_2", f"{bin(a * b)[2:]}_2"),
      ("base vs decimal", f"{bin(a * b)[2:]}_2", f"{a * b}"),
      ("index subscript", f"x_{a}", f"x_{a}"),
      ("infinity", "\\infty", "\\infty"),
      ("half pi text", f"pi/{a}", f"\\frac{{\\pi}}{{{a}}}"),
      ("wrong factor", f"(x+{b})(x+{b})", f"x^2-{b * b}"),
  ]


# Categories that build whole responses: rng -> list of (kind, response, ground truth).


def unboxed(rng):
  n, w = rng.randrange(2, 999), rng.randrange(2, 999)
  head = reasoning(rng, 2)
  return [
      ("answer is, then sentence", f"{head} So the answer is {n}. I hope this helps.", f"{n}"),
      ("answer is, last", f"{head} Thus, the answer is {n}.", f"{n}"),
      ("x equals last", f"{head} Solving, we get x = {n}.", f"{n}"),
      ("total is last sentence", f"{head} The total is {n}", f"{n}"),
      ("dollar math", f"{head}\nTherefore $x = {n}$.", f"{n}"),
      ("final answer colon", f"{head}\nFinal answer: {n}", f"{n}"),
      ("wrong unboxed", f"{head} So the answer is {w if w != n else n + 1}.", f"{n}"),
      ("no number", f"{head} This completes the proof.", f"{n}"),
  ]


def empty_box(rng):
  n = rng.randrange(2, 999)
  head = reasoning(rng, 2)
  return [
      ("empty after value", f"{head} We find x = {n}. \\boxed{{}}", f"{n}"),
      ("empty after is", f"{head} The answer is {n} \\boxed{{}}", f"{n}"),
      ("empty only", f"{head} \\boxed{{}}", f"{n}"),
      ("empty then text", f"{head} So $\\boxed{{}}$ is {n}.", f"{n}"),
  ]


def several_boxes(rng):
  a, b = rng.randrange(2, 99), rng.randrange(100, 199)
  head = reasoning(rng, 1)
  return [
      (
          "last is right",
          f"{head} At first $\\boxed{{{b}}}$, but correcting, $\\boxed{{{a}}}$.",
          f"{a}",
      ),
      ("first is right", f"{head} We get $\\boxed{{{a}}}$ and then $\\boxed{{{b}}}$.", f"{a}"),
      ("same twice", f"$\\boxed{{{a}}}$. {head} Again, $\\boxed{{{a}}}$.", f"{a}"),
      ("two parts", f"Part 1: $\\boxed{{{a}}}$. Part 2: $\\boxed{{{b}}}$.", f"{a}, {b}"),
      ("nested box", f"{head} \\boxed{{\\boxed{{{a}}}}}", f"{a}"),
      ("fbox", f"{head} \\fbox{{{a}}}", f"{a}"),
  ]


def long(rng):
  n = rng.randrange(2, 9999)
  body = reasoning(rng, rng.randrange(25, 60))
  return [
      ("long boxed", f"{body} Therefore the answer is $\\boxed{{{n}}}$.", f"{n}"),
      ("long final answer", f"{body}\n\nFinal Answer: The final answer is {n}.", f"{n}"),
      ("long wrong", f"{body} Therefore the answer is $\\boxed{{{n + 7}}}$.", f"{n}"),
      ("long unboxed tail", f"{body} Altogether, {n} ways.", f"{n}"),
  ]


def truncated(rng):
  n = rng.randrange(2, 999)
  body = reasoning(rng, rng.randrange(5, 15))
  cut = len(body) * rng.randrange(40, 95) // 100
  return [
      ("cut mid reasoning", body[:cut], f"{n}"),
      ("cut mid box", f"{body} So the answer is $\\boxed{{{n}", f"{n}"),
      ("cut after is", f"{body} Therefore the answer is", f"{n}"),
      ("cut mid number", f"{body} The answer is {str(n)[:-1] or n}", f"{n}"),
  ]


def near_misses(rng):
  n = rng.randrange(12, 99)
  f = reduced(rng)
  r, s = rng.choice(((2, 3), (3, 5), (2, 5), (5, 7)))
  digits = str(n)
  return [
      ("sign", f"-{n}", f"{n}"),
      ("digits swapped", digits[::-1], digits if digits[::-1] != digits else f"{n + 1}"),
      ("reciprocal", tex_frac(f.denominator, f.numerator), tex_frac(f.numerator, f.denominator)),
      ("root swapped", f"{r}\\sqrt{{{s}}}", f"{s}\\sqrt{{{r}}}"),
      ("plus minus", f"x + {r}", f"x - {r}"),
      ("squared", f"{n * n}", f"{n}"),
      ("off by 1e-3", f"{n * 1.001:.3f}", f"{n}"),
  ]


WRAPPED = (
    fractions,
    decimals,
    percents,
    scientific,
    near_integers,
    pi_roots,
    intervals,
    tuples,
    sets,
    matrices,
    latex_spacing,
    degrees,
    word_units,
    equations,
    multiple_choice,
    text,
    expressions,
)
WHOLE = (unboxed, empty_box, several_boxes, long, truncated, near_misses)


def build(seed: int, per_category: int) -> list[dict]:
  """About `per_category` rows per category (whole draws of each category's list)."""
  rng = random.Random(seed)
  rows = []
  for make in WRAPPED + WHOLE:
    drawn = []
    while len(drawn) < per_category:
      drawn.extend(make(rng))
    for kind, text_, ground_truth in drawn:
      # near_misses are plain answers: wrap them like the other answer categories.
      wrap = make in WRAPPED or make is near_misses
      response = respond(rng, text_) if wrap else text_
      rows.append(
          {
              "category": make.__name__,
              "kind": kind,
              "response": response,
              "ground_truth": ground_truth,
          }
      )
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--out", required=True)
  parser.add_argument("--seed", type=int, default=15)
  parser.add_argument("--per_category", type=int, default=24)
  args = parser.parse_args()
  rows = build(args.seed, args.per_category)
  with open(args.out, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
  main()
