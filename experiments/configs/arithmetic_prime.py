"""The embedded default: PRIME on the synthetic arithmetic task, tiny model, 2-core CPU.

python -m prime_jax.train --config=experiments/configs/arithmetic_prime.py --workdir=DIR
"""

from prime_jax.configs import arithmetic_config


def get_config():
  return arithmetic_config().lock()
