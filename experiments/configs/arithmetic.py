"""Small-scale experiment variants: `--config=experiments/configs/arithmetic.py:NAME`.

NAME is one of experiments/variants.py's VARIANTS (default "prime"), applied to the embedded
default `prime_jax.configs.arithmetic_config()` (a tiny model on the synthetic task, a CPU):

python -m prime_jax.train --config=experiments/configs/arithmetic.py:prm_offline --workdir=DIR
"""

from experiments import variants
from prime_jax.configs import arithmetic_config


def get_config(variant="prime"):
  return variants.apply(arithmetic_config(), variant)
