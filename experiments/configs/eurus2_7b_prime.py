"""The full-scale run: PRIME on Eurus-2-7B-SFT with Eurus-2-RL-Data, the spec's defaults (§6).

python -m prime_jax.train --config=experiments/configs/eurus2_7b_prime.py --workdir=RUN \
    --config.policy.checkpoint=/path/to/Eurus-2-7B-SFT --config.task.data_dir=DATA
python -m prime_jax.tools.plan --config=experiments/configs/eurus2_7b_prime.py --hardware=v5p-64

The checkpoint path is a placeholder (the memory planner recognises its name as Qwen2.5-Math-7B's
shapes). bf16 compute and full remat: with float32 compute or without remat the update step's
activations for 4096-token sequences do not fit any slice (see experiments/results/memory_plan.md).
`base()` is the base of every full-scale variant (experiments/configs/eurus2_7b.py:NAME, the
names in experiments/variants.py); this file's config is the variant "prime".
"""

from prime_jax.configs import base_config


def base():
  """The full-scale base config, unlocked."""
  c = base_config()
  c.policy.checkpoint = "/path/to/Eurus-2-7B-SFT"
  c.policy.dtype = "bfloat16"  # matmuls in bf16; params and AdamW moments stay float32
  c.policy.remat = "full"
  c.task.name = "eurus"
  c.task.math_grader = "released"  # the paper's labels (docs/math_grading.md)
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  return c


def get_config():
  return base().lock()
