"""The compiled decode loop updates the KV cache in place: XLA's optimized HLO, read directly.

Inside the sampler's while loop (its body and everything the body calls), the only instructions
that produce a buffer as large as one layer's cache array must be the cache itself passing through
(parameters, tuple elements, bitcasts) and one in-place token write per layer and k / v (a fusion
whose root is a scatter or dynamic-update-slice). A copy, transpose, zero-fill, or a slice of the
whole cache per step would show up as any other instruction of that size. The sampler before the
in-place cache (nn.scan over a stacked [layers, ...] cache) fails this check: on this model it
flags 21 instructions in that loop (copies, transposes, a zero-fill broadcast, cache slices).
"""

import re

import jax
import numpy as np
import pytest

from prime_jax import hlo_text
from prime_jax.models import DecoderConfig, init_params
from prime_jax.sampling import SamplingConfig, sample_args, sample_jit

# Weights and activations far below one cache array, so anything cache-sized is the cache.
MODEL = DecoderConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=512,
)
ROWS, PROMPT = 6, 16


def decode_loop_offenders(settings: SamplingConfig) -> tuple[list[str], int, int]:
  """(cache-sized instructions in the decode loop that are not in-place writes, in-place writes,
  bytes of one cache array) of the compiled sampler."""
  params = init_params(MODEL, jax.random.key(0))
  tokens = np.ones((ROWS // settings.n_samples, PROMPT), np.int32)
  args, static = sample_args(
      params,
      tokens,
      tokens > 0,
      jax.random.key(0),
      model_config=MODEL,
      config=settings,
      rules=(),
  )
  cache_array = args[-1].cache[0][0]
  hlo = sample_jit.lower(*args, **static).compile().as_text()
  computations, entry = hlo_text.parse(hlo)
  cache_shape = "f32[" + ",".join(map(str, cache_array.shape)) + "]"
  loops = [i for i in computations[entry] if i.opcode == "while" and cache_shape in i.shape]
  assert len(loops) == 1, [i.name for i in loops]  # the decode loop carries the cache
  body = re.search(r"body=%([\w.\-]+)", loops[0].text).group(1)
  offenders, writes = [], 0
  for name in hlo_text.reachable(computations, body):
    for inst in computations[name]:
      if inst.array_bytes() < cache_array.nbytes:
        continue
      if inst.opcode in ("parameter", "get-tuple-element", "bitcast"):
        continue
      if inst.opcode == "fusion":
        root = computations[inst.called()[0]][-1]
        if root.opcode in ("scatter", "dynamic-update-slice"):
          writes += 1
          continue
      if inst.opcode in ("scatter", "dynamic-update-slice") and name.startswith("wrapped_"):
        continue  # the root of a write fusion counted above
      offenders.append(f"{name}: {inst.opcode} {inst.shape}")
  return offenders, writes, cache_array.nbytes


@pytest.mark.parametrize(
    "settings",
    [
        # 112 + 16 = 128 slots read in 4 blocks of 32 under a dynamic trip count; sampled.
        SamplingConfig(max_new_tokens=112, temperature=1.0, attention_block=32, n_samples=2),
        # One block spanning the whole cache; greedy with EOS.
        SamplingConfig(max_new_tokens=112, temperature=0.0, attention_block=128, eos_ids=(3,)),
    ],
    ids=["blocked", "one_block"],
)
def test_decode_loop_copies_no_cache_sized_buffer(settings):
  offenders, writes, _ = decode_loop_offenders(settings)
  assert not offenders, offenders
  assert writes == 2 * MODEL.num_layers  # one token write per layer into k and into v
