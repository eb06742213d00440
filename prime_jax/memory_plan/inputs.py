"""What a memory plan is of: the slice (per-device HBM and how a slice name counts devices) and
the model's shapes (presets of known HF configs, a checkpoint's config.json, or
config.policy.init)."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

from prime_jax.models import read_hf_config
from prime_jax.models.config import DecoderConfig

GiB = 2**30

# ---------------------------------------------------------------------------------------------
# Hardware: per-device HBM and how a slice name counts devices.
# ---------------------------------------------------------------------------------------------

# TPU generation -> (HBM per chip in GiB, name units per chip). v4 / v5p names count TensorCores
# (2 per chip, one JAX device per chip: megacore), v5e / v6e names count chips (cloud.google.com
# /tpu/docs: "v5p-32 = 32 TensorCores, 16 chips"; v5p 95 GB, v4 32 GiB, v5e 16 GB, v6e 32 GB).
TPU_TYPES = {"v4": (32, 2), "v5p": (95, 2), "v5e": (16, 1), "v5litepod": (16, 1), "v6e": (32, 1)}
# GPU model -> HBM in GiB (what the device reports, approximately).
GPU_TYPES = {"H100": 80, "H200": 141, "A100-40G": 40, "A100-80G": 80}
# JAX on GPU preallocates this fraction of the memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION).
GPU_DEFAULT_MEM_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Hardware:
  """A slice: `num_devices` JAX devices of `hbm_bytes` each, of which `usable_fraction` is the
  allocator's (JAX on GPU preallocates 75 % unless XLA_PYTHON_CLIENT_MEM_FRACTION says else)."""

  name: str
  platform: str
  num_devices: int
  hbm_bytes: int
  usable_fraction: float = 1.0

  @property
  def usable_bytes(self) -> int:
    return int(self.hbm_bytes * self.usable_fraction)


def hardware_names() -> str:
  return (
      "TPU " + ", ".join(f"{k}-N" for k in TPU_TYPES) + " (v4/v5p: N TensorCores = N/2 "
      "chips; v5e/v6e: N chips); GPU Nx" + "|".join(GPU_TYPES) + "; cpu-N"
  )


def parse_hardware(name: str, *, mem_fraction: Optional[float] = None) -> Hardware:
  """'v5p-64' (32 chips), 'v4-32' (16 chips), 'v5e-256', 'v6e-8', '8xH100', '8xA100-80G',
  'H200' (one GPU), 'cpu-8' (simulated host devices, host memory split between them)."""
  text = name.strip()
  m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text, re.IGNORECASE)
  if m:
    kind, count = m.group(1).lower(), int(m.group(2))
    hbm, per_chip = TPU_TYPES[kind]
    if count % per_chip or count == 0:
      raise ValueError(
          f"{name}: a {kind} slice name counts TensorCores ({per_chip} per chip); "
          f"{count} is not a whole number of chips"
      )
    return Hardware(
        text, "tpu", count // per_chip, hbm * GiB, 1.0 if mem_fraction is None else mem_fraction
    )
  m = re.fullmatch(r"(?:(\d+)\s*x\s*)?([A-Za-z0-9-]+)", text)
  if m and m.group(2).upper() in GPU_TYPES:
    count = int(m.group(1) or 1)
    frac = GPU_DEFAULT_MEM_FRACTION if mem_fraction is None else mem_fraction
    return Hardware(text, "gpu", count, GPU_TYPES[m.group(2).upper()] * GiB, frac)
  if m and m.group(2).upper() == "A100":
    raise ValueError(f"{name}: say A100-40G or A100-80G")
  m = re.fullmatch(r"cpu-(\d+)", text, re.IGNORECASE)
  if m:
    count = int(m.group(1))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Hardware(
        text, "cpu", count, total // count, 1.0 if mem_fraction is None else mem_fraction
    )
  raise ValueError(f"unknown hardware {name!r}; known: " + hardware_names())


# ---------------------------------------------------------------------------------------------
# Model shapes: presets of known HF configs, a checkpoint's config.json, or config.policy.init.
# ---------------------------------------------------------------------------------------------

# Qwen2.5-Math-7B's config.json (Eurus-2-7B-SFT / -PRIME are fine-tunes of it, same shapes):
# Qwen2ForCausalLM, hidden 3584, 28 layers, 28 heads / 4 kv heads (head_dim 128), intermediate
# 18944, vocab 152064, untied embeddings, q/k/v biases, rope_theta 10000, a 4096-token context.
MODEL_PRESETS = {
    "qwen2.5-math-7b": DecoderConfig(
        vocab_size=152064,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        intermediate_size=18944,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        qkv_bias=True,
        tie_embeddings=False,
        max_position_embeddings=4096,
        model_type="qwen2",
    ),
}
MODEL_ALIASES = {
    "eurus-2-7b-sft": "qwen2.5-math-7b",
    "eurus-2-7b-prime": "qwen2.5-math-7b",
    "qwen2.5-math-7b-instruct": "qwen2.5-math-7b",
}


def _preset(name: str) -> Optional[DecoderConfig]:
  key = name.strip().lower()
  return MODEL_PRESETS.get(MODEL_ALIASES.get(key, key))


def resolve_model_config(config, model: Optional[str] = None) -> tuple[DecoderConfig, str]:
  """(DecoderConfig with the run's dtype / remat / value head, where its shapes came from).

  Order: the `model` preset; config.json of `config.policy.checkpoint` when that directory exists;
  a preset named like the checkpoint directory (a placeholder path such as /path/to/Eurus-2-7B-SFT);
  `config.policy.init` (its vocab_size must be set: 0 means "the tokenizer's").
  """
  overrides = dict(
      dtype=config.policy.dtype, remat=config.policy.remat, value_head=config.rl.estimator == "ppo"
  )
  if model:
    preset = _preset(model)
    if preset is None:
      raise ValueError(
          f"unknown --model {model!r}; known: "
          + ", ".join(sorted(MODEL_PRESETS) + sorted(MODEL_ALIASES))
      )
    return preset.replace(**overrides), f"preset {model}"
  checkpoint = config.policy.checkpoint
  if checkpoint and os.path.isfile(os.path.join(checkpoint, "config.json")):

    return read_hf_config(checkpoint, **overrides), f"{checkpoint}/config.json"
  if checkpoint:
    preset = _preset(os.path.basename(os.path.normpath(checkpoint)))
    if preset is not None:
      return preset.replace(**overrides), (
          f"preset for {os.path.basename(checkpoint)} " f"({checkpoint} not found)"
      )
    raise ValueError(
        f"config.policy.checkpoint={checkpoint!r} has no config.json here; give "
        f"--model (one of {', '.join(sorted(MODEL_PRESETS))})"
    )
  init = dict(config.policy.init)
  if not init.get("vocab_size"):
    raise ValueError(
        "config.policy.init.vocab_size is 0 (the tokenizer's size, unknown to the "
        "planner): set --config.policy.init.vocab_size=N or give --model"
    )
  return DecoderConfig(**init, **overrides), "config.policy.init"
