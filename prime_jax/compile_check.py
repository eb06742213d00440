r"""Compile-only check of a run's programs at full scale: lowered and compiled, nothing allocated.

`compile_check(config, hardware, model_config)` builds a mesh of `hardware.num_devices` host CPU
devices (the process must have that many: `ensure_host_devices(n)` before jax starts its
backend; `python -m prime_jax.tools.plan --compile` does it) and compiles, from
`jax.ShapeDtypeStruct` inputs only, the programs a training run jits, built by the run's own
code paths:

* "update step": `make_update_step(config, mesh, model_config)` (the `rl.prm_update` mode and
  estimator of the config), its inputs laid out by `update_step_shardings`;
* "sampler": `prime_jax.sampling.sample_jit` (every prompt's prefill, then the decode loop to the
  budget, one program) in the sampler's layout (`sampler_rules(config)`), on
  `sample_batch_prompts x n_samples` rows, as `sample` calls it;
* "reshard": the trainer -> sampler reshard of the policy params (`reshard_params`: a jitted
  identity with the sampler's out_shardings); nothing to move when the two rule tables agree.

Each `ProgramReport` holds XLA's per-device `memory_analysis()` (arguments, outputs, aliased,
temporaries), the collectives of the compiled HLO (`collective_stats`: all-gather /
reduce-scatter / all-reduce / ... counts and bytes, loop bodies multiplied by their known trip
count), the compile time, and the memory planner's numbers for the same program
(`prime_jax.memory_plan.plan`). A sharding rule the programs cannot honour (e.g. two dimensions of
one array on one mesh axis) fails here with a `CompileCheckError` naming the program.

What differs on TPU / GPU (the CPU compiler is the only one available here): XLA:CPU fuses less,
keeps its own layouts, and runs bf16 dots through f32 copies of their operands, so its
temporaries for bf16 compute overstate what a TPU / GPU needs; the collectives come from the SPMD
partitioner, which is the same on every backend (their async / combined forms are not).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import types
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from prime_jax import hlo_text
from prime_jax import memory_plan as mp
from prime_jax import rollout_engine, sampling
from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer, update_step_shardings
from prime_jax.algo.update_step import make_update_step
from prime_jax.config_checks import ref_options
from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import init_params
from prime_jax.sampling import sample_jit
from prime_jax.sharding import make_mesh, param_shardings, sampler_rules, training_rules
from prime_jax.train_state import create_train_state

PROGRAMS = ("update step", "sampler", "reshard")
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


class CompileCheckError(RuntimeError):
  """A program of the run did not lower or compile (the message names it and why)."""


def ensure_host_devices(n: int) -> None:
  """Gives this process `n` host CPU devices (`jax_num_cpu_devices`, the config form of
  `--xla_force_host_platform_device_count`). Must run before jax starts its backend; raises
  CompileCheckError when it already runs with another count."""
  from jax._src import xla_bridge

  if xla_bridge.backends_are_initialized():
    if jax.device_count("cpu") != n:
      raise CompileCheckError(
          f"jax already runs with {jax.device_count('cpu')} CPU devices; the check needs {n}: "
          "call ensure_host_devices before any jax computation"
      )
    return
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", n)


# ---------------------------------------------------------------------------------------------
# What a compiled program does: its memory and its collectives.
# ---------------------------------------------------------------------------------------------


def collective_stats(hlo: str) -> dict:
  """{kind: {"count", "bytes", "loop_count", "loop_bytes"}} of the collectives in compiled HLO.

  Ops inside a while loop with a known trip count (scans: layers, micro-batches) count that many
  times; ops inside a loop of data-dependent length (the sampler's decode loop) go to
  `loop_count` / `loop_bytes`, per iteration. Bytes are each op's result size on one device.
  """
  computations, entry = hlo_text.parse(hlo)
  stats = {k: dict(count=0, bytes=0, loop_count=0, loop_bytes=0) for k in COLLECTIVES}

  def walk(name: str, mult: int, unbounded: bool, depth: int = 0):
    if depth > 50 or name not in computations:
      return
    for inst in computations[name]:
      kind = inst.opcode.removesuffix("-start")
      if kind in stats and not inst.opcode.endswith("-done"):
        prefix = "loop_" if unbounded else ""
        stats[kind][prefix + "count"] += mult
        stats[kind][prefix + "bytes"] += mult * inst.result_bytes()
      trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', inst.text)
      body = re.search(r"\bbody=%([\w.\-]+)", inst.text)
      for called in inst.called():
        if inst.opcode == "while" and body and called == body.group(1):
          n = int(trip.group(1)) if trip else 1
          walk(called, mult * n, unbounded or trip is None, depth + 1)
        elif inst.opcode != "while":
          walk(called, mult, unbounded, depth + 1)

  walk(entry, 1, False)
  return stats


@dataclasses.dataclass
class ProgramReport:
  """One compiled program: XLA's per-device bytes, its collectives, the planner's numbers."""

  name: str
  compile_s: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  collectives: dict
  plan_arguments: int  # the planner's bytes for what XLA counts as arguments
  plan_temp: int  # the planner's transient estimate for what XLA counts as temporaries
  note: str = ""

  @property
  def peak_bytes(self) -> int:
    """Arguments + outputs not aliased to (donated) arguments + temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def plan_peak(self) -> int:
    return self.plan_arguments + self.plan_temp

  def error(self, field: str = "temp") -> float:
    """The planner's relative error against XLA: plan / xla - 1 for "temp", "arguments" or
    "peak" (plan arguments + temp against `peak_bytes`)."""
    plan, xla = {
        "temp": (self.plan_temp, self.temp_bytes),
        "arguments": (self.plan_arguments, self.argument_bytes),
        "peak": (self.plan_peak, self.peak_bytes),
    }[field]
    return plan / xla - 1 if xla else float("nan")


def _compile(name: str, build) -> tuple:
  """(compiled, seconds, extra) of `build()` = (lowered, *extra): the inputs' shardings, the
  trace and the compile of program `name`; any failure is a CompileCheckError naming it."""
  start = time.perf_counter()
  try:
    lowered, *extra = build()
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    raise CompileCheckError(f"{name}: did not lower/compile: {type(e).__name__}: {e}") from e
  return compiled, time.perf_counter() - start, extra


def _report(name, compiled, compile_s, plan_arguments, plan_temp, note="") -> ProgramReport:
  m = compiled.memory_analysis()
  return ProgramReport(
      name=name,
      compile_s=compile_s,
      argument_bytes=int(m.argument_size_in_bytes),
      output_bytes=int(m.output_size_in_bytes),
      alias_bytes=int(m.alias_size_in_bytes),
      temp_bytes=int(m.temp_size_in_bytes),
      collectives=collective_stats(compiled.as_text()),
      plan_arguments=int(plan_arguments),
      plan_temp=int(plan_temp),
      note=note,
  )


# ---------------------------------------------------------------------------------------------
# The run's programs from abstract inputs.
# ---------------------------------------------------------------------------------------------


def _abstract(tree, shardings):
  """ShapeDtypeStructs of `tree` (abstract values) placed on `shardings` (a matching tree)."""
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
  )


def update_step_inputs(config, mesh, model_config: DecoderConfig) -> tuple:
  """Abstract (policy_state, prm_state, ref_params, batch, rng) of `make_update_step`'s program,
  laid out by `update_step_shardings`: the batch of `RolloutBatch.update_inputs()`."""
  rl = config.rl
  shardings = update_step_shardings(config, mesh, model_config)
  params = lambda: init_params(model_config, jax.random.key(0))
  state = lambda opt: jax.eval_shape(lambda: create_train_state(params(), opt))
  policy = _abstract(state(policy_optimizer(rl)), shardings["policy"])
  prm = None if shardings["prm"] is None else _abstract(state(prm_optimizer(rl)), shardings["prm"])
  ref = None
  if shardings["ref"] is not None:
    ref_dtype = ref_options(config).param_dtype
    ref = _abstract(
        jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, ref_dtype), jax.eval_shape(params)
        ),
        shardings["ref"],
    )
  n, p, t = rl.batch_prompts * rl.n_samples, rl.max_prompt_len, rl.max_new_tokens
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings["batch"])
  batch = dict(
      prompt_tokens=spec((n, p), jnp.int32),
      prompt_mask=spec((n, p), jnp.bool_),
      response_tokens=spec((n, t), jnp.int32),
      response_mask=spec((n, t), jnp.bool_),
      old_logp=spec((n, t), jnp.float32),
      acc=spec((n,), jnp.float32),
  )
  if rl.process_reward == "oracle":
    batch["process_rewards"] = spec((n, t), jnp.float32)
  rng = jax.eval_shape(lambda: jax.random.key(0))
  return policy, prm, ref, batch, jax.ShapeDtypeStruct(rng.shape, rng.dtype)


def sampler_inputs(config, mesh, model_config: DecoderConfig):
  """(positional args, static kwargs) of `sample_jit` as the run calls it through `sample`: the
  policy params in the sampler's layout, `sample_batch_prompts` prompts of `max_prompt_len`,
  a fresh `DecodeState` of prompts x n_samples rows (`state_shapes`) placed as `new_state`
  places it."""
  rl = config.rl
  rules = sampler_rules(config)
  params = _abstract(
      jax.eval_shape(lambda: init_params(model_config, jax.random.key(0))),
      param_shardings(model_config, mesh, rules),
  )
  # The token ids of EOS / padding do not change the program: a stand-in for the tokenizer.
  tokenizer = types.SimpleNamespace(eos_ids=(0,), pad_id=0)
  settings = rollout_engine.sampling_config(rl, tokenizer)
  b = rl.sample_batch_prompts or rl.batch_prompts
  width = sampling.bucket_length(rl.max_prompt_len, settings.prompt_buckets)
  rows = b * settings.n_samples
  state = sampling.state_shapes(model_config, settings, rows, width)
  state = _abstract(state, sampling.state_shardings(mesh, state, rules, settings))
  context = jax.ShapeDtypeStruct(
      (b, width), jnp.int32, sharding=sampling.row_sharding(mesh, (b, width), rules)
  )
  lengths = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sampling.row_sharding(mesh, (b,), rules))
  key = jax.eval_shape(lambda: jax.random.key(0))
  args = (params, context, lengths, jax.ShapeDtypeStruct(key.shape, key.dtype), state)
  return args, sampling.static_args(model_config, settings, mesh, rules)


def percent_text(x: float) -> str:
  """A relative error as signed whole percent ("+12 %"), "n/a" for NaN."""
  return "n/a" if math.isnan(x) else f"{100 * x:+.0f} %"


def _arg_bytes(tree) -> int:
  """Per-device bytes of abstract arguments (PRNG keys as their uint32 data; unplaced ones
  replicated)."""
  total = 0
  for a in jax.tree_util.tree_leaves(tree):
    shape, dtype = a.shape, a.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      shape, dtype = jax.eval_shape(jax.random.key_data, a).shape, jnp.uint32
    if a.sharding is None:
      total += math.prod(shape) * jnp.dtype(dtype).itemsize
    else:
      spec = tuple(a.sharding.spec) + (None,) * (len(shape) - len(a.sharding.spec))
      total += mp.shard_bytes(shape, dtype, a.sharding.update(spec=PartitionSpec(*spec)))
  return total


# ---------------------------------------------------------------------------------------------
# The check.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CheckReport:
  """The compiled programs' reports, the plan they are compared with, notes."""

  plan: mp.Plan
  programs: list
  notes: list = dataclasses.field(default_factory=list)

  def program(self, name: str) -> ProgramReport:
    return next(p for p in self.programs if p.name == name)

  def to_markdown(self) -> str:
    g = lambda n: f"{n / mp.GiB:.2f}"
    lines = [
        "| program | compile s | XLA args | XLA out | aliased | XLA temp | XLA peak | plan args "
        "| plan temp | plan peak | temp err | peak err |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in self.programs:
      lines.append(
          f"| {r.name} | {r.compile_s:.1f} | {g(r.argument_bytes)} | {g(r.output_bytes)} | "
          f"{g(r.alias_bytes)} | {g(r.temp_bytes)} | {g(r.peak_bytes)} | {g(r.plan_arguments)} | "
          f"{g(r.plan_temp)} | {g(r.plan_peak)} | {percent_text(r.error('temp'))} | "
          f"{percent_text(r.error('peak'))} |"
      )
    lines += [
        "",
        "GiB per device; err = plan / XLA - 1; peak = arguments + outputs not aliased + "
        "temporaries. Collectives per call, count / GiB per device (+ per decode step: inside "
        "the sampler's data-dependent loop):",
        "",
    ]
    lines += ["| program | " + " | ".join(COLLECTIVES) + " |", "|---|" + "---:|" * len(COLLECTIVES)]
    for r in self.programs:
      cells = []
      for kind in COLLECTIVES:
        c = r.collectives[kind]
        cell = f"{c['count']} / {g(c['bytes'])}" if c["count"] else "0"
        if c["loop_count"]:
          cell += f" + {c['loop_count']} / {g(c['loop_bytes'])} per decode step"
        cells.append(cell)
      lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    notes = [f"- {r.name}: {r.note}" for r in self.programs if r.note] + [
        f"- {n}" for n in self.notes
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def compile_check(
    config,
    hardware,
    model_config: Optional[DecoderConfig] = None,
    mesh_axes=None,
    *,
    model_source: str = "",
    programs=PROGRAMS,
) -> CheckReport:
  """Compiles the run's programs on a mesh of this process's CPU devices (as many as the
  hardware has; see `ensure_host_devices`) from abstract inputs; returns their reports beside
  the planner's numbers. Raises CompileCheckError naming the program that failed."""
  unknown = set(programs) - set(PROGRAMS)
  if unknown:
    raise CompileCheckError(f"unknown programs {sorted(unknown)}; known: {', '.join(PROGRAMS)}")
  hw = mp.as_hardware(hardware)
  if model_config is None:
    model_config, model_source = mp.resolve_model_config(config)
  if jax.device_count() != hw.num_devices:
    raise CompileCheckError(
        f"{hw.name} has {hw.num_devices} devices, this process {jax.device_count()}: call "
        f"ensure_host_devices({hw.num_devices}) first"
    )
  plan = mp.plan(config, mesh_axes, hw, model_config, model_source=model_source)
  mesh = make_mesh(plan.mesh)
  reports, notes = [], []
  train, sample = training_rules(config), sampler_rules(config)
  resident = lambda *keys: sum(plan.bytes(k) for k in keys if plan.has(k))

  def update_step():
    inputs = update_step_inputs(config, mesh, model_config)
    lowered = make_update_step(config, mesh, model_config).lower(*inputs)
    return lowered, _arg_bytes(inputs[3])

  def sampler():
    args, static = sampler_inputs(config, mesh, model_config)
    small = _arg_bytes([a for a in jax.tree_util.tree_leaves(args[1:]) if a.ndim < 4])
    return sample_jit.lower(*args, **static), small

  def reshard():
    params = _abstract(
        jax.eval_shape(lambda: init_params(model_config, jax.random.key(0))),
        param_shardings(model_config, mesh, train),
    )
    out = param_shardings(model_config, mesh, sample)
    return (jax.jit(lambda p: p, out_shardings=out).lower(params),)

  rl = config.rl
  if "update step" in programs:
    compiled, seconds, (batch_bytes,) = _compile("update step", update_step)
    reports.append(
        _report(
            "update step",
            compiled,
            seconds,
            resident("policy_params", "policy_opt", "prm_params", "prm_opt", "ref") + batch_bytes,
            plan.total("update") - plan.bytes("step_inputs"),
            f"rl.estimator={rl.estimator}, rl.prm_update={rl.prm_update}, "
            f"rl.old_logp={rl.old_logp}",
        )
    )
  if "sampler" in programs:
    compiled, seconds, (small,) = _compile("sampler", sampler)
    reports.append(
        _report(
            "sampler",
            compiled,
            seconds,
            (resident("sampler_params") or resident("policy_params"))
            + plan.bytes("kv_cache")
            + small,
            plan.total("sampling") - resident("sampler_params", "kv_cache"),
            f"prefill + decode loop, {rl.sample_batch_prompts or rl.batch_prompts} prompts x "
            f"{rl.n_samples} samples",
        )
    )
  if "reshard" in programs and train == sample:
    notes.append(
        "reshard: sampler_rules = training rules, so `reshard_params` returns the same arrays "
        "(no program, nothing moves)"
    )
  elif "reshard" in programs:
    compiled, seconds, _ = _compile("reshard", reshard)
    reports.append(
        _report(
            "reshard",
            compiled,
            seconds,
            resident("policy_params"),
            resident("sampler_params"),
            "training -> sampler layout (device to device)",
        )
    )
  return CheckReport(plan, reports, notes)
