r"""Where the default's SFT lands over many seeds: the check that the embedded default has margin.

The default run (`python -m prime_jax.train`) starts RL from an SFT model it trains itself. Its SFT
loss falls from a plateau somewhere in training, and where depends on the seed and on the CPU
(XLA's CPU code, and so the float rounding, follows the CPU's features): a default whose plateau
ends near its last SFT step lands well on one machine and badly on another. This script trains
the config's SFT model for each seed and prints, per seed, where it landed and the step at which
the loss first fell below `--escape_loss` (the end of the plateau), against the band the default
must hold:

  greedy accuracy >= --min_greedy, and a sampled (T = rl.temperature) accuracy at which the online
  filter (rl.filter_lo..filter_hi over rl.n_samples) passes at least --min_filter of the groups.

    .venv/bin/python experiments/benchmarks/sft_band.py --seeds=0-9 --workdir_root=/tmp/sft_band \
        --out=experiments/results/sft_band [--config=FILE --config.sft.steps=800 ...]

Another CPU can be imitated on this one by capping the instructions XLA's CPU code uses, which
changes its rounding: `XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 .venv/bin/python ...` (the ISA is
recorded with the results). Finished seeds are reused (a rerun resumes the sweep). Each seed takes
minutes on a 2-core CPU; this is a script, not a test.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from prime_jax import sft  # noqa: E402

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "arithmetic_prime.py"
)
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Config file; default: the default run.")
flags.DEFINE_string("seeds", "0-9", "Seeds: '0-9' or '0,3,5'.")
flags.DEFINE_string("workdir_root", "/tmp/sft_band", "Each seed's SFT goes to ROOT/seed_S/sft.")
flags.DEFINE_string("out", "", "Folder for results.md and results.json ('' = print only).")
flags.DEFINE_float("min_greedy", 0.70, "The band: lowest acceptable greedy accuracy.")
flags.DEFINE_float("min_filter", 0.50, "The band: lowest acceptable filter pass rate.")
flags.DEFINE_float("escape_loss", 0.5, "Loss (nats/token) whose first crossing ends the plateau.")
flags.DEFINE_float(
    "settle_tolerance", 0.15, "Settled: the loss stays within this share of its final value."
)


def parse_seeds(text: str) -> list[int]:
  if re.fullmatch(r"\d+-\d+", text):
    lo, hi = map(int, text.split("-"))
    return list(range(lo, hi + 1))
  return [int(s) for s in text.split(",") if s]


def cpu_description() -> str:
  """`lscpu`'s model name and the vector extensions that change XLA's CPU code."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return platform.processor() or "unknown CPU"
  fields = dict(
      line.split(":", 1) for line in out.splitlines() if ":" in line
  )  # "Model name: AMD EPYC"
  name = fields.get("Model name", "unknown").strip()
  flags_ = fields.get("Flags", "").split()
  wanted = [f for f in flags_ if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")]
  return f"{name} ({', '.join(wanted) or 'no AVX2'})"


def logged_losses(checkpoint_dir: str) -> list[tuple[int, float]]:
  """(step, mean loss) of each logged SFT interval, in order."""
  with open(os.path.join(checkpoint_dir, sft.METRICS)) as f:
    return [(row["step"], row["loss"]) for row in map(json.loads, f)]


def settle_step(losses: list[tuple[int, float]], tolerance: float, tail: int = 5) -> int:
  """The first logged step from which every logged loss stays within `tolerance` (relative) of
  the final loss (the mean of the last `tail` logged losses): where SFT has learnt what it will
  learn. The steps after it are the default's margin against a CPU that learns later."""
  final = sum(loss for _, loss in losses[-tail:]) / len(losses[-tail:])
  settled = losses[-1][0]
  for step, loss in reversed(losses):
    if abs(loss - final) > tolerance * final:
      break
    settled = step
  return settled


def escape_step(losses: list[tuple[int, float]], threshold: float) -> int | None:
  """The first logged SFT step whose mean loss is below `threshold` (None: never)."""
  return next((step for step, loss in losses if loss < threshold), None)


def seed_result(config, seed: int, root: str) -> dict:
  config = config.copy_and_resolve_references()
  config.seed = seed
  out = sft.run_sft(config, os.path.join(root, f"seed_{seed}"))
  with open(os.path.join(out, sft.SFT_INFO)) as f:
    info = json.load(f)
  losses = logged_losses(str(out))
  return dict(
      seed=seed,
      greedy=info["accuracy_greedy"],
      sampled=info["accuracy_sampled"],
      filter_pass=info["filter_pass_rate"],
      escape_step=escape_step(losses, flags.FLAGS.escape_loss),
      settle_step=settle_step(losses, flags.FLAGS.settle_tolerance),
      final_loss=info["final_loss"],
      train_s=info["train_time_s"],
      wall_s=info["wall_time_s"],
  )


def in_band(row: dict) -> bool:
  return row["greedy"] >= flags.FLAGS.min_greedy and row["filter_pass"] >= flags.FLAGS.min_filter


def render(rows: list[dict], config, header: str) -> str:
  lines = [
      header,
      "",
      f"Band: greedy >= {flags.FLAGS.min_greedy:.2f} and filter pass rate >= "
      f"{flags.FLAGS.min_filter:.2f}; escape = first SFT step with loss < "
      f"{flags.FLAGS.escape_loss} (of {config.sft.steps}); settled = first step from which the loss "
      f"stays within {flags.FLAGS.settle_tolerance:.0%} of its final value.",
      "",
      "| seed | greedy | sampled (T=1) | filter pass | escape step | settled step | final loss |"
      " SFT wall s | in band |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['seed']} | {r['greedy']:.3f} | {r['sampled']:.3f} | {r['filter_pass']:.3f} | "
        f"{r['escape_step'] if r['escape_step'] is not None else 'never'} | "
        f"{r['settle_step']} | "
        f"{r['final_loss']:.4f} | {r['wall_s']:.0f} | {'yes' if in_band(r) else 'NO'} |"
    )
  greedy = [r["greedy"] for r in rows]
  sampled = [r["sampled"] for r in rows]
  escapes = [r["escape_step"] for r in rows if r["escape_step"] is not None]
  lines += [
      "",
      f"{sum(map(in_band, rows))}/{len(rows)} seeds in band; greedy {min(greedy):.3f}-"
      f"{max(greedy):.3f}, sampled {min(sampled):.3f}-{max(sampled):.3f}; latest escape "
      + (f"step {max(escapes)}" if escapes else "none")
      + (f" ({len(rows) - len(escapes)} never escaped)" if len(escapes) < len(rows) else "")
      + f"; latest settled step {max(r['settle_step'] for r in rows)}",
  ]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  rows = []
  for seed in parse_seeds(flags.FLAGS.seeds):
    rows.append(seed_result(config, seed, flags.FLAGS.workdir_root))
    print(json.dumps(rows[-1]), flush=True)
  isa = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "max_isa" in f)
  header = f"SFT band of `{config.task.name}` on {cpu_description()}" + (f", {isa}" if isa else "")
  text = render(rows, config, header)
  print(text)
  if flags.FLAGS.out:
    os.makedirs(flags.FLAGS.out, exist_ok=True)
    with open(os.path.join(flags.FLAGS.out, "results.md"), "w") as f:
      f.write(text + "\n")
    with open(os.path.join(flags.FLAGS.out, "results.json"), "w") as f:
      json.dump(
          dict(cpu=cpu_description(), isa=isa, sft=config.sft.to_dict(), rows=rows), f, indent=1
      )


if __name__ == "__main__":
  app.run(main)
