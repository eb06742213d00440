"""Where the released grader evaluates model text, do so without running arbitrary code.

The released grader passes answer text to Python's `eval` (to evaluate a π-substituted answer)
and to sympy's `parse_expr`/`sympify`, which are `eval` underneath: a response such as
`\\boxed{__import__('os').system(...)}` would run. `released` keeps the decisions and not the
hazard (docs/math_grading.md, "Where released differs"):

- `literal_arithmetic` evaluates only number literals, arithmetic and bit operators, and
  tuple/list/set displays, with Python's own semantics (so `2^3` is XOR, 1); anything else
  raises, which the caller treats as the released `eval` failing.
- `guarded_parse` / `ensure_sympy_safe` refuse text with string literals, attribute access,
  dunder names, or a name that sympy would resolve to something other than a mathematical
  function or constant (names sympy does not know become Symbols, as usual). Refused text is
  treated as text sympy could not parse.
"""

from __future__ import annotations

import ast
import builtins
import functools
import io
import operator
import tokenize
import types

import sympy
from sympy.parsing import sympy_parser

MAX_INT_EXPONENT = 10_000  # 2**10000 is instant; far larger would hang the grader


class UnsafeExpression(ValueError):
  """Answer text that `released` will not hand to an evaluator."""


# ----------------------------------------------------------------------------- literal `eval`

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert}
_NUMBER = (int, float, complex)  # bool is an int
_DISPLAYS = {ast.Tuple: tuple, ast.List: list, ast.Set: set}


def _binary(op: ast.operator, left, right):
  if not (isinstance(left, _NUMBER) and isinstance(right, _NUMBER)):
    raise UnsafeExpression("arithmetic on non-numbers")
  big_int_op = isinstance(op, (ast.Pow, ast.LShift)) and isinstance(right, int)
  if big_int_op and isinstance(left, int) and abs(left) > 1 and right > MAX_INT_EXPONENT:
    raise UnsafeExpression(f"integer exponent {right} > {MAX_INT_EXPONENT}")
  return _BINARY[type(op)](left, right)


def _value(node: ast.AST):
  if isinstance(node, ast.Constant) and isinstance(node.value, _NUMBER):
    return node.value
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    operand = _value(node.operand)
    if not isinstance(operand, _NUMBER):
      raise UnsafeExpression("arithmetic on non-numbers")
    return _UNARY[type(node.op)](operand)
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    return _binary(node.op, _value(node.left), _value(node.right))
  if type(node) in _DISPLAYS:
    return _DISPLAYS[type(node)](_value(e) for e in node.elts)
  raise UnsafeExpression(f"not evaluated: {type(node).__name__}")


def literal_arithmetic(text: str):
  """What Python's `eval(text)` returns when `text` is plain arithmetic; raises otherwise."""
  tree = ast.parse(text.lstrip(" \t"), mode="eval")  # eval() ignores leading blanks too
  return _value(tree.body)


# ----------------------------------------------------------------------------- sympy parsing

# Names sympy's parser resolves that only compute: its mathematical functions, numbers,
# constants, containers and relations, and a few pure builtins. Everything else it resolves
# (printing, plotting, `sympify`, `S`, `eval`, `open`, ...) is refused.
_CORE_NAMES = frozenset(
    "pi E I oo zoo nan N O Q Rational Integer Float Number Abs Mod Min Max Eq Ne Lt Le Gt Ge "
    "Add Mul Pow Sum Product Matrix Interval Union Intersection FiniteSet Tuple Point "
    "gcd lcm igcd ilcm And Or Not Xor CC QQ RR ZZ EX FF GF QQ_I ZZ_I Id LC LM LT FU fu eye "
    "fft ntt gff abs min max pow round divmod all any id len sum".split()
)


@functools.cache
def _refused_names() -> frozenset[str]:
  """Names parse_expr resolves (sympy's namespace + builtin functions) that are not allowed."""
  namespace: dict = {}
  exec("from sympy import *", namespace)  # exactly the namespace parse_expr builds
  namespace.update(
      (n, o) for n, o in vars(builtins).items() if isinstance(o, types.BuiltinFunctionType)
  )
  allowed = _CORE_NAMES | set(sympy.functions.__all__)
  return frozenset(n for n in namespace if n not in allowed)


_STRING_TOKENS = {tokenize.STRING} | {
    getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE") if hasattr(tokenize, n)
}


def _check_tokens(text: str) -> None:
  try:
    tokens = list(tokenize.generate_tokens(io.StringIO(text.strip()).readline))
  except (tokenize.TokenError, SyntaxError) as exc:  # sympy tokenizes the same way and fails
    raise UnsafeExpression(f"does not tokenize: {exc}") from None
  refused = _refused_names()
  for previous, token in zip([None] + tokens, tokens):
    if token.type in _STRING_TOKENS:
      raise UnsafeExpression("string literal")
    if token.type != tokenize.NAME:
      continue
    if "__" in token.string or token.string in refused:
      raise UnsafeExpression(f"name {token.string!r}")
    if previous is not None and previous.string == ".":
      raise UnsafeExpression(f"attribute {token.string!r}")


def ensure_sympy_safe(text: str) -> str:
  """`text` unchanged if sympy may parse it, else UnsafeExpression."""
  _check_tokens(text)
  return text


def guarded_parse(text: str, transformations=sympy_parser.standard_transformations):
  """sympy's `parse_expr(text, transformations=...)` for text that passes the guard."""
  return sympy_parser.parse_expr(ensure_sympy_safe(text), transformations=transformations)


def guarded_numeric(value):
  """sympy's `N(value)`; a string is first guarded as `sympify` will parse it (newlines gone)."""
  if isinstance(value, str):
    value = ensure_sympy_safe(value.replace("\n", ""))
  return sympy.N(value)
