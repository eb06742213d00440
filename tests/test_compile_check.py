"""The compile-only check (`python -m prime_jax.tools.plan --compile`, prime_jax/compile_check.py)
on a scaled-down multi-layer model on 8 simulated CPU devices: the run's update step and sampler
compile from shapes alone, XLA's per-device buffers are within the stated tolerance of the
memory planner's numbers in float32 and bfloat16, and a broken sharding rule fails the check.

Full-scale results (Eurus-2-7B on v5p-64 / v4-32 / 8xH100): experiments/results/
full_scale_compile.md.
"""

import json
import textwrap

from multidevice import run_with_devices
from prime_jax.compile_check import collective_stats

# The model: 3 layers, GQA (8 query heads over 2 kv heads), q/k/v biases, full remat as the
# full-scale configs; tensor parallelism 2 x FSDP 4. Sequences long enough (128 + 384 tokens) that
# activations, not weights, dominate the update step's temporaries, as at full scale.
SETUP = """
import json
from prime_jax import compile_check as cc
cc.ensure_host_devices(8)
from prime_jax import memory_plan as mp
from prime_jax.configs import base_config
from prime_jax.models import DecoderConfig

HW = mp.Hardware("cpu-8", "cpu", 8, 2 ** 34)

def model(dtype, tie):
  return DecoderConfig(vocab_size=4096, hidden_size=256, num_layers=3, num_heads=8,
                       num_kv_heads=2, head_dim=32, intermediate_size=768, qkv_bias=True,
                       tie_embeddings=tie, max_position_embeddings=1024, dtype=dtype,
                       remat="full")

def config(**rl):
  c = base_config()
  c.rl.update(dict(batch_prompts=8, n_samples=2, mini_batch=16, prm_mini_batch=16,
                   micro_batch=8, max_prompt_len=128, max_new_tokens=384, score_chunk=128,
                   sample_batch_prompts=8, norm_shards=1))
  c.rl.update(rl)
  c.mesh.update(dict(data=1, fsdp=-1, tensor=2))
  return c
"""

# Tolerances on the planner's estimate of XLA's temporaries, (plan - XLA) / XLA, from this file's
# model on XLA:CPU (2026-12-03): f32 -7 % (update step), -17 % (sampler); bf16 -27 %, -52 %.
# f32: within 25 % either way. bf16: XLA:CPU computes a bf16 program's dots and elementwise ops in
# f32 (float normalisation), so its bf16 temporaries are about the f32 program's (63 MB against
# 67 MB here) while the planner counts bf16 activations, as a TPU or GPU compiler keeps them. On
# this CPU the bf16 check can only be one-sided: the planner may not exceed XLA:CPU's bf16
# temporaries by more than 5 % (a bf16-native compiler needs no more than XLA:CPU) nor fall more
# than 60 % below them. Whether it is close on a TPU or GPU is not verified here. Arguments are
# exact shard sizes (resident states, batch, params, KV cache): 1 %.
TEMP_TOLERANCE = {"float32": (-0.25, 0.25), "bfloat16": (-0.60, 0.05)}
ARGUMENT_TOLERANCE = 0.01


def test_planner_within_tolerance_of_xla_in_f32_and_bf16():
  out = run_with_devices(SETUP + """
results = {}
for dtype, tie in (("float32", False), ("bfloat16", True)):
  report = cc.compile_check(config(), HW, model(dtype, tie), programs=("update step", "sampler"))
  results[f"{dtype},tied={tie}"] = {
      r.name: dict(temp=r.error("temp"), arguments=r.error("arguments"), xla_temp=r.temp_bytes,
                   all_gather=r.collectives["all-gather"]["count"], seconds=r.compile_s)
      for r in report.programs}
print(json.dumps(results))
""")
  results = json.loads(out.strip().splitlines()[-1])
  print(json.dumps(results, indent=1))
  assert set(results) == {"float32,tied=False", "bfloat16,tied=True"}
  for variant, programs in results.items():
    assert set(programs) == {"update step", "sampler"}, variant
    for name, r in programs.items():
      assert r["xla_temp"] > 0 and r["all_gather"] > 0, (variant, name)  # FSDP gathers weights
      assert abs(r["arguments"]) <= ARGUMENT_TOLERANCE, (variant, name, r)
      low, high = TEMP_TOLERANCE[variant.split(",")[0]]
      assert low <= r["temp"] <= high, (variant, name, r)


def test_broken_sharding_rule_fails_the_check_naming_the_program():
  """Batch rows over fsdp x tensor (8 ways) while a step has 12 rows: the planner pads and
  plans it, the update step's input sharding cannot exist, and the check says which program."""
  out = run_with_devices(SETUP + """
from prime_jax.sharding import DEFAULT_RULES
c = config(batch_prompts=6, mini_batch=12, prm_mini_batch=12, micro_batch=12)
c.sharding_rules = tuple((k, ("fsdp", "tensor") if k == "batch" else v) for k, v in DEFAULT_RULES)
mp.plan(c, None, HW, model("bfloat16", False))  # the planner alone does not notice
try:
  cc.compile_check(c, HW, model("bfloat16", False), programs=("update step",))
  print(json.dumps("compiled"))
except cc.CompileCheckError as e:
  print(json.dumps(str(e)))
""")
  message = json.loads(out.strip().splitlines()[-1])
  assert message.startswith("update step: did not lower/compile"), message
  assert "12" in message and "8" in message, message


def test_collective_stats_multiplies_scan_bodies_and_separates_unbounded_loops():
  hlo = textwrap.dedent("""\
      %inner.1 (p: (s32[], bf16[8])) -> (s32[], bf16[8]) {
        %rs = bf16[8]{0} reduce-scatter(bf16[64]{0} %y), dimensions={0}
      }
      %layers.2 (p: (s32[], f32[8])) -> (s32[], f32[8]) {
        %ag = f32[64]{0} all-gather(f32[8]{0} %x), dimensions={0}
        %w2 = (s32[], bf16[8]) while((s32[], bf16[8]) %t), condition=%c.9, body=%inner.1, backend_config={"known_trip_count":{"n":"2"}}
      }
      %decode.3 (p: (s32[], f32[8])) -> (s32[], f32[8]) {
        %ags = (f32[8]{0}, f32[32]{0}) all-gather-start(f32[8]{0} %x), dimensions={0}
        %agd = f32[32]{0} all-gather-done((f32[8]{0}, f32[32]{0}) %ags)
      }
      ENTRY %main.4 (a: f32[4]) -> f32[4] {
        %ar = f32[4]{0} all-reduce(f32[4]{0} %a), to_apply=%add
        %w = (s32[], f32[8]) while((s32[], f32[8]) %t), condition=%c.8, body=%layers.2, backend_config={"known_trip_count":{"n":"28"}}
        %d = (s32[], f32[8]) while((s32[], f32[8]) %t), condition=%c.7, body=%decode.3
      }
      """)
  stats = collective_stats(hlo)
  assert stats["all-reduce"] == dict(count=1, bytes=16, loop_count=0, loop_bytes=0)
  assert stats["all-gather"] == dict(count=28, bytes=28 * 256, loop_count=1, loop_bytes=128)
  assert stats["reduce-scatter"] == dict(count=56, bytes=56 * 16, loop_count=0, loop_bytes=0)
  assert stats["all-to-all"]["count"] == 0
