"""The sampler benchmarks' model and what a decode step cannot beat on this machine.

A decode step of R rows at filled length F (slots a row attends to) runs 2 FLOPs per weight and
row in matmuls plus 4 * heads * head_dim * F per row and layer in attention, and must read every
weight and the filled part of the KV cache once. Its bounds are those FLOPs at a measured matmul
rate and those bytes at the measured memory bandwidth (`machine.memory_bandwidth`).
"""

from __future__ import annotations

from prime_jax.models import DecoderConfig

# Qwen2 architecture (q/k/v biases, GQA, SwiGLU, tied embeddings as in the small Qwen2.5 models):
# 30.9M params, f32.
MODEL = DecoderConfig(
    vocab_size=16384,
    hidden_size=512,
    num_layers=8,
    num_heads=8,
    num_kv_heads=2,
    head_dim=64,
    intermediate_size=1408,
    qkv_bias=True,
    tie_embeddings=True,
    rope_theta=1e6,
    max_position_embeddings=4096,
    model_type="qwen2",
)


def matmul_weights(config: DecoderConfig) -> int:
  """Weights a token multiplies (the embedding table counts once, as the tied head, or not at all
  when untied: a lookup, not a matmul)."""
  return config.num_params - (
      0 if config.tie_embeddings else config.vocab_size * config.hidden_size
  )


def step_flops(config: DecoderConfig, rows: int, filled: int) -> float:
  """FLOPs of one decode step: matmuls plus attention scores and weighted values."""
  attention = 4 * config.num_heads * config.head_dim * filled * config.num_layers
  return rows * (2 * matmul_weights(config) + attention)


def kv_bytes(config: DecoderConfig, rows: int, filled: int, itemsize: int = 4) -> int:
  """Bytes of the filled KV cache (k and v, every layer)."""
  return 2 * config.num_layers * rows * filled * config.num_kv_heads * config.head_dim * itemsize


def step_bytes(config: DecoderConfig, rows: int, filled: int, itemsize: int = 4) -> int:
  """Bytes one decode step must read: every weight once and the filled KV cache once."""
  return config.num_params * itemsize + kv_bytes(config, rows, filled, itemsize)


def bound_line(step_s: float, flops: float, peak: float, nbytes: float, bandwidth: float) -> str:
  """'<compute bound> | <read bound>' with the step's ratio to each."""
  compute, read = flops / peak, nbytes / bandwidth
  return (
      f"matmul bound {compute * 1e3:.2f} ms ({flops / 1e9:.2f} GFLOP at {peak / 1e9:.0f} GFLOP/s;"
      f" step = {step_s / compute:.1f}x) | read bound {read * 1e3:.2f} ms ({nbytes / 1e6:.0f} MB"
      f" at {bandwidth / 1e9:.1f} GB/s; step = {step_s / read:.1f}x)"
  )


def dots_step_seconds(config: DecoderConfig, rows: int, *, steps: int = 32, repeats: int = 3):
  """Best wall seconds per step of `dots_step_program(config, rows, steps)` over `repeats` calls:
  the floor of a decode step at XLA's own rate for its dots, i.e. what the step would take if
  attention, norms, sampling and the loop's bookkeeping were free."""
  import jax  # pylint: disable=import-outside-toplevel
  from machine import best_wall  # pylint: disable=import-outside-toplevel

  run, args = dots_step_program(config, rows, steps)
  jax.block_until_ready(run(*args))  # compile
  return best_wall(lambda: run(*args), repeats) / steps


def dots_step_program(config: DecoderConfig, rows: int, steps: int):
  """(jitted fn, its args): a compiled loop of `steps` steps that run only a decode step's
  matmuls for `rows` rows.

  Per layer: q, k, v from the residual x, o from q, then gate and up from x and down from their
  product, each weight a random f32 buffer of its own (so weights stream from memory, as in a
  step); then the head as [hidden, vocab] (the faster layout for XLA's CPU dots). Besides the dots
  there are only the residual adds and the gate * up product.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  h, q, kv = config.hidden_size, config.num_heads * config.head_dim, config.num_kv_heads
  shapes = dict(
      q=(h, q),
      k=(h, kv * config.head_dim),
      v=(h, kv * config.head_dim),
      o=(q, h),
      gate=(h, config.intermediate_size),
      up=(h, config.intermediate_size),
      down=(config.intermediate_size, h),
  )
  keys = iter(jax.random.split(jax.random.key(0), len(shapes) * config.num_layers + 2))
  normal = lambda shape: 0.1 * jax.random.normal(next(keys), shape, jnp.float32) / shape[0] ** 0.5
  layers = [{n: normal(s) for n, s in shapes.items()} for _ in range(config.num_layers)]
  head = normal((h, config.vocab_size))
  x0 = jax.random.normal(next(keys), (rows, h), jnp.float32)

  @jax.jit
  def run(x, layers, head):
    def one_step(_, x):
      for w in layers:
        # k and v feed the residual through one column each, so they are not dropped as unused.
        kv_use = (x @ w["k"])[:, :1] + (x @ w["v"])[:, :1]
        x = x + (x @ w["q"]) @ w["o"] + kv_use
        x = x + ((x @ w["gate"]) * (x @ w["up"])) @ w["down"]
      return x + 1e-6 * (x @ head)[:, :h]

    return jax.lax.fori_loop(0, steps, one_step, x)

  return run, (x0, layers, head)
