r"""The sampler's decode-shaped dot alone: how fast XLA runs it in a compiled loop, with its weight
in cache and with the weights streaming from memory as in a decode step (a step reads every
layer's weights once).

  .venv/bin/python experiments/benchmarks/dot_rates.py [--batch 32 --hidden 512 --out 1408]

Prints GFLOP/s and ms per dot for 1, 4 and 40 distinct weight matrices cycled through in a loop
(40 x [512, 1408] f32 is 115 MB, beyond any cache here), and for 40 separate weight arguments
unrolled, the decode step's layout (one params tree per layer). Each dot's input depends on the
previous dot's output, so XLA can neither hoist nor skip one. `--torch` also runs the cycled
cases in torch (a Python loop of `@`, as transformers' decode step calls its dots), to tell
XLA's dot rate from the machine's. Check the load average it prints.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from machine import best_wall

REPS = 200


def rate(run, *, flops: float) -> tuple[float, float]:
  """(GFLOP/s, ms per dot) of the best of 3 calls of `run()`, REPS dots of `flops` each, after one
  call that compiles (or warms up) it. Torch's CPU ops return when done: `best_wall`'s
  block_until_ready passes a torch tensor through."""
  jax.block_until_ready(run())
  best = best_wall(run, 3)
  return flops * REPS / best / 1e9, best / REPS * 1e3


def torch_rate(weights: np.ndarray, batch: int, *, flops: float) -> tuple[float, float]:
  """(GFLOP/s, ms per dot) of torch cycling through `weights` [count, k, n] as `cycled` does: the
  best of 3 runs of REPS dependent dots on all cores."""
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(os.cpu_count())
  count, k, _ = weights.shape
  w = torch.from_numpy(weights)
  x = torch.full((batch, k), 0.01)

  def run():
    carry = torch.zeros(batch, k)
    with torch.no_grad():
      for i in range(REPS):
        carry = carry + ((x + carry[:, :1]) @ w[i % count])[:, :k] * 1e-9
    return carry

  return rate(run, flops=flops)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--out", type=int, default=1408)
  parser.add_argument("--torch", action="store_true", help="also time the cycled dots in torch")
  a = parser.parse_args()
  b, k, n = a.batch, a.hidden, a.out
  print(
      f"load average at start {os.getloadavg()[0]:.1f}; jax {jax.__version__}; dot [{b},{k}]x[{k},{n}]"
  )
  x = jnp.full((b, k), 0.01, jnp.float32)
  flops = 2 * b * k * n
  rng = np.random.default_rng(0)
  for count in (1, 4, 40):
    weights = jnp.asarray(rng.standard_normal((count, k, n), np.float32) * 0.01)

    @jax.jit
    def cycled(x, weights, count=count):
      def body(i, carry):
        out = (x + carry[:, :1]) @ weights[i % count]
        return carry + out[:, :k] * 1e-9  # a data dependency, numerically nothing

      return jax.lax.fori_loop(0, REPS, body, jnp.zeros((b, k)))

    gflops, ms = rate(lambda: cycled(x, weights), flops=flops)
    print(
        f"{count:3d} weights ({weights.nbytes / 1e6:4.0f} MB) cycled: {gflops:4.0f} GFLOP/s, {ms:.3f} ms/dot"
    )
    if a.torch:
      gflops, ms = torch_rate(np.array(weights), b, flops=flops)  # a writable copy for torch
      print(f"{'':>26}torch: {gflops:4.0f} GFLOP/s, {ms:.3f} ms/dot")

  separate = [jnp.asarray(rng.standard_normal((k, n), np.float32) * 0.01) for _ in range(40)]

  @jax.jit
  def unrolled(x, separate):
    def body(_, carry):
      for w in separate:
        carry = carry + ((x + carry[:, :1]) @ w)[:, :k] * 1e-9
      return carry

    return jax.lax.fori_loop(0, REPS // len(separate), body, jnp.zeros((b, k)))

  gflops, ms = rate(lambda: unrolled(x, separate), flops=flops)
  print(f" 40 separate weight arguments, unrolled: {gflops:4.0f} GFLOP/s, {ms:.3f} ms/dot")
  print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
