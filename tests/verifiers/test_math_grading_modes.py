"""The math grader's modes: selection (grade's mode, set_math_grader, task.math_grader), the
released mode's extraction and quirks, and its refusal to evaluate model text as code."""

import math

import numpy as np
import pytest

from experiments.configs import eurus2_7b, eurus2_7b_prime
from prime_jax.configs import base_config
from prime_jax.verifiers import MATH_GRADERS, get_ability, grade_with_stats, set_math_grader
from prime_jax.verifiers.released_math import released_answer, score_released_math
from prime_jax.verifiers.released_math.guarded import (
    UnsafeExpression,
    guarded_parse,
    literal_arithmetic,
)
from prime_jax.verifiers.released_math.normalization import hendrycks_normalize, prm800k_normalize

# Each row: response, ground truth, strict label, released label (the issue's examples).
ISSUE_EXAMPLES = [
    ("\\boxed{f(2)=5}", "5", 1, 1),
    ("\\boxed{x^2+y^2=25}", "x^2+y^2=25", 1, 0),
    ("\\boxed{0.25}", "25", 0, 1),
    ("\\boxed{2500}", "25", 0, 1),
    ("\\boxed{1000001}", "1000000", 0, 1),
    ("\\boxed{3.14}", "\\pi", 0, 1),
    ("\\boxed{\\text{YES}}", "yes", 1, 1),
    ("\\boxed{7 3/4}", "\\frac{31}{4}", 1, 1),
    ("Therefore x = 42. \\boxed{}", "42", 0, 1),
]


@pytest.mark.parametrize("mode", ["strict", "released"])
def test_issue_examples(mode, pool):
  responses, truths, *labels = zip(*ISSUE_EXAMPLES)
  scores, _ = grade_with_stats("math", responses, truths, pool=pool, mode=mode)
  np.testing.assert_array_equal(scores, labels[0] if mode == "strict" else labels[1])


def test_default_mode_is_strict_and_set_math_grader_changes_it(pool):
  response, truth = "\\boxed{2500}", "25"  # released only
  assert get_ability("math").score_fn is MATH_GRADERS["strict"]
  try:
    set_math_grader("released")
    assert grade_with_stats("math", [response], [truth], pool=pool)[0].tolist() == [1.0]
    assert grade_with_stats("math", [response], [truth], pool=pool, mode="strict")[0][0] == 0.0
  finally:
    set_math_grader("strict")
  assert grade_with_stats("math", [response], [truth], pool=pool)[0].tolist() == [0.0]
  with pytest.raises(ValueError, match="no mode 'lenient'"):
    grade_with_stats("math", [response], [truth], pool=pool, mode="lenient")
  with pytest.raises(ValueError, match="unknown math grader"):
    set_math_grader("lenient")


def test_config_field_defaults_to_strict_and_full_scale_runs_use_released():
  assert base_config().task.math_grader == "strict"
  assert eurus2_7b_prime.get_config().task.math_grader == "released"
  assert eurus2_7b.get_config("rloo").task.math_grader == "released"


@pytest.mark.parametrize(
    "response, extracted",
    [
        ("\\boxed{f(2)=5}", "5"),  # the text after the last '=' inside the box
        ("so the answer is \\boxed{x \\in [1, 2)}", "x \\in [1, 2)"),
        ("First \\boxed{3}, then \\boxed{4}", "4"),
        ("\\boxed{}", "\\boxed{}"),  # an empty box is ignored, nothing else to cut
        ("We find x = 42. \\boxed{}", "42"),  # the last sentence dropped, then the tail
        ("Earlier. The total is 42", "Earlier"),  # the value's own sentence dropped
        ("The final answer is: 7", "7"),
        ("\\boxed{a}{b}", "a"),  # brace matching from the box on
        ("So 12 is the answer.", "So 12"),  # what precedes "is the answer", whole
        ("\\boxed{1", "\\boxed{1"),  # unterminated: no box
    ],
)
def test_released_extraction(response, extracted):
  assert released_answer(response) == extracted


@pytest.mark.parametrize(
    "answer, hendrycks, prm800k",
    [
        ("\\frac12", "\\frac{1}{2}", "1/2"),
        ("\\text{Sunday}", "Sunday", "sun"),  # 'day' is a unit word, removed inside words
        ("\\frac{a+b}{c}", "\\frac{a+b}{c}", "a+b/c"),  # compound fractions lose grouping
        ("\\frac{1}{\\frac{2}{3}}", "\\frac{1}{\\frac{2}{3}}", "1/ 2/3"),  # read (1/2)/3
        ("7 3/4", "\\frac{73}{4}", "7+3/4"),  # MATH's clean-up reads 73/4
        ("2.99999999", "2.99999999", "3"),
        ("2,999.99999999", "2,999.99999999", "2999"),  # int() truncates after the comma strip
        ("x = 3", "3", "x = 3"),
        ("5\\text{ cm}^2", "5", "5 ^2"),
        ("2 million", "2million", "2 *10^6"),
    ],
)
def test_released_normalisers(answer, hendrycks, prm800k):
  assert hendrycks_normalize(answer) == hendrycks
  assert prm800k_normalize(answer) == prm800k


@pytest.mark.parametrize(
    "response, truth, score, counter",
    [
        ("\\boxed{1011_2}", "1011", 1.0, "match_tolerant"),  # base subscript dropped
        ("\\boxed{10^6}", "12", 1.0, "match_tolerant"),  # sympy reads ^ as XOR
        ("\\boxed{x_1}", "5", 0.0, "grader_exception"),  # '_' with no number before it
        ("\\boxed{(2, 3.0001)}", "(2, 3)", 1.0, "match_tolerant"),
        ("\\boxed{[1, 5]}", "[1, 5)", 1.0, "match_tolerant"),  # brackets stripped
        ("\\boxed{\\frac{6}{14}}", "\\frac{3}{7}", 0.0, "wrong"),  # unreduced plain fraction
        ("\\boxed{\\{3, 2, 1\\}}", "\\{1, 2, 3\\}", 0.0, "wrong"),  # sets compared in order
        ("\\boxed{5 apples}", "5", 0.0, "wrong"),
        ("\\boxed{5 feet}", "5", 1.0, "match_prm800k"),
        ("no digits here", "5", 0.0, "wrong"),
        ("", "5", 0.0, "no_answer"),
    ],
)
def test_released_quirks(response, truth, score, counter):
  result = score_released_math(response, truth)
  assert (result.score, result.counters) == (score, {counter: 1})


def test_released_never_runs_answer_text_as_code(tmp_path, pool):
  marker = tmp_path / "ran"
  payloads = [
      f"\\boxed{{__import__('os').system('touch {marker}')}}",
      f"\\boxed{{exec(\"open('{marker}', 'w')\")}}",
      "\\boxed{eval(chr(49))}",  # the released grader evaluates this to 1 and accepts it
      "\\boxed{S(chr(49))}",
      "\\boxed{(1).__class__}",
  ]
  scores, stats = grade_with_stats(
      "math", payloads, ["1"] * len(payloads), pool=pool, mode="released"
  )
  assert scores.tolist() == [0.0] * len(payloads)
  assert set(stats.statuses) == {"ok"}
  assert not marker.exists()


@pytest.mark.parametrize(
    "text, value",
    [
        ("2*3.14", 6.28),
        ("2^3", 1),  # Python's XOR, as eval would
        ("-1*3.14, 2", (-3.14, 2)),
        ("  (1+2)*3", 9),
        ("{1*3.14}", {3.14}),
    ],
)
def test_literal_arithmetic_matches_python(text, value):
  assert literal_arithmetic(text) == value == eval(text.strip())


@pytest.mark.parametrize(
    "text", ["abs(-3)", "x + 1", "(1).real", "'a' * 3", "2**100000", "[1] * 3", "1 < 2"]
)
def test_literal_arithmetic_refuses_anything_else(text):
  with pytest.raises((UnsafeExpression, SyntaxError)):
    literal_arithmetic(text)


@pytest.mark.parametrize("text", ["sqrt(2)*pi", "x**2 + y", "Rational(1, 3)", "gamma(5)", "2 * E"])
def test_guarded_parse_lets_mathematics_through(text):
  guarded_parse(text)


@pytest.mark.parametrize(
    "text", ["eval(chr(49))", "sympify(x)", "S(y)", "x.evalf()", "__import__", "'1'", "open(3)"]
)
def test_guarded_parse_refuses_code(text):
  with pytest.raises(UnsafeExpression):
    guarded_parse(text)


def test_released_pi_attempts_use_both_values():
  assert score_released_math("\\boxed{6.28}", "2\\pi").score == 1.0  # 2 * 3.14
  assert score_released_math(f"\\boxed{{{2 * math.pi:.6f}}}", "2\\pi").score == 1.0
  assert score_released_math("\\boxed{6.3}", "2\\pi").score == 0.0


@pytest.mark.parametrize("score_fn", sorted(MATH_GRADERS.items()), ids=lambda item: item[0])
@pytest.mark.parametrize("args", [(b"\\boxed{1}", "1"), ("\\boxed{1}", 1)])
def test_every_mode_refuses_non_text_inputs_by_name(score_fn, args):
  with pytest.raises(TypeError, match="needs str response and ground truth"):
    score_fn[1](*args)
