r"""The device check's measurements and its report (driven by `device_check.sh`; see there).

Subcommands, each run in its own process by the driver, each writing one JSON file:

  env      the platform and card; on a GPU run, no GPU visible is an error (with the install hint)
  sampler  prime_jax's sampler alone (no transformers), `decode_bounds.MODEL` in --dtype compute:
           tokens/s, model FLOP utilisation and HBM bandwidth utilisation against the card's peaks
  update   the PRIME update step (`update_step.run_step`, 97.7M model) in --dtype: tokens/s and MFU
  memory   one PRIME update step of a small model, then `jax.devices()[0].memory_stats()`'s
           peak_bytes_in_use beside the planner's estimate (`prime_jax.memory_plan.plan`) for the
           same shapes. On a GPU the stats must exist; on the CPU they do not, and say so.
  compile  the seconds to trace, lower and compile a run's update step and sampler (built by
           `prime_jax.compile_check`, from shapes) on this device, for a config file: where a run's
           first step goes. XLA_FLAGS (e.g. --xla_gpu_autotune_level=0) apply as usual
  report   the markdown report from the JSON files and the driver's step log

MFU = achieved model FLOP/s / the card's dense bf16 peak (CARDS below). On --cpu runs there is no
spec peak: the "peak" is this machine's measured bf16 matmul rate, and the report says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

# Dense (no sparsity) bf16 tensor-core peak and HBM bandwidth, from NVIDIA's datasheets:
# H100 / H200: "NVIDIA H100 Tensor Core GPU" and "NVIDIA H200 Tensor Core GPU" datasheets (SXM form
# factor; the datasheets quote 1,979 TFLOP/s bf16 *with sparsity*, half of it dense). A100: "NVIDIA
# A100 Tensor Core GPU" datasheet (312 TFLOP/s bf16 dense; 1,555 GB/s for 40GB, 2,039 GB/s for
# 80GB SXM). H100 PCIe: 1,513 TFLOP/s with sparsity -> 756 dense, 2.0 TB/s.
# (substring of device_kind, name, bf16 dense FLOP/s, HBM bytes/s, memory_plan hardware name)
CARDS = (
    ("H200", "H200 SXM", 989e12, 4.8e12, "H200"),
    ("H100 PCIe", "H100 PCIe", 756e12, 2.0e12, "H100"),
    ("H100", "H100 SXM", 989e12, 3.35e12, "H100"),
    ("A100-SXM4-80GB", "A100 80GB SXM", 312e12, 2.039e12, "A100-80G"),
    ("A100", "A100 40GB", 312e12, 1.555e12, "A100-40G"),
)


def card_spec(device_kind: str) -> dict:
  """The CARDS row whose key occurs in `device_kind`; a card not in the table is an error."""
  for key, name, flops, bandwidth, planner in CARDS:
    if key.lower() in device_kind.lower():
      return dict(name=name, peak_flops=flops, hbm_bytes_s=bandwidth, planner=planner)
  raise SystemExit(
      f"device_check: card {device_kind!r} is not in CARDS (experiments/benchmarks/"
      "device_check.py): add its dense bf16 peak and HBM bandwidth from its datasheet"
  )


def sanitize(device_kind: str) -> str:
  """A file name from a device_kind: 'NVIDIA H200' -> 'nvidia_h200'."""
  return re.sub(r"[^a-z0-9]+", "_", device_kind.lower()).strip("_") or "unknown"


def _peak(args) -> tuple[float, float, str]:
  """(peak FLOP/s, peak bytes/s, where they come from) for this run."""
  import jax

  kind = jax.devices()[0].device_kind
  if args.cpu:
    import jax.numpy as jnp
    from machine import matmul_rates, memory_bandwidth

    flops = matmul_rates(1024, 1024, 1024, dtype=jnp.bfloat16)[0]
    return flops, memory_bandwidth(), "measured on this CPU (bf16 1024^3 matmul; not a spec)"
  spec = card_spec(kind)
  return spec["peak_flops"], spec["hbm_bytes_s"], f"{spec['name']} datasheet (dense bf16)"


def _write(path: str, data: dict):
  with open(path, "w") as f:
    json.dump(data, f, indent=1)
  print(json.dumps(data, indent=1))


def cmd_env(args):
  import jax

  device = jax.devices()[0]
  data = dict(
      jax=jax.__version__,
      platform=device.platform,
      device_kind=device.device_kind,
      card=sanitize(device.device_kind),
      num_devices=jax.device_count(),
      devices=[str(d) for d in jax.devices()],
  )
  if not args.cpu:
    if device.platform != "gpu":
      raise SystemExit(
          f"device_check env: no GPU visible (jax.devices()[0].platform = {device.platform!r}, "
          f"jax {jax.__version__}). Install the CUDA build into the repository's .venv, e.g. "
          f'.venv/bin/pip install "jax[cuda12]=={jax.__version__}", or run with --cpu.'
      )
    data.update(card_spec(device.device_kind))
  _write(args.json, data)


def cmd_sampler(args):
  import jax
  import numpy as np

  from decode_bounds import MODEL, step_bytes, step_flops
  from prime_jax.models import init_params
  from prime_jax.sampling import SamplingConfig, sample

  config = dataclasses.replace(MODEL, dtype=args.dtype)
  params = init_params(config, jax.random.key(0))
  b, p, t = args.batch, args.prompt, args.new_tokens
  prompts = np.random.default_rng(0).integers(3, config.vocab_size, (b, p)).astype(np.int32)
  valid = np.ones((b, p), bool)
  settings = SamplingConfig(max_new_tokens=t, temperature=1.0, attention=args.attention)

  def run():
    out = sample(params, prompts, valid, jax.random.key(0), model_config=config, config=settings)
    return out.lengths

  start = time.perf_counter()
  lengths = jax.device_get(jax.block_until_ready(run()))
  first_s = time.perf_counter() - start
  if int(lengths.min()) != t:
    raise SystemExit(f"device_check sampler: rows stopped early (min length {lengths.min()})")
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  wall = min(times)
  peak, bandwidth, source = _peak(args)
  # Decode dominates: every new token is one decode step at a mean filled length of p + t/2.
  flops = t * step_flops(config, b, p + t // 2) + 2 * config.num_params * b * p
  nbytes = t * step_bytes(config, b, p + t // 2)
  _write(
      args.json,
      dict(
          model=f"{config.num_params / 1e6:.1f}M params, {args.dtype} compute, f32 params",
          batch=b,
          prompt=p,
          new_tokens=t,
          attention=args.attention,
          first_call_s=first_s,
          best_s=wall,
          tokens_per_s=b * t / wall,
          model_tflops_per_s=flops / wall / 1e12,
          mfu=flops / wall / peak,
          hbm_utilisation=nbytes / wall / bandwidth,
          peak_source=source,
      ),
  )


def _update_args(args, mode_dtype: str) -> argparse.Namespace:
  return argparse.Namespace(
      vocab=args.vocab,
      hidden=args.hidden,
      layers=args.layers,
      heads=args.heads,
      kv_heads=args.kv_heads,
      head_dim=args.head_dim,
      mlp=args.mlp,
      dtype=mode_dtype,
      responses=args.responses,
      n=4,
      prompt=args.prompt,
      response=args.response,
      micro_batch=args.micro_batch,
      score_chunk=args.score_chunk,
      repeats=args.repeats,
      skip_profile=True,
  )


def cmd_update(args):
  import update_step as us
  from prime_jax.algo.update_step import forward_passes

  a = _update_args(args, args.dtype)
  model = us.model_config(a)
  r = us.run_step(a, "prime")
  units = sum(c for _, _, c in forward_passes(us.rl_config(a, "prime").rl))
  flops = units * sum(
      us.forward_flops(model, a.responses, a.prompt, a.response, a.score_chunk).values()
  )
  wall = statistics.median(w for w, _ in r["times"])
  peak, _, source = _peak(args)
  _write(
      args.json,
      dict(
          model=f"{model.num_params / 1e6:.1f}M params, {args.dtype} compute, f32 params",
          responses=a.responses,
          prompt=a.prompt,
          response=a.response,
          micro_batch=a.micro_batch,
          forward_units=units,
          compile_s=r["compile_s"],
          median_s=wall,
          tokens_per_s=a.responses * (a.prompt + a.response) / wall,
          model_tflops_per_s=flops / wall / 1e12,
          mfu=flops / wall / peak,
          peak_source=source,
      ),
  )


def cmd_memory(args):
  import jax
  import jax.numpy as jnp

  import update_step as us
  from prime_jax import memory_plan as mp

  a = _update_args(args, args.dtype)
  model = us.model_config(a)
  config = us.rl_config(a, "prime")
  config.rl.update(
      dict(batch_prompts=a.responses // a.n, max_prompt_len=a.prompt, max_new_tokens=a.response)
  )
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  device = jax.devices()[0]
  if args.cpu:
    hardware = mp.Hardware("cpu-1", "cpu", 1, 2**34)
  else:
    hardware = card_spec(device.device_kind)["planner"]
  plan = mp.plan(config, None, hardware, model, suggest=False)
  before = device.memory_stats()
  r = us.run_step(a, "prime")
  stats = device.memory_stats()
  data = dict(
      model=f"{model.num_params / 1e6:.1f}M params, {args.dtype} compute",
      responses=a.responses,
      prompt=a.prompt,
      response=a.response,
      planner_resident_bytes=plan.resident,
      planner_update_peak_bytes=plan.update_peak,
      xla_temp_bytes=r.get("xla_temp"),
      xla_args_bytes=r.get("xla_args"),
  )
  if stats is None or "peak_bytes_in_use" not in stats:
    if not args.cpu:
      raise SystemExit(
          f"device_check memory: {device.device_kind} gives no memory_stats()['peak_bytes_in_use']"
          f" (got {stats!r}): the planner cannot be checked against the device"
      )
    data["measured_peak_bytes"] = None
    data["measured_note"] = (
        f"unavailable: {device.platform} memory_stats() returned {stats!r} (the CPU client keeps "
        "no allocator statistics); compared with XLA's compiled buffers instead"
    )
  else:
    data["measured_peak_bytes"] = stats["peak_bytes_in_use"]
    data["bytes_in_use_before"] = (before or {}).get("bytes_in_use")
    data["bytes_limit"] = stats.get("bytes_limit")
    data["measured_over_planned"] = stats["peak_bytes_in_use"] / plan.update_peak
  _write(args.json, data)


# ---------------------------------------------------------------------------------------------
# The report: a pure function of the numbers.


def cmd_compile(args):
  import importlib.util

  import jax

  from prime_jax import compile_check as cc
  from prime_jax import sft
  from prime_jax.sampling import sample_jit
  from prime_jax.sharding import make_mesh
  from prime_jax.tasks import get_task
  from prime_jax.tokenizer import load_tokenizer

  spec = importlib.util.spec_from_file_location("run_config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in args.set:
    key, value = item.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    try:
      for part in parents:
        node = node[part]
      old = node[leaf]
    except (KeyError, AttributeError, TypeError):
      raise SystemExit(f"device_check compile: unknown config key {key!r} in --set {item}")
    node[leaf] = value == "True" if isinstance(old, bool) else type(old)(value)
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  if config.tokenizer:
    vocab = load_tokenizer(config.tokenizer).vocab_size
  else:  # a task that trains its own tokenizer (the built-in ones), as SFT does
    with tempfile.TemporaryDirectory() as folder:
      get_task(config.task.name).train_tokenizer(config.task, folder, config.seed)
      vocab = load_tokenizer(folder).vocab_size
  model_config = sft.model_config_for(config, vocab).replace(
      value_head=config.rl.estimator == "ppo"
  )
  mesh = make_mesh(dict(config.mesh), jax.devices()[:1])
  data = dict(
      config=os.path.relpath(args.config), overrides=args.set,
      xla_flags=os.environ.get("XLA_FLAGS", ""), device=jax.devices()[0].device_kind,
      model=f"{model_config.num_params / 1e6:.2f}M params",
  )  # fmt: skip

  def timed(name, lower):
    t0 = time.perf_counter()
    lowered = lower()
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    data[f"{name}_lower_s"], data[f"{name}_compile_s"] = t1 - t0, t2 - t1
    print(f"{name}: trace+lower {t1 - t0:.1f} s, compile {t2 - t1:.1f} s", flush=True)

  # The inputs carry their shardings, as in `compile_check`: no mesh context needed.
  if "update" in args.programs:
    inputs = cc.update_step_inputs(config, mesh, model_config)
    timed("update", lambda: cc.make_update_step(config, mesh, model_config).lower(*inputs))
  if "sampler" in args.programs:
    sample_args, static = cc.sampler_inputs(config, mesh, model_config)
    timed("sampler", lambda: sample_jit.lower(*sample_args, **static))
  _write(args.json, data)


def _gib(n) -> str:
  return "n/a" if n is None else f"{n / 2**30:.3f} GiB"


def render(card: str, env: dict, steps: list, results: dict, run_table: str = "") -> str:
  """Markdown: the card, every step's status and time, then each measurement's table.

  steps: [{"name", "status" ("ok" | "failed rc=N" | "timeout"), "seconds", "budget"}];
  results: {"sampler": {...}, "update": {...}, "memory": {...}} (missing keys are shown as not
  measured); run_table: the default run's closing before/after table, as it printed it."""
  lines = [
      f"# Device check: {card}",
      "",
      f"jax {env.get('jax', '?')}, platform {env.get('platform', '?')}, "
      f"device_kind {env.get('device_kind', '?')!r}, {env.get('num_devices', '?')} device(s).",
      "",
      "| step | status | seconds | budget s |",
      "|---|---|---:|---:|",
  ]
  for s in steps:
    lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['budget']} |")
  total = sum(s["seconds"] for s in steps)
  lines += ["", f"Total {total:.0f} s of a {sum(s['budget'] for s in steps)} s budget.", ""]
  for name, title in (("sampler", "Sampler (prime_jax alone)"), ("update", "PRIME update step")):
    r = results.get(name)
    lines += [f"## {title}", ""]
    if not r:
      lines += ["not measured (see the step's status above)", ""]
      continue
    shape = (
        f"batch {r['batch']} x prompt {r['prompt']} -> {r['new_tokens']} new tokens"
        if name == "sampler"
        else f"{r['responses']} responses x (prompt {r['prompt']} + response {r['response']})"
        f", micro-batch {r['micro_batch']}"
    )
    lines += [
        f"{r['model']}; {shape}. Peak: {r['peak_source']}.",
        "",
        "| tokens/s | model TFLOP/s | MFU |" + (" HBM utilisation |" if name == "sampler" else ""),
        "|---:|---:|---:|" + ("---:|" if name == "sampler" else ""),
        f"| {r['tokens_per_s']:,.0f} | {r['model_tflops_per_s']:.2f} | {100 * r['mfu']:.1f} % |"
        + (f" {100 * r['hbm_utilisation']:.1f} % |" if name == "sampler" else ""),
        "",
    ]
  m = results.get("memory")
  lines += ["## Planner against the device's peak memory", ""]
  if not m:
    lines += ["not measured (see the step's status above)", ""]
  else:
    measured = _gib(m["measured_peak_bytes"])
    ratio = m.get("measured_over_planned")
    lines += [
        f"{m['model']}; {m['responses']} responses x ({m['prompt']} + {m['response']}).",
        "",
        "| planner resident | planner update peak | measured peak_bytes_in_use | measured / "
        "planned | XLA temp | XLA args |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {_gib(m['planner_resident_bytes'])} | {_gib(m['planner_update_peak_bytes'])} | "
        f"{measured} | {'n/a' if ratio is None else f'{ratio:.2f}'} | "
        f"{_gib(m.get('xla_temp_bytes'))} | {_gib(m.get('xla_args_bytes'))} |",
        "",
    ]
    if m.get("measured_note"):
      lines += [f"Measured peak {m['measured_note']}.", ""]
  lines += ["## Default run (its closing before/after table)", ""]
  lines += [run_table.strip() or "no table (see the step's status above)", ""]
  return "\n".join(lines)


def cmd_report(args):
  def load(name):
    path = os.path.join(args.dir, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None

  env = load("env") or {}
  steps = []
  with open(os.path.join(args.dir, "steps.tsv")) as f:
    for line in f:
      name, status, seconds, budget = line.rstrip("\n").split("\t")
      steps.append(dict(name=name, status=status, seconds=float(seconds), budget=int(budget)))
  results = {k: load(k) for k in ("sampler", "update", "memory") if load(k)}
  card = env.get("card", "unknown")
  run_log = os.path.join(args.dir, "default_run.log")
  tail = (
      open(run_log, errors="replace").read().splitlines()[-12:] if os.path.exists(run_log) else []
  )
  run_table = "\n".join(line for line in tail if line.startswith("|"))
  text = render(card, env, steps, results, run_table)
  out = args.out or os.path.join(args.dir, f"{card}.md")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(text + "\n")
  print(text)
  print(f"wrote {out}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="cmd", required=True)
  for name in ("env", "sampler", "update", "memory", "report"):
    p = sub.add_parser(name)
    p.add_argument("--cpu", action="store_true", help="CPU run: peaks measured, not from CARDS")
    p.add_argument("--json", help="where to write this step's numbers")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--repeats", type=int, default=3)
  s = sub.choices["sampler"]
  s.add_argument("--batch", type=int, default=64)
  s.add_argument("--prompt", type=int, default=128)
  s.add_argument("--new_tokens", type=int, default=512)
  s.add_argument("--attention", default="xla")
  for name in ("update", "memory"):
    u = sub.choices[name]
    for flag, default in dict(
        vocab=32000, hidden=768, layers=12, heads=12, kv_heads=2, head_dim=64, mlp=2048,
        responses=64, prompt=128, response=512, micro_batch=16, score_chunk=256,
    ).items():  # fmt: skip
      u.add_argument(f"--{flag}", type=int, default=default)
  c = sub.add_parser("compile")
  c.add_argument("--config", default=os.path.join(HERE, "..", "configs", "arithmetic_prime.py"))
  c.add_argument("--set", action="append", default=[], help="a config override, key=value")
  c.add_argument("--programs", default="update,sampler")
  c.add_argument("--json", help="where to write this step's numbers")
  r = sub.choices["report"]
  r.add_argument("--dir", required=True, help="the folder holding the steps' JSON and steps.tsv")
  r.add_argument("--out", help="the markdown file (default DIR/<card>.md)")
  args = parser.parse_args()
  globals()[f"cmd_{args.cmd}"](args)


if __name__ == "__main__":
  main()
