"""Outcome-only RLOO on the synthetic arithmetic task: PRIME's default with the process stream off
(the variant "rloo" of experiments/configs/arithmetic.py)."""

from experiments.configs import arithmetic


def get_config():
  return arithmetic.get_config("rloo")
