"""The evaluation harness (`prime_jax.evaluation.harness`)."""

from prime_jax.evaluation.harness import *  # noqa: F401,F403
from prime_jax.evaluation.harness import _positive_int  # noqa: F401
