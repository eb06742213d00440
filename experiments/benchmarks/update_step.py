r"""Update-step speed and memory: the PRIME step against the outcome-only RLOO step, on this CPU.

Builds a 97.7M-parameter Qwen2-shaped decoder (random f32 weights; policy, PRM and reference start
equal) and a batch of N responses (n per prompt; every prompt and response full length, so each
counted token is a real one; padding would cost the same compute). For each step mode it compiles
`prime_jax.algo.update_step.make_update_step` in a fresh process and prints: compile time, step
time after a warm-up call (median of a few calls; wall clock and process CPU time), response and
total tokens/s, the model FLOPs the step performs (counted from the config, below), the achieved
FLOP rate against this machine's f32 matmul peak measured in the same run, the process's peak RSS,
and XLA's memory analysis of the compiled step. It then profiles one call of each step with
`jax.profiler` (XLA:CPU op time by kind of op and by pass) and times the step's pieces as separate
jitted functions on one micro-batch, to show where the time goes.

Two fractions of peak are printed. "wall": FLOP/s over the best wall-clock FLOP/s of a big matmul.
"cpu": FLOPs per CPU-second of the step over FLOPs per CPU-second of the matmul; other jobs on the
machine stretch wall times but hardly CPU times, so on a shared machine trust this one.

FLOP counting (matmuls only). One forward of `token_logprobs` over [N, P+T]:
  layers:    2 * (q,k,v,o + gate,up,down weights) per token, for all N(P+T) tokens;
  attention: 4 * S * heads * head_dim per token per layer (QK^T and PV over all S = P+T key slots:
             the causal mask is applied, not skipped);
  lm head:   2 * hidden * vocab per *response* token (prompt slots are never projected).
A backward pass costs 2x its forward, so forward+backward = 3 forwards. Passes per step:
  outcome-only (coef_proc=0):  [policy old-logp fwd (recompute only)] + policy fwd+bwd
  PRIME prm_update=after:      [policy old-logp fwd] + reference fwd + PRM fwd+bwd + policy fwd+bwd
  PRIME prm_update=before:     the above + a PRM re-score fwd.
Not counted: the lm head's recomputation in the backward (its chunks are rematerialised, +1 head
forward per forward+backward), softmax/entropy/norm elementwise work, and AdamW.

With old_logp=sampler the step gets old log-probs from the batch; this script fills them with
-log(vocab), which is what a random-init model gives (logits ~ 0), so PPO ratios stay near 1.

  .venv/bin/python experiments/benchmarks/update_step.py [--responses 8 --prompt 32 --response 96]
      [--modes prime,rloo,prime_recompute,rloo_recompute] [--skip_profile] [--skip_pieces]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import glob
import gzip
import json
import math
import multiprocessing
import os
import re
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from machine import matmul_peak, matmul_rates, timed_calls  # noqa: E402
from prime_jax.algo import implicit_rewards, ppo_clip_loss, prm_ce_loss  # noqa: E402
from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer  # noqa: E402
from prime_jax.algo.update_step import forward_passes, make_update_step  # noqa: E402
from prime_jax.config_checks import uses_prm  # noqa: E402
from prime_jax.configs import base_config  # noqa: E402
from prime_jax.models import Decoder, DecoderConfig, init_params, positions_from_mask  # noqa: E402
from prime_jax.scoring import token_logprobs  # noqa: E402
from prime_jax.train_state import apply_gradients, create_train_state  # noqa: E402

# Step modes: overrides of config.rl. Each PRIME mode is compared with the outcome-only mode that
# gets its old log-probs the same way.
MODES = {
    "prime": dict(prm_update="after", old_logp="sampler"),
    "rloo": dict(coef_proc=0.0, old_logp="sampler"),
    "prime_recompute": dict(prm_update="after", old_logp="recompute"),
    "rloo_recompute": dict(coef_proc=0.0, old_logp="recompute"),
    "prime_before": dict(prm_update="before", old_logp="sampler"),
}
BASELINE_OF = {"prime": "rloo", "prime_recompute": "rloo_recompute", "prime_before": "rloo"}
GB = 1e9


def model_config(args) -> DecoderConfig:
  return DecoderConfig(
      vocab_size=args.vocab,
      hidden_size=args.hidden,
      num_layers=args.layers,
      num_heads=args.heads,
      num_kv_heads=args.kv_heads,
      head_dim=args.head_dim,
      intermediate_size=args.mlp,
      qkv_bias=True,
      tie_embeddings=True,
      rope_theta=1e6,
      max_position_embeddings=max(4096, args.prompt + args.response),
      dtype=args.dtype,
  )


def rl_config(args, mode: str):
  config = base_config()
  config.rl.update(
      dict(
          n_samples=args.n,
          mini_batch=args.responses,
          prm_mini_batch=args.responses,
          micro_batch=args.micro_batch,
          norm_shards=1,
          score_chunk=args.score_chunk,
      )
  )
  config.rl.update(MODES[mode])
  return config


def forward_flops(
    model: DecoderConfig, rows: int, prompt: int, response: int, chunk: int
) -> dict[str, float]:
  """Matmul FLOPs of one `token_logprobs` forward over [rows, prompt + response], by part."""
  seq = prompt + response
  h, d = model.hidden_size, model.head_dim
  weights = h * d * (2 * model.num_heads + 2 * model.num_kv_heads) + 3 * h * model.intermediate_size
  chunk = min(chunk, response)
  scored = -(-response // chunk) * chunk  # the last chunk is padded to full size
  return {
      "layers": 2.0 * weights * rows * seq * model.num_layers,
      "attention": 4.0 * seq * model.num_heads * d * rows * seq * model.num_layers,
      "lm_head": 2.0 * h * model.vocab_size * rows * scored,
  }


def make_batch(args, vocab: int, with_old_logp: bool) -> dict:
  rng = np.random.default_rng(0)
  rows, p, t = args.responses, args.prompt, args.response
  prompts = rng.integers(3, vocab, (rows // args.n, p)).repeat(args.n, axis=0)
  acc = (rng.random(rows) < 0.5).astype(np.float32)
  acc[:: args.n], acc[1 :: args.n] = 1.0, 0.0  # every group mixed, so RLOO has signal
  batch = dict(
      prompt_tokens=jnp.asarray(prompts, jnp.int32),
      prompt_mask=jnp.ones((rows, p), bool),
      response_tokens=jnp.asarray(rng.integers(3, vocab, (rows, t)), jnp.int32),
      response_mask=jnp.ones((rows, t), bool),
      acc=jnp.asarray(acc),
  )
  if with_old_logp:
    batch["old_logp"] = jnp.full((rows, t), -math.log(vocab), jnp.float32)
  return batch


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def op_kind(name: str, opcode: str) -> str:
  """Coarse kind of an XLA:CPU op from its instruction name and opcode."""
  if name.startswith(("ynn_fusion", "xnn_fusion", "onednn")) or opcode in ("dot", "convolution"):
    return "matmul"
  if opcode in ("copy", "transpose") or name.startswith(("copy", "transpose", "wrapped_transpose")):
    return "copy/transpose"
  if "broadcast" in name and "divide" not in name:
    return "broadcast (zero fills)"
  if "dynamic" in name:
    return "dynamic (update-)slice"
  if opcode == "fusion" or "fusion" in name:
    return "elementwise/reduce fusion"
  return "other"


def op_pass(op_name: str) -> str:
  """Which pass an op belongs to, from the JAX transformation stack in its metadata."""
  part = (
      "lm head" if "Decoder.logits" in op_name else ("layers" if "Decoder" in op_name else "rest")
  )
  if "transpose(jvp(" in op_name:
    return f"bwd {part}"
  if "jvp(" in op_name:
    return f"fwd {part} (grad pass)"
  if "token_logprobs" in op_name:
    return f"fwd {part} (no-grad pass)"
  return "rest (optimisers, advantages, losses, metrics)"


def op_profile(hlo_text: str, call) -> dict:
  """Traces one `call` with jax.profiler and sums the time of each HLO instruction of the
  compiled step over the threads (control-flow ops, which enclose others, left out).
  Preemption by other jobs inflates all of it alike: read the shares, not the seconds."""
  info = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = \S+ ([\w-]+)\((.*)$", hlo_text, re.M):
    op_name = re.search(r'op_name="([^"]*)"', m.group(3))
    info[m.group(1)] = (m.group(2), op_name.group(1) if op_name else "")
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      jax.block_until_ready(call())
    (path,) = glob.glob(f"{directory}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  xla_threads = {
      (e["pid"], e["tid"])
      for e in events
      if e.get("ph") == "M" and e.get("name") == "thread_name" and "tf_XLA" in e["args"]["name"]
  }
  per_op = collections.Counter()
  for e in events:
    if (
        "dur" in e
        and (e["pid"], e["tid"]) in xla_threads
        and e["name"] in info
        and info[e["name"]][0] not in ("while", "conditional", "call")
    ):
      per_op[e["name"]] += e["dur"] / 1e6
  kinds, stages = collections.Counter(), collections.Counter()
  for name, seconds in per_op.items():
    opcode, op_name = info[name]
    kinds[op_kind(name, opcode)] += seconds
    stages[op_pass(op_name)] += seconds
  top = [(name, seconds, info[name][1]) for name, seconds in per_op.most_common(6)]
  return dict(kinds=dict(kinds), stages=dict(stages), top=top)


def run_step(args, mode: str) -> dict:
  """Compiles, times and profiles one step mode (in a fresh process: peak RSS is this mode's)."""
  model = model_config(args)
  config = rl_config(args, mode)
  rl = config.rl
  params = init_params(model, jax.random.key(0))
  copy = lambda: jax.tree_util.tree_map(jnp.copy, params)
  with_prm = uses_prm(rl)
  # Outcome-only steps never touch the PRM or the reference, so they get None for both.
  prm = create_train_state(copy(), prm_optimizer(rl)) if with_prm else None
  ref = copy() if with_prm else None
  policy = create_train_state(params, policy_optimizer(rl))
  batch = make_batch(args, model.vocab_size, rl.old_logp == "sampler")
  key = jax.random.key(1)
  rss_states = peak_rss_bytes()

  step = make_update_step(config, None, model)
  start = time.perf_counter()
  compiled = step.lower(policy, prm, ref, batch, key).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()

  def call():
    nonlocal policy, prm
    policy, prm, metrics = compiled(policy, prm, ref, batch, key)  # states are donated
    return metrics

  start = time.perf_counter()
  metrics = jax.block_until_ready(call())
  first_s = time.perf_counter() - start
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise RuntimeError(f"{mode}: non-finite metrics {bad}")
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  times = timed_calls(call, args.repeats)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.repeats
  out = dict(
      compile_s=compile_s,
      first_s=first_s,
      times=times,
      rss_states=rss_states,
      rss_peak=peak_rss_bytes(),
      page_faults=faults,
  )
  if memory is not None:
    out.update(
        xla_args=memory.argument_size_in_bytes,
        xla_out=memory.output_size_in_bytes,
        xla_alias=memory.alias_size_in_bytes,
        xla_temp=memory.temp_size_in_bytes,
    )
  if not args.skip_profile:
    out["profile"] = op_profile(compiled.as_text(), call)
  return out


def run_pieces(args) -> dict:
  """Times the step's pieces as separate jitted functions on one micro-batch (and one AdamW
  update of all params): {piece: (wall s, CPU s, counted matmul FLOPs or None)}."""
  model = model_config(args)
  rl = rl_config(args, "prime").rl
  micro, chunk = min(args.micro_batch, args.responses), args.score_chunk
  params = init_params(model, jax.random.key(0))
  mb = {k: v[:micro] for k, v in make_batch(args, model.vocab_size, True).items()}
  inputs = (mb["prompt_tokens"], mb["prompt_mask"], mb["response_tokens"], mb["response_mask"])
  mask = mb["response_mask"]
  adv = jnp.asarray(np.random.default_rng(1).normal(size=mask.shape), jnp.float32)
  fwd = forward_flops(model, micro, args.prompt, args.response, chunk)
  one_fwd, layers = sum(fwd.values()), fwd["layers"] + fwd["attention"]

  def hidden(p):
    tokens = jnp.concatenate([mb["prompt_tokens"], mb["response_tokens"]], axis=1)
    valid = jnp.concatenate([mb["prompt_mask"], mask], axis=1)
    return Decoder(model).apply({"params": p}, tokens, positions_from_mask(valid), valid)[0]

  def logp(p, with_entropy=False):
    return token_logprobs(p, *inputs, config=model, chunk_size=chunk, with_entropy=with_entropy)

  def policy_loss(p):  # as the step's policy loss: the entropy is computed for the metrics
    lp, entropy = logp(p, with_entropy=True)
    return ppo_clip_loss(lp, mb["old_logp"], adv, mask)[0], entropy

  def prm_loss(p):
    q = implicit_rewards(logp(p), mb["old_logp"], mask)
    return prm_ce_loss(q, mb["acc"], mask, beta=rl.beta)

  pieces = {
      "layers fwd (no lm head)": (hidden, layers),
      "log-prob fwd (ref / old-logp / re-score)": (logp, one_fwd),
      "layers fwd+bwd (no lm head)": (jax.grad(lambda p: jnp.sum(hidden(p))), 3 * layers),
      "policy fwd+bwd (PPO loss + entropy)": (jax.grad(policy_loss, has_aux=True), 3 * one_fwd),
      "PRM fwd+bwd (CE loss)": (jax.grad(prm_loss), 3 * one_fwd),
  }
  out = {}
  for name, (fn, flops) in pieces.items():
    fn = jax.jit(fn)
    jax.block_until_ready(fn(params))
    times = timed_calls(lambda: fn(params), args.repeats)
    out[name] = (*map(statistics.median, zip(*times)), flops)

  optimizer = policy_optimizer(rl)
  state = create_train_state(params, optimizer)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  update = jax.jit(lambda s, g: apply_gradients(s, g, optimizer), donate_argnums=0)
  state = jax.block_until_ready(update(state, grads))

  def adamw():
    nonlocal state
    state = update(state, grads)
    return state

  times = timed_calls(adamw, args.repeats)
  out["AdamW update (all params)"] = (*map(statistics.median, zip(*times)), None)
  return out


def in_fresh_process(fn, *args):
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
    return pool.submit(fn, *args).result()


def load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = parser.add_argument
  add("--vocab", type=int, default=32000)
  add("--hidden", type=int, default=768)
  add("--layers", type=int, default=12)
  add("--heads", type=int, default=12)
  add("--kv_heads", type=int, default=2)
  add("--head_dim", type=int, default=64)
  add("--mlp", type=int, default=2048)
  add("--dtype", default="float32", help="compute dtype (params stay f32)")
  add("--responses", type=int, default=8, help="N responses per step")
  add("--n", type=int, default=4, help="samples per prompt")
  add("--prompt", type=int, default=32)
  add("--response", type=int, default=96)
  add("--micro_batch", type=int, default=4)
  add("--score_chunk", type=int, default=base_config().rl.score_chunk)
  add("--repeats", type=int, default=3)
  add(
      "--modes",
      default="prime,rloo,prime_recompute,rloo_recompute",
      help=f"comma-separated, from {list(MODES)}",
  )
  add("--skip_profile", action="store_true")
  add("--skip_pieces", action="store_true")
  args = parser.parse_args()
  args.modes = args.modes.split(",")
  unknown = [m for m in args.modes if m not in MODES]
  if unknown:
    parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")
  return args


def main():
  args = parse_args()
  model = model_config(args)
  rows, p, t = args.responses, args.prompt, args.response
  print(
      f"CPU: {os.cpu_count()} cores; load average (1/5/15 min) at start {load()}; "
      f"jax {jax.__version__} ({jax.devices()[0].platform})"
  )
  print(
      f"model: {model.num_params / 1e6:.1f}M params, Qwen2-shaped (hidden {model.hidden_size}, "
      f"{model.num_layers} layers, {model.num_heads} heads / {model.num_kv_heads} kv heads x "
      f"{model.head_dim}, MLP {model.intermediate_size}, vocab {model.vocab_size}, tied "
      f"embeddings, qkv bias), f32 params, {model.dtype} compute"
  )
  print(
      f"batch: N={rows} responses (n={args.n}), prompt {p}, response {t}; micro-batch "
      f"{args.micro_batch}, one optimiser step per model (mini-batch = N), score_chunk "
      f"{args.score_chunk}"
  )

  dtype = jnp.dtype(args.dtype)
  shapes = (
      (2048, 2048, 2048),
      (4096, 4096, 4096),
      (args.micro_batch * (p + t), model.hidden_size, model.intermediate_size),
  )
  rates = matmul_peak(shapes, dtype=dtype)
  print(
      "matmul, best of 5 (GFLOP per wall s / per CPU s): "
      + ", ".join(
          f"{m}x{k}@{k}x{n} {w / GB:.1f} / {c / GB:.1f}" for (m, k, n), (w, c) in rates.items()
      )
  )

  fwd = forward_flops(model, rows, p, t, args.score_chunk)
  one_fwd = sum(fwd.values())
  print(
      f"one forward over the batch: {one_fwd / GB:.1f} GFLOP (layers {fwd['layers'] / GB:.1f}, "
      f"attention {fwd['attention'] / GB:.1f}, lm head {fwd['lm_head'] / GB:.1f})"
  )

  results = {}
  for mode in args.modes:
    print(f"  running {mode} (load {load()}) ...", flush=True)
    results[mode] = in_fresh_process(run_step, args, mode)
  pieces = None if args.skip_pieces else in_fresh_process(run_pieces, args)
  rates[("end", 4096, 4096)] = matmul_rates(4096, 4096, 4096, dtype=dtype)
  peak_wall = max(w for w, _ in rates.values())
  peak_cpu = max(c for _, c in rates.values())
  print(
      f"4096^3 matmul again at the end: {rates[('end', 4096, 4096)][0] / GB:.1f} / "
      f"{rates[('end', 4096, 4096)][1] / GB:.1f}; peak used: {peak_wall / GB:.1f} GFLOP per "
      f"wall s, {peak_cpu / GB:.1f} GFLOP per CPU s; load average at end {load()}\n"
  )

  print(
      f"{'mode':<16}{'fwd units':>10}{'GFLOP':>7}{'compile':>9}{'wall':>8}{'CPU':>8}"
      f"{'resp tok/s':>11}{'tok/s':>7}{'GFLOP/s':>8}{'%peak wall':>11}{'%peak cpu':>10}"
      f"{'RSS GB':>8}{'XLA temp GB':>12}"
  )
  flops, cpu = {}, {}
  for mode, r in results.items():
    units = sum(c for _, _, c in forward_passes(rl_config(args, mode).rl))
    flops[mode] = units * one_fwd
    wall, cpu[mode] = (statistics.median(x) for x in zip(*r["times"]))
    temp = f"{r['xla_temp'] / GB:.2f}" if "xla_temp" in r else "n/a"
    print(
        f"{mode:<16}{units:>10}{flops[mode] / GB:>7.0f}{r['compile_s']:>8.1f}s"
        f"{wall:>7.2f}s{cpu[mode]:>7.2f}s{rows * t / wall:>11.0f}{rows * (p + t) / wall:>7.0f}"
        f"{flops[mode] / wall / GB:>8.1f}{100 * flops[mode] / wall / peak_wall:>10.0f}%"
        f"{100 * flops[mode] / cpu[mode] / peak_cpu:>9.0f}%{r['rss_peak'] / GB:>8.2f}"
        f"{temp:>12}"
    )
  print(
      "(wall, CPU: medians of the timed calls after a warm-up; tok/s and GFLOP/s per wall "
      "second; RSS: the process's high-water mark, states included; XLA temp: the compiled "
      "step's scratch)"
  )
  for mode, r in results.items():
    print(
        f"  {mode}: "
        + " + ".join(f"{name} ({c})" for _, name, c in forward_passes(rl_config(args, mode).rl))
    )
    details = (
        f"    first call {r['first_s']:.1f} s, calls (wall/CPU s) "
        + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in r["times"])
        + f", {r['page_faults'] / 1e3:.0f}k page faults per call, RSS with the "
        f"states alone {r['rss_states'] / GB:.2f} GB"
    )
    if "xla_args" in r:
      details += (
          f"; XLA args {r['xla_args'] / GB:.2f} GB, outputs {r['xla_out'] / GB:.2f}"
          f" GB (aliased to donated args {r['xla_alias'] / GB:.2f} GB)"
      )
    print(details)

  print()
  for mode, base in BASELINE_OF.items():
    if mode in results and base in results:
      walls = [statistics.median(w for w, _ in results[m]["times"]) for m in (mode, base)]
      flop_ratio = flops[mode] / flops[base]
      for what, ratio in (("CPU", cpu[mode] / cpu[base]), ("wall", walls[0] / walls[1])):
        verdict = "meets" if ratio <= 1.1 * flop_ratio else "misses"
        print(
            f"{mode} / {base}: {what} time ratio {ratio:.2f}, FLOP ratio "
            f"{flop_ratio:.2f} -> {ratio / flop_ratio:.2f}x ({verdict} <= 1.1x)"
        )

  for mode, r in results.items():
    if "profile" not in r:
      continue
    prof = r["profile"]
    total = sum(prof["kinds"].values())
    share = lambda d: ", ".join(
        f"{k} {100 * v / total:.0f}%"
        for k, v in sorted(d.items(), key=lambda kv: -kv[1])
        if v / total >= 0.005
    )
    print(f"\n{mode} profile (XLA op time summed over threads, shares):")
    print(f"  by op kind: {share(prof['kinds'])}")
    print(f"  by pass:    {share(prof['stages'])}")
    for name, seconds, op_name in prof["top"]:
      print(f"  {100 * seconds / total:4.1f}% {name:<24} {op_name[-90:]}")

  if pieces:
    micro = min(args.micro_batch, rows)
    print(
        f"\npieces, jitted alone on one micro-batch of {micro} (x{rows // micro} per pass "
        f"over the batch), median wall / CPU s:"
    )
    for name, (wall, cpu_s, piece_flops) in pieces.items():
      rate = (
          ""
          if piece_flops is None
          else f"{piece_flops / GB:7.1f} GFLOP, {piece_flops / cpu_s / GB:5.1f} GFLOP per "
          f"CPU s = {100 * piece_flops / cpu_s / peak_cpu:3.0f}% of peak"
      )
      print(f"  {name:<42}{wall:7.2f} /{cpu_s:6.2f}   {rate}")
  print(f"load average at end {load()}")


if __name__ == "__main__":
  main()
