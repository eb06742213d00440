"""Configuration of the one decoder family (LLaMA / Qwen2 style) that serves policy, reference and PRM."""

from __future__ import annotations

import dataclasses
from typing import Optional

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling, as in Hugging Face `rope_scaling` / `rope_parameters`.

  `rope_type="linear"` divides every frequency by `factor`; `"llama3"` is the piecewise
  scaling of LLaMA-3.1 (long wavelengths divided by `factor`, short ones kept, smooth between).
  """

  rope_type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(
          f"unsupported rope type {self.rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}"
      )


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and numerics of a causal decoder.

  Params are always stored in `param_dtype` (float32 by default); matmuls run in `dtype`
  (`"bfloat16"` or `"float32"`). Norms, softmax and RoPE are computed in float32 regardless.
  `remat` is the activation-checkpoint policy of each layer: `"none"`, `"full"` (recompute
  everything in the backward pass) or `"dots"` (save matmul outputs without a batch dimension,
  i.e. `checkpoint_dots_with_no_batch_dims`). `value_head` adds a scalar head on the final hidden
  states (PPO's learned value baseline); it is not part of HF checkpoints.
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: Optional[RopeScaling] = None
  qkv_bias: bool = False
  tie_embeddings: bool = False
  max_position_embeddings: int = 4096
  model_type: str = "qwen2"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  value_head: bool = False

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"unsupported model_type {self.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}"
      )
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
      )
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")

  def replace(self, **kw) -> "DecoderConfig":
    return dataclasses.replace(self, **kw)

  @property
  def num_params(self) -> int:
    """Number of parameters (embeddings counted once when tied)."""
    h, d = self.hidden_size, self.head_dim
    attn = h * d * (self.num_heads * 2 + self.num_kv_heads * 2)
    if self.qkv_bias:
      attn += d * (self.num_heads + 2 * self.num_kv_heads)
    layer = attn + 3 * h * self.intermediate_size + 2 * h
    head = 0 if self.tie_embeddings else self.vocab_size * h
    value = h + 1 if self.value_head else 0
    return self.vocab_size * h + self.num_layers * layer + h + head + value
