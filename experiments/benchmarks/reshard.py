r"""Trainer -> sampler weight movement: the reshard before each rollout and the sampler's layer split.

On 8 simulated CPU devices (a 4-way FSDP x 2-way tensor mesh) with the 30.9M Qwen2-shaped model:

  reshard  `reshard_params` from the training layout (DEFAULT_RULES: weights split over fsdp and
           tensor) to the decode layout (DECODE_RULES: whole over fsdp, split over tensor), what
           the trainer runs before every rollout when config.sampler_rules = DECODE_RULES.
  split    `split_layers`: the stacked [layers, ...] weights copied into one array per layer, what
           each sampler call does once before its decode loop (a slice of a stacked weight in the
           loop would be copied at every token).

Bound: the bytes each device must receive that it does not already hold (split: every layer
weight), copied (read + written) at the measured memory bandwidth; all simulated devices share
this host's memory, so the bound sums over them. Prints both and the ratio.

  .venv/bin/python experiments/benchmarks/reshard.py
"""

from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from decode_bounds import MODEL  # noqa: E402
from machine import best_wall, memory_bandwidth  # noqa: E402
from prime_jax.models import init_params  # noqa: E402
from prime_jax.models.decoding import split_layers  # noqa: E402
from prime_jax.sharding import (  # noqa: E402
    DECODE_RULES,
    DEFAULT_RULES,
    make_mesh,
    param_shardings,
    reshard_params,
)


def moved_bytes(params, target_shardings) -> int:
  """Bytes the devices receive in a reshard: per device, its target shard minus the part of it
  the device already holds."""

  def volume(index, shape):
    return math.prod(len(range(*s.indices(n))) for s, n in zip(index, shape))

  def overlap(a, b, shape):
    sizes = []
    for sa, sb, n in zip(a, b, shape):
      ra, rb = range(*sa.indices(n)), range(*sb.indices(n))
      sizes.append(max(0, min(ra.stop, rb.stop) - max(ra.start, rb.start)))
    return math.prod(sizes)

  total = 0
  for leaf, target in zip(jax.tree.leaves(params), jax.tree.leaves(target_shardings)):
    held = leaf.sharding.devices_indices_map(leaf.shape)
    for device, index in target.devices_indices_map(leaf.shape).items():
      new = volume(index, leaf.shape) - overlap(index, held[device], leaf.shape)
      total += new * leaf.dtype.itemsize
  return total


def main():
  print(
      f"CPU: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}; "
      f"jax {jax.__version__}, {jax.device_count()} simulated devices"
  )
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  params = jax.device_put(
      init_params(MODEL, jax.random.key(0)), param_shardings(MODEL, mesh, DEFAULT_RULES)
  )
  bandwidth = memory_bandwidth()
  print(
      f"model {MODEL.num_params / 1e6:.1f}M f32 on mesh fsdp=4 x tensor=2; {bandwidth / 1e9:.1f}"
      " GB/s memory"
  )

  def line(name, seconds, nbytes):
    bound = 2 * nbytes / bandwidth
    print(
        f"{name:>8}: {seconds * 1e3:7.2f} ms | bound {bound * 1e3:.2f} ms ({nbytes / 1e6:.0f} MB"
        f" received over all devices, read + written) | {seconds / bound:.1f}x",
        flush=True,
    )

  targets = param_shardings(MODEL, mesh, DECODE_RULES)
  reshard = lambda: reshard_params(params, MODEL, mesh, DECODE_RULES)
  reshard()
  line("reshard", best_wall(reshard, 5), moved_bytes(params, targets))

  decode_params = reshard()
  split = jax.jit(lambda p: split_layers(p, MODEL))
  split(decode_params)
  layer_bytes = sum(
      sum(s.data.nbytes for s in leaf.addressable_shards)
      for leaf in jax.tree.leaves(decode_params["layers"])
  )
  line("split", best_wall(lambda: split(decode_params), 5), layer_bytes)
  print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
