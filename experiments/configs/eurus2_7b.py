"""Full-scale experiment variants: `--config=experiments/configs/eurus2_7b.py:NAME`.

NAME is one of experiments/variants.py's VARIANTS (default "prime"), applied to the full-scale
base of experiments/configs/eurus2_7b_prime.py (Eurus-2-7B-SFT, Eurus-2-RL-Data, spec §6):

python -m prime_jax.train --config=experiments/configs/eurus2_7b.py:grpo_prime --workdir=RUN \
    --config.policy.checkpoint=/path/to/Eurus-2-7B-SFT --config.task.data_dir=DATA
"""

from experiments import variants
from experiments.configs import eurus2_7b_prime


def get_config(variant="prime"):
  return variants.apply(eurus2_7b_prime.base(), variant)
