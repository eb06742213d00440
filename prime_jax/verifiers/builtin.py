"""Registers the built-in abilities: 'math' and 'code' (default configs)."""

from prime_jax.verifiers.code_grader import DEFAULT_CODE_CONFIG, CodeConfig, code_ability_kwargs
from prime_jax.verifiers.math_grader import score_math
from prime_jax.verifiers.registry import register_ability

MATH_TIMEOUT_S = 10.0  # per item; generous for sympy on hard expressions, bounds hangs


def register_builtin_abilities(code_config: CodeConfig = DEFAULT_CODE_CONFIG) -> None:
  """(Re-)register 'math' and 'code'; call with a CodeConfig to change how code is run."""
  register_ability("math", score_math, timeout_s=MATH_TIMEOUT_S, replace=True)
  register_ability("code", replace=True, **code_ability_kwargs(code_config))


register_builtin_abilities()
