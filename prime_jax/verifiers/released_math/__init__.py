"""`released` math grading: the PRIME grader's decisions as released, quirks included.

    from prime_jax.verifiers import grade
    scores = grade("math", responses, ground_truths, mode="released")

What it does and where it departs from the released code (it never evaluates model text as
Python): docs/math_grading.md.
"""

from prime_jax.verifiers.released_math.extraction import released_answer
from prime_jax.verifiers.released_math.grader import released_match, score_released_math

__all__ = ["released_answer", "released_match", "score_released_math"]
