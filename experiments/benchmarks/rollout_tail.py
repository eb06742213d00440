r"""The long tail: a heavy-tailed response-length mix, sampled to the budget vs in partial rollouts.

A 30.9M Qwen2-shaped model with random weights samples at temperature 1; a set of EOS ids is
picked so that a row stops with probability ~3/T per step (geometric lengths: median ~0.23 T, ~5%
of rows run to the budget T; the measured profile is printed). Both ways sample --groups groups
(prompt x n samples) on `rows` rows:

  to the budget  rounds of rows/n prompts, each decoded until its longest row ends (`sample`,
                 rl.partial_rollout_steps = 0)
  partial        `RolloutEngine` rounds of at most --round_steps decode steps; freed rows take new
                 groups at once (rl.partial_rollout_steps = --round_steps). Run for --warm_up
                 groups first, then measured (a training run is in this steady state).

Prints for each: utilisation = useful tokens / (rows x steps run), useful tokens/s and seconds per
useful token, and the bound: one full-batch decode step's measured time per row (what a useful
token costs at utilisation 1), with the ratio. Check the load average it prints.

  .venv/bin/python experiments/benchmarks/rollout_tail.py [--rows 32 --budget 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from decode_bounds import MODEL  # noqa: E402
from machine import best_wall  # noqa: E402
from prime_jax.models import Decoder, init_params, positions_from_mask  # noqa: E402
from prime_jax.rollout_engine import RolloutEngine  # noqa: E402
from prime_jax.sampling import SamplingConfig, admit, decode, new_state, sample  # noqa: E402


def stop_ids(params, prompts, rate: float) -> tuple[int, ...]:
  """EOS ids whose summed probability is ~`rate` per step: the model's next-token distribution
  averaged over the positions of a 64-token sampled continuation of `prompts`, its most likely ids
  taken until their mass reaches `rate`."""
  out = sample(
      params,
      prompts,
      np.ones(prompts.shape, bool),
      jax.random.key(99),
      model_config=MODEL,
      config=SamplingConfig(max_new_tokens=64),
  )
  tokens = np.concatenate([prompts, np.asarray(out.tokens)], axis=1)
  valid = np.ones(tokens.shape, bool)
  logits = Decoder(MODEL).apply(
      {"params": params}, tokens, positions_from_mask(valid), valid, method=Decoder.forward_logits
  )[:, prompts.shape[1] :]
  mean = np.asarray(jax.nn.softmax(logits, axis=-1).mean(axis=(0, 1)))
  order = np.argsort(-mean)
  count = int(np.searchsorted(np.cumsum(mean[order]), rate)) + 1
  return tuple(int(i) for i in order[:count])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=32)
  parser.add_argument("--n", type=int, default=4, help="samples per prompt")
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--budget", type=int, default=512)
  parser.add_argument("--round_steps", type=int, default=32)
  parser.add_argument("--groups", type=int, default=64, help="groups measured")
  parser.add_argument("--warm_up", type=int, default=16, help="groups before measuring")
  args = parser.parse_args()
  print(
      f"CPU: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}; "
      f"jax {jax.__version__} ({jax.devices()[0].platform})"
  )
  params = init_params(MODEL, jax.random.key(0))
  rng = np.random.default_rng(0)
  per_round = args.rows // args.n
  prompts = rng.integers(3, MODEL.vocab_size, (args.groups + per_round, args.prompt), np.int32)
  eos = stop_ids(params, prompts[:per_round], 3.0 / args.budget)
  settings = SamplingConfig(max_new_tokens=args.budget, n_samples=args.n, eos_ids=eos)
  print(
      f"model {MODEL.num_params / 1e6:.1f}M, rows {args.rows} ({per_round} prompts x {args.n}),"
      f" prompt {args.prompt}, budget {args.budget}, {len(eos)} EOS ids (~3/budget per step)"
  )

  # Bound: a full batch decoding without idle rows, per row.
  full = SamplingConfig(max_new_tokens=args.budget)
  state = new_state(params, MODEL, full, args.rows, args.prompt)
  state = admit(
      params,
      state,
      np.resize(prompts, (args.rows, args.prompt)),
      np.full(args.rows, args.prompt, np.int32),
      np.arange(args.rows),
      jax.random.split(jax.random.key(0), args.rows),
      repeat=1,
      model_config=MODEL,
      config=full,
  )
  box = [state]

  def steps():
    box[0], _ = decode(params, box[0], 16, model_config=MODEL, config=full)
    return box[0].lengths

  steps()
  bound = best_wall(steps, 3) / 16 / args.rows
  print(f"bound: {bound * 1e3:.3f} ms per useful token (a full batch's decode step, per row)")

  # To the budget: rounds of per_round prompts, every row until the round's longest ends.
  lengths, row_steps, seconds = [], 0, 0.0
  for lo in range(0, len(prompts), per_round):
    batch = prompts[lo : lo + per_round]
    start = time.perf_counter()
    out = jax.device_get(
        sample(
            params,
            batch,
            np.ones(batch.shape, bool),
            jax.random.key(lo),
            model_config=MODEL,
            config=settings,
        )
    )
    if lo:  # the first round compiles
      seconds += time.perf_counter() - start
      row_steps += out.lengths.size * int(out.lengths.max())
      lengths.append(out.lengths)
  lengths = np.concatenate(lengths)
  print(
      f"lengths: median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, p95 "
      f"{np.percentile(lengths, 95):.0f}, {np.mean(lengths == args.budget):.1%} at the budget"
  )
  report("to the budget", int(lengths.sum()), row_steps, seconds, bound)

  # Partial rollouts: freed rows take new groups every round; measured in the steady state
  # (after warm_up groups, while new groups keep coming, as in a training run).
  engine = RolloutEngine(
      model_config=MODEL,
      config=settings,
      rows=args.rows,
      prompt_width=args.prompt,
      round_steps=args.round_steps,
  )
  finished, r, start, base = 0, 0, None, None
  while finished < args.warm_up + args.groups:
    new = [(r * args.rows + j) for j in range(engine.free_groups())]
    engine.add(new, [prompts[i % len(prompts)] for i in new], jax.random.key(10_000 + r))
    groups, _ = engine.round(params)
    finished += len(groups)
    r += 1
    if start is None and finished >= args.warm_up:
      start, base = time.perf_counter(), (engine.useful_tokens, engine.row_steps)
  report(
      f"partial ({args.round_steps} steps/round)",
      engine.useful_tokens - base[0],
      engine.row_steps - base[1],
      time.perf_counter() - start,
      bound,
  )
  print(f"load average at end {os.getloadavg()[0]:.1f}")


def report(name, useful, row_steps, seconds, bound):
  per_token = seconds / useful
  print(
      f"{name:>28}: utilisation {useful / row_steps:.2f} ({useful} useful tokens / {row_steps}"
      f" row-steps), {useful / seconds:6.0f} useful tok/s, {per_token * 1e3:.3f} ms per useful"
      f" token = {per_token / bound:.2f}x the bound",
      flush=True,
  )


if __name__ == "__main__":
  main()
