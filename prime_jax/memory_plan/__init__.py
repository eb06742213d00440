"""Per-device memory plan of a PRIME run from shapes alone (`prime_jax.memory_plan.report`)."""

from prime_jax.memory_plan.report import *  # noqa: F401,F403
from prime_jax.memory_plan.report import _hardware, _ref_dtype, _rules  # noqa: F401
