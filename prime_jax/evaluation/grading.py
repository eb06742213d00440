"""Scoring the responses: the answer each ability extracts, the verifier registry's grades (math
0/1, code 1 when every test passes), per-item means over the k samples."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

import numpy as np

from prime_jax import verifiers
from prime_jax.evaluation.benchmarks import ALL_TESTS, EVAL_CODE_ABILITY, EvalError
from prime_jax.verifiers import CodeConfig, SandboxConfig, get_ability, register_ability
from prime_jax.verifiers.code_grader import code_ability_kwargs
from prime_jax.verifiers.code_tests import extract_code
from prime_jax.verifiers.math_answer import extract_answer
from prime_jax.verifiers.released_math import released_answer

# ----------------------------------------------------------------------------- scoring


def extract(ability: str, response: str, math_grader: str = "strict") -> Optional[str]:
  """What the grader reads: math, the final answer as `math_grader` extracts it (strict: last
  \\boxed{}, else "answer is"; released: docs/math_grading.md); code, the last ```python block.
  None when there is none."""
  if ability == "math" and math_grader == "released":
    return released_answer(response) or None
  if ability == "math":
    return extract_answer(response)
  return extract_code(response)


def register_code_ability(
    max_tests: int = 0, isolation: str = "strict", per_test_timeout_s: float = 5.0
) -> None:
  """Registers EVAL_CODE_ABILITY: code graded in the sandbox on `max_tests` tests per item
  (0: all of them), with the given isolation (docs/verifiers.md)."""
  try:
    config = CodeConfig(
        max_tests=max_tests or ALL_TESTS,
        sandbox=SandboxConfig(isolation=isolation, per_test_timeout_s=per_test_timeout_s),
    )
  except ValueError as e:
    raise EvalError(str(e)) from None
  register_ability(EVAL_CODE_ABILITY, replace=True, **code_ability_kwargs(config))


def _code_timeout(ground_truths: Sequence[str]) -> float:
  """Per-item limit for code: every test of the largest suite at its full per-test time."""
  score_fn = get_ability(EVAL_CODE_ABILITY).score_fn
  config = score_fn.keywords["config"]
  most = max((len(json.loads(t).get("inputs", ())) for t in ground_truths), default=1)
  return (
      min(most, config.max_tests) * config.sandbox.per_test_timeout_s + config.sandbox.setup_grace_s
  )


@dataclasses.dataclass
class Scores:
  """Per-sample grades [items, k]: `scores` (0/1), `raw` (the verifier's score: code, the
  fraction of tests passed), `statuses` (grading status) and the grading stats' numbers."""

  scores: np.ndarray
  raw: np.ndarray
  statuses: list[list[str]]
  stats: dict


def score_items(
    ability: str,
    responses: Sequence[Sequence[str]],
    ground_truths: Sequence[str],
    *,
    pool=None,
    math_grader: str = "strict",
) -> Scores:
  """Grades every sample of every item with the verifier registry: math by the "math" ability in
  mode `math_grader`, code by EVAL_CODE_ABILITY (registered with its defaults if not yet), a code sample scoring 1
  only when all of its tests pass."""
  k = len(responses[0]) if responses else 0
  if any(len(r) != k for r in responses):
    raise ValueError("every item needs the same number of responses")
  flat = [r for rs in responses for r in rs]
  truths = [t for t in ground_truths for _ in range(k)]
  if ability == "math":
    raw, stats = verifiers.grade_with_stats("math", flat, truths, pool=pool, mode=math_grader)
    scores = raw
  elif ability == "code":
    if EVAL_CODE_ABILITY not in verifiers.registered_abilities():
      register_code_ability()
    raw, stats = verifiers.grade_with_stats(
        EVAL_CODE_ABILITY, flat, truths, pool=pool, timeout_s=_code_timeout(ground_truths)
    )
    scores = (raw >= 1.0).astype(np.float32)
  else:
    raise EvalError(f"no grading for ability {ability!r}")
  shape = (len(responses), k)
  statuses = [list(stats.statuses[i * k : (i + 1) * k]) for i in range(len(responses))]
  numbers = {key.split("/", 2)[2]: value for key, value in stats.as_dict().items()}
  numbers["errors"] = list(stats.errors)
  return Scores(
      np.asarray(scores, np.float64).reshape(shape),
      np.asarray(raw, np.float64).reshape(shape),
      statuses,
      numbers,
  )
