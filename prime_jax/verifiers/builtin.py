"""Registers the built-in abilities: 'math' (modes 'strict' and 'released') and 'code'."""

from prime_jax.verifiers.code_grader import DEFAULT_CODE_CONFIG, CodeConfig, code_ability_kwargs
from prime_jax.verifiers.math_grader import score_math
from prime_jax.verifiers.registry import register_ability
from prime_jax.verifiers.released_math import score_released_math

MATH_TIMEOUT_S = 10.0  # per item; generous for sympy on hard expressions, bounds hangs
# strict: prime-jax's grader; released: the labels Eurus-2-7B-PRIME was trained on
# (docs/math_grading.md).
MATH_GRADERS = {"strict": score_math, "released": score_released_math}
DEFAULT_MATH_GRADER = "strict"


def set_math_grader(mode: str) -> None:
  """Make `mode` the 'math' ability's default (what `grade("math", ...)` uses without a mode).

  The trainer calls this with `config.task.math_grader`, so rollouts, SFT probes and evals of
  one run are all graded alike.
  """
  if mode not in MATH_GRADERS:
    raise ValueError(f"unknown math grader {mode!r}; known: {', '.join(MATH_GRADERS)}")
  register_ability(
      "math", MATH_GRADERS[mode], timeout_s=MATH_TIMEOUT_S, modes=MATH_GRADERS, replace=True
  )


def register_builtin_abilities(code_config: CodeConfig = DEFAULT_CODE_CONFIG) -> None:
  """(Re-)register 'math' (default mode 'strict') and 'code'; a CodeConfig changes how code is
  run."""
  set_math_grader(DEFAULT_MATH_GRADER)
  register_ability("code", replace=True, **code_ability_kwargs(code_config))


register_builtin_abilities()
