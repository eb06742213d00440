"""Table 1's outcome-only baseline at full scale: eurus2_7b.py:rloo (PRIME's run, coef_proc=0)."""

from experiments.configs import eurus2_7b


def get_config():
  return eurus2_7b.get_config("rloo")
