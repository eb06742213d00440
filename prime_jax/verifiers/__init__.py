"""Outcome verifiers (the paper's r_o(y)): math answer grading and sandboxed code execution.

    scores = grade("math", responses, ground_truths)            # float32 [N] in [0, 1]
    scores = grade("math", responses, ground_truths, mode="released")  # as PRIME labelled
    scores, stats = grade_with_stats("code", responses, ground_truths, timeout_s=30)

Tasks register their own abilities with `register_ability(name, score_fn, ...)`. To run code
with other limits or an explicit isolation opt-down, call
`register_builtin_abilities(CodeConfig(sandbox=SandboxConfig(...)))`.
See docs/verifiers.md for what the sandbox does and does not protect against, and
docs/math_grading.md for the math grader's two modes.
"""

from prime_jax.verifiers.builtin import (
    DEFAULT_MATH_GRADER,
    MATH_GRADERS,
    register_builtin_abilities,
    set_math_grader,
)
from prime_jax.verifiers.code_grader import CodeConfig
from prime_jax.verifiers.grading import (
    GradeStats,
    default_pool,
    grade,
    grade_with_stats,
    set_default_pool,
)
from prime_jax.verifiers.pool import WorkerPool
from prime_jax.verifiers.registry import (
    Ability,
    ItemResult,
    get_ability,
    register_ability,
    registered_abilities,
)
from prime_jax.verifiers.sandbox import SandboxConfig, SandboxUnavailableError

__all__ = [
    "Ability",
    "CodeConfig",
    "DEFAULT_MATH_GRADER",
    "MATH_GRADERS",
    "GradeStats",
    "ItemResult",
    "SandboxConfig",
    "SandboxUnavailableError",
    "WorkerPool",
    "default_pool",
    "get_ability",
    "grade",
    "grade_with_stats",
    "register_ability",
    "register_builtin_abilities",
    "registered_abilities",
    "set_default_pool",
    "set_math_grader",
]
