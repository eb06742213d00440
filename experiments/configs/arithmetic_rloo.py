"""Outcome-only RLOO on the synthetic arithmetic task: PRIME's default with the process stream off."""

from prime_jax.configs import arithmetic_config


def get_config():
    config = arithmetic_config()
    config.rl.coef_proc = 0.0
    return config.lock()
