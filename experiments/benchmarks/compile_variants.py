r"""Compile-only check of every full-scale variant (experiments/variants.py on eurus2_7b.py).

  PYTHONPATH=. python experiments/benchmarks/compile_variants.py --hardware=v5p-64 \
      [--variants=prime,rloo] [--sampler]

For each variant: `prime_jax.compile_check.compile_check` of its update step (the variant's
estimator / rl.prm_update / PRM / reference, full Eurus-2-7B shapes, the config's mesh) on as many
simulated CPU devices as the hardware has; with --sampler also the sampler of each distinct
sampling setting (n_samples). Prints a markdown table (XLA's per-device arguments and temporaries
beside the planner's, the collectives, compile seconds); exits 1 naming the variants that failed.
Results: experiments/results/full_scale_compile.md.
"""

from __future__ import annotations

import sys

from absl import app, flags

from prime_jax import compile_check as cc
from prime_jax import memory_plan as mp

flags.DEFINE_string("hardware", "v5p-64", "Slice (prime_jax.memory_plan.parse_hardware).")
flags.DEFINE_list("variants", [], "Variant names (default: all of experiments/variants.py).")
flags.DEFINE_bool("sampler", False, "Also compile the sampler of each distinct n_samples.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  hardware = mp.parse_hardware(FLAGS.hardware)
  cc.ensure_host_devices(hardware.num_devices)
  from experiments import variants
  from experiments.configs import eurus2_7b

  g = lambda n: f"{n / mp.GiB:.2f}"
  print(
      f"{hardware.name}, {hardware.num_devices} devices; GiB per device; err = plan / XLA - 1\n\n"
      "| variant | program | compile s | XLA args | XLA temp | plan temp | temp err | "
      "all-gather | all-reduce | reduce-scatter |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  )
  failed, sampled = [], set()
  for name in FLAGS.variants or variants.names():
    config = eurus2_7b.get_config(name)
    programs = ["update step"]
    if FLAGS.sampler and config.rl.n_samples not in sampled:
      programs.append("sampler")
      sampled.add(config.rl.n_samples)
    try:
      report = cc.compile_check(config, hardware, programs=tuple(programs))
    except (cc.CompileCheckError, ValueError) as e:
      failed.append(name)
      print(f"| {name} | FAILED: {str(e)[:300]} |", flush=True)
      continue
    for r in report.programs:
      c = r.collectives
      coll = lambda k: f"{c[k]['count']} / {g(c[k]['bytes'])}"
      print(
          f"| {name} | {r.name} | {r.compile_s:.0f} | {g(r.argument_bytes)} | "
          f"{g(r.temp_bytes)} | {g(r.plan_temp)} | {cc.percent_text(r.error('temp'))} | "
          f"{coll('all-gather')} | {coll('all-reduce')} | {coll('reduce-scatter')} |",
          flush=True,
      )
  if failed:
    print(f"\nfailed: {', '.join(failed)}")
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
