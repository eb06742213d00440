"""Small-scale variants on the credit-assignment task: `arithmetic_credit.py:NAME`.

NAME is one of experiments/variants.py's VARIANTS (default "prime"), applied to
`prime_jax.configs.arithmetic_credit_config()` (the arithmetic task with 6-8 step chains and free
operand order, where dense credit should matter); `:oracle` is the ceiling any PRM could reach:

python -m prime_jax.train --config=experiments/configs/arithmetic_credit.py:oracle --workdir=DIR
"""

from experiments import variants
from prime_jax.configs import arithmetic_credit_config


def get_config(variant="prime"):
  return variants.apply(arithmetic_credit_config(), variant)
