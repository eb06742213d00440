r"""Per-device memory plan of a run on a slice you may not have: shapes only, nothing allocated.

  python -m prime_jax.tools.plan --config=experiments/configs/NAME.py --hardware=v5p-64 \
      [--mesh=data=1,fsdp=-1,tensor=4] [--model=qwen2.5-math-7b] [--mem_fraction=0.9] \
      [--config.rl.micro_batch=4 ...]

Prints a markdown table of what one device holds (params, gradients and AdamW states of policy
and PRM, the frozen reference, the KV cache of a sampling round, estimates of the update step's
activations and logits) and whether the peak fits the hardware's memory, with what headroom, and
if not which config flags would make it fit. Hardware: v4-N / v5p-N (N TensorCores, N/2 chips),
v5e-N / v6e-N (N chips), NxH100, NxH200, NxA100-40G, NxA100-80G, cpu-N. The mesh defaults to the
config's `mesh`; the model's shapes come from --model, else the checkpoint's config.json, else a
preset named like the checkpoint directory, else `config.policy.init`. See prime_jax/memory_plan/.

--compile also lowers and compiles the run's programs (the update step, the sampler's prefill and
decode loop, the trainer -> sampler reshard) from shapes only on a mesh of as many simulated CPU
devices as the hardware has: the tool sets the CPU device count itself (`jax_num_cpu_devices`,
what --xla_force_host_platform_device_count sets) before jax starts. It prints XLA's per-device
memory analysis beside the planner's numbers, the collectives and the compile times
(prime_jax/compile_check.py). The 7B update step compiled in ~30 s with ~1.2 GB of host memory
on 8 simulated devices (experiments/results/full_scale_compile.md); --compile_layers=N compiles N
of the model's layers at full width (the rest unchanged) where a full program would not fit.
"""

from __future__ import annotations

import os

# The planner needs no accelerator (everything is jax.eval_shape): never grab a TPU / GPU that a
# running job may be holding.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from prime_jax import memory_plan  # noqa: E402
from prime_jax import compile_check  # noqa: E402
from prime_jax.sharding import parse_mesh  # noqa: E402
from prime_jax.tools import _cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (get_config()); overrides as --config.rl.micro_batch=4."
)
flags.DEFINE_string(
    "hardware",
    None,
    "Slice: v5p-64, v4-32, v5e-256, v6e-8, 8xH100, 8xA100-80G, " "8xH200, cpu-8, ...",
)
flags.DEFINE_string(
    "mesh",
    None,
    "Mesh axes, e.g. data=1,fsdp=-1,tensor=4 (one may be -1); " "default: the config's mesh.",
)
flags.DEFINE_string(
    "model",
    None,
    "Model preset instead of a checkpoint's config.json: "
    + ", ".join(sorted(memory_plan.MODEL_PRESETS) + sorted(memory_plan.MODEL_ALIASES)),
)
flags.DEFINE_float(
    "mem_fraction",
    None,
    "Usable fraction of each device's memory (default 1 on TPU, "
    "0.75 on GPU: JAX's default XLA_PYTHON_CLIENT_MEM_FRACTION).",
)
flags.DEFINE_bool(
    "compile",
    False,
    "Also compile the update step, sampler and reshard on as many simulated CPU devices as "
    "--hardware has (set by the tool itself) and report XLA's memory analysis, collectives and "
    "compile times beside the plan.",
)
flags.DEFINE_integer(
    "compile_layers",
    None,
    "With --compile: the model's layer count for the compiled programs (full width, the same "
    "shardings); default all layers.",
)
flags.DEFINE_list(
    "compile_programs",
    ["update step", "sampler", "reshard"],
    "With --compile: which programs ('update step', 'sampler', 'reshard').",
)
FLAGS = flags.FLAGS


def plan_from_flags() -> memory_plan.Plan:
  config = _CONFIG.value
  if config is None:
    raise _cli.InputError("--config is required")
  try:
    hardware = memory_plan.parse_hardware(FLAGS.hardware, mem_fraction=FLAGS.mem_fraction)
    mesh = parse_mesh(FLAGS.mesh) if FLAGS.mesh else None
    model_config, source = memory_plan.resolve_model_config(config, FLAGS.model)
    return memory_plan.plan(config, mesh, hardware, model_config, model_source=source)
  except ValueError as e:
    raise _cli.InputError(str(e)) from None


def compile_from_flags() -> str:
  """The plan's table, then the compile check's (`--compile`)."""
  config = _CONFIG.value
  if config is None:
    raise _cli.InputError("--config is required")
  try:
    hardware = memory_plan.parse_hardware(FLAGS.hardware, mem_fraction=FLAGS.mem_fraction)
    compile_check.ensure_host_devices(hardware.num_devices)
    model_config, source = memory_plan.resolve_model_config(config, FLAGS.model)
    if FLAGS.compile_layers:
      model_config = model_config.replace(num_layers=FLAGS.compile_layers)
      source += f", {FLAGS.compile_layers} layers compiled"
    mesh = parse_mesh(FLAGS.mesh) if FLAGS.mesh else None
    report = compile_check.compile_check(
        config,
        hardware,
        model_config,
        mesh,
        model_source=source,
        programs=tuple(p.strip() for p in FLAGS.compile_programs),
    )
  except (ValueError, compile_check.CompileCheckError) as e:
    raise _cli.InputError(f"compile check failed: {e}") from None
  return report.plan.to_markdown() + "\n\n" + report.to_markdown()


def main(argv):
  if FLAGS.compile:
    _cli.run_main(argv, lambda: print(compile_from_flags()))
  else:
    _cli.run_main(argv, lambda: print(plan_from_flags().to_markdown()))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "hardware"])
  app.run(main)
