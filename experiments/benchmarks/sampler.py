r"""Sampler speed: prime_jax against transformers `generate` and against this machine's bounds.

Same random weights on both sides (a 30.9M Qwen2-shaped model saved as a HF checkpoint), same
device (the CPU; beside a GPU jax, `--torch_device cuda` puts transformers on the card too), no
EOS (every row generates the full budget on both sides, so both produce the same tokens).

  --case short  batch 32 x prompt 64 -> 128 new tokens, greedy and temperature 1.
  --case long   batch 16 x prompt 512 -> 2,048 new tokens, greedy; then the decode step's time
                against the filled length (prompt + tokens so far), and at filled length 512 with
                the budget 4x smaller (a step must cost what has been written, not the budget).

Every run prints tokens/s of both and the ratio, and the decode step against its bounds (matmul
FLOPs at XLA's measured f32 matmul rate, bytes read at the measured memory bandwidth;
`decode_bounds`). It also times the step's dots alone (`decode_bounds.dots_step_seconds`) and
prints the ceiling that puts on the ratio: transformers' time over the prefill plus every step at
its dots alone (long case: plus reading the filled KV cache at the measured bandwidth), i.e. the
ratio a sampler would reach if nothing but XLA's own matmuls cost time. Check the load average it
prints: timings on a busy machine are not results.

  .venv/bin/python experiments/benchmarks/sampler.py --case short --repeats 3
  .venv/bin/python experiments/benchmarks/sampler.py --case long --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from decode_bounds import (  # noqa: E402
    MODEL,
    bound_line,
    dots_step_seconds,
    kv_bytes,
    step_bytes,
    step_flops,
)
from machine import best_wall, matmul_rates, memory_bandwidth  # noqa: E402
from prime_jax.models import init_params, load_hf_checkpoint, save_hf_checkpoint  # noqa: E402
from prime_jax.sampling import SamplingConfig, admit, decode, new_state, sample  # noqa: E402

CASES = {"short": dict(batch=32, prompt=64, new_tokens=128), "long": dict(batch=16, prompt=512)}
CASES["long"]["new_tokens"] = 2048


def decode_step_seconds(params, config, settings, rows, prompt_width, filled, repeats, steps=16):
  """Wall seconds of one decode step of `rows` rows whose contexts hold `filled` tokens (random
  ids), in a state sized for `prompt_width` + the settings' budget: best of `repeats` calls of
  `steps` steps (filled grows by `steps` per call)."""
  state = new_state(params, config, settings, rows, prompt_width)
  context = np.random.default_rng(1).integers(3, config.vocab_size, (rows, filled), np.int32)
  static = dict(model_config=config, config=settings)
  keys = jax.random.split(jax.random.key(0), rows)
  # Prefilled a few rows at a time: a prefill holds [rows, heads, filled, filled] f32 scores.
  chunk = max(1, (1 << 28) // (4 * config.num_heads * filled * filled))
  for lo in range(0, rows, chunk):
    part = np.arange(lo, min(rows, lo + chunk))
    lengths = np.full(len(part), filled, np.int32)
    state = admit(params, state, context[part], lengths, part, keys[part], repeat=1, **static)
  box = [state]

  def run():
    box[0], _ = decode(params, box[0], steps, **static)
    return box[0].lengths

  jax.block_until_ready(run())  # compile, and finish the prefills: dispatch is asynchronous
  return best_wall(run, repeats) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--case", choices=sorted(CASES), default="short")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--attention", default="xla", help="SamplingConfig.attention")
  parser.add_argument("--block", type=int, default=256, help="SamplingConfig.attention_block")
  parser.add_argument(
      "--torch_device",
      default="cpu",
      help="where transformers runs: cpu, or cuda beside a GPU jax (then f32 matmuls may use TF32 "
      "on both sides, XLA:GPU's default, so the two compute alike)",
  )
  args = parser.parse_args()
  b, p, t = (CASES[args.case][k] for k in ("batch", "prompt", "new_tokens"))
  torch.set_num_threads(os.cpu_count())
  if args.torch_device != "cpu":
    torch.set_float32_matmul_precision("high")  # TF32, as XLA:GPU's default f32 dot precision
  print(
      f"CPU: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}; "
      f"jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__} on "
      f"{args.torch_device}, transformers {transformers.__version__}"
  )
  print(
      f"case {args.case}: {MODEL.num_params / 1e6:.1f}M params (Qwen2-shaped, f32), batch {b}, "
      f"prompt {p}, {t} new tokens; attention {args.attention}, block {args.block}"
  )

  directory = tempfile.mkdtemp(prefix="sampler_bench_")
  save_hf_checkpoint(directory, MODEL, init_params(MODEL, jax.random.key(0)))
  config, params = load_hf_checkpoint(directory)
  hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
  hf = hf.to(args.torch_device)
  hf.generation_config.eos_token_id = None  # no stop token: both sides generate t tokens per row
  prompts = np.random.default_rng(0).integers(3, MODEL.vocab_size, (b, p)).astype(np.int32)
  valid = np.ones((b, p), bool)

  def settings(**kw):
    return SamplingConfig(attention=args.attention, attention_block=args.block, **kw)

  def ours(sampling):
    return sample(params, prompts, valid, jax.random.key(0), model_config=config, config=sampling)

  def theirs(do_sample):
    # Plain temperature-1 sampling: HF's default top_k=50 switched off, as in our settings.
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if do_sample else {}
    with torch.no_grad():
      out = hf.generate(
          torch.from_numpy(prompts).long().to(args.torch_device),
          attention_mask=torch.ones(b, p).long().to(args.torch_device),
          max_new_tokens=t,
          pad_token_id=0,
          **sampling,
      )
    if args.torch_device != "cpu":
      torch.cuda.synchronize()  # generate returns before a GPU's last kernels finish
    return out

  modes = (("greedy", 0.0),) if args.case == "long" else (("greedy", 0.0), ("temperature 1", 1.0))
  totals, baseline = {}, {}
  for name, temperature in modes:
    sampling = settings(max_new_tokens=t, temperature=temperature)
    first = best_wall(lambda: ours(sampling), 1)
    assert int(jax.device_get(ours(sampling).lengths).min()) == t
    # Interleaved, so both sides see the same mix of load from other processes; best of each.
    ours_s, theirs_s = float("inf"), float("inf")
    for _ in range(args.repeats):
      ours_s = min(ours_s, best_wall(lambda: ours(sampling), 1))
      theirs_s = min(theirs_s, best_wall(lambda: theirs(temperature > 0), 1))
    totals[name], baseline[name] = ours_s, theirs_s
    print(
        f"{name:>14}: prime_jax {b * t / ours_s:6.0f} tok/s ({ours_s:.2f} s; first call incl."
        f" compile {first:.1f} s) | transformers {b * t / theirs_s:5.0f} tok/s ({theirs_s:.2f} s)"
        f" | ratio {theirs_s / ours_s:.2f}x",
        flush=True,
    )

  bandwidth = memory_bandwidth()
  peak, _ = matmul_rates(1024, 1024, 1024)
  decode_rate, _ = matmul_rates(b, MODEL.hidden_size, MODEL.intermediate_size, calls=64)
  print(
      f"machine: {bandwidth / 1e9:.1f} GB/s memory, XLA f32 matmul {peak / 1e9:.0f} GFLOP/s"
      f" (1024^3), {decode_rate / 1e9:.0f} GFLOP/s decode-shaped in a loop ([{b},{MODEL.hidden_size}]x"
      f"[{MODEL.hidden_size},{MODEL.intermediate_size}])"
  )
  one = settings(max_new_tokens=1, temperature=0.0)
  ours(one)
  # Prefill + first token, best of at least 3 calls: with --repeats 1 the long case's one call
  # took 6.56 s in a run where the same prefill took 3.2 s in separate processes.
  prefill_s = best_wall(lambda: ours(one), max(3, args.repeats))
  dots_s = dots_step_seconds(MODEL, b, repeats=max(2, args.repeats))
  if args.case == "short":
    # Decode step: the full greedy run minus a 1-token run (prefill + first token), per step.
    step_s = (totals["greedy"] - prefill_s) / (t - 1)
    flops, nbytes = step_flops(MODEL, b, p + t // 2), step_bytes(MODEL, b, p + t // 2)
    print(f"decode step {step_s * 1e3:.2f} ms (mean over filled lengths {p}..{p + t})")
    print("  " + bound_line(step_s, flops, peak, nbytes, bandwidth))
    print(f"  at the decode-shaped matmul rate: step = {step_s / (flops / decode_rate):.1f}x")
    print(
        f"  its dots alone in a compiled loop: {dots_s * 1e3:.2f} ms (step = {step_s / dots_s:.2f}x)"
    )
    floor_s = prefill_s + (t - 1) * dots_s
  else:
    print(f"decode step against the filled length (prompt width {p}, budget {t}):")
    by_filled = {}
    for filled in (p, p + t // 4, p + t // 2, p + 3 * t // 4, p + t - 128):
      step_s = by_filled[filled] = decode_step_seconds(
          params, config, settings(max_new_tokens=t, temperature=0.0), b, p, filled, args.repeats
      )
      flops, nbytes = step_flops(MODEL, b, filled), step_bytes(MODEL, b, filled)
      print(
          f"  filled {filled:5d}: {step_s * 1e3:6.2f} ms | "
          + bound_line(step_s, flops, peak, nbytes, bandwidth),
          flush=True,
      )
    small = decode_step_seconds(
        params, config, settings(max_new_tokens=t // 4, temperature=0.0), b, p, p, args.repeats
    )
    print(
        f"filled {p}, budget {t // 4} (4x smaller): {small * 1e3:.2f} ms; budget {t} / budget "
        f"{t // 4} = {by_filled[p] / small:.2f}x"
    )
    print(f"dots alone in a compiled loop: {dots_s * 1e3:.2f} ms a step")
    # Every step at its dots alone plus one read of the KV cache filled so far.
    filled = p + np.arange(1, t)
    floor_s = prefill_s + (t - 1) * dots_s + kv_bytes(MODEL, b, filled).sum() / bandwidth
  print(
      f"ceiling: prefill + first token {prefill_s:.2f} s, then every step at its dots alone"
      + ("" if args.case == "short" else " plus one read of the filled KV cache")
      + f": {floor_s:.2f} s for the run, which would be "
      + ", ".join(f"{baseline[n] / floor_s:.2f}x transformers {n}" for n in baseline)
  )
  print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
