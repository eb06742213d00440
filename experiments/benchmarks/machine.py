"""What this machine can do, measured in JAX in the running process: matmul FLOP rates and timings.

Shared by the benchmark scripts in this folder (import it after putting this folder on sys.path).
Every timing comes as (wall seconds, process CPU seconds): on a machine shared with other jobs the
wall time depends on how much CPU the others take, while CPU time (user + system, all threads of
this process) counts only the time this process ran. FLOPs per CPU-second of a workload over
FLOPs per CPU-second of a large matmul is therefore a fraction of peak that load hardly moves.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def process_cpu_seconds() -> float:
  """User + system CPU time of this process so far, all threads."""
  return time.process_time()


def timed_calls(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
  """(wall seconds, CPU seconds) of each of `repeats` calls of `fn`, blocked until ready."""
  out = []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), process_cpu_seconds()
    jax.block_until_ready(fn())
    out.append((time.perf_counter() - wall, process_cpu_seconds() - cpu))
  return out


def matmul_rates(
    m: int, k: int, n: int, *, repeats: int = 5, dtype=jnp.float32, calls: int = 1
) -> tuple[float, float]:
  """Best (FLOP per wall second, FLOP per CPU second) of a jitted [m, k] @ [k, n] (2·m·k·n
  FLOPs) over `repeats` timed calls.

  calls > 1 runs that many dots in one program (a loop, each dot's input depending on the last
  one's output, so none is hoisted): the rate a small dot reaches inside a compiled loop such as
  the sampler's. One dispatched call of a small dot mostly measures the dispatch: on a 2-core EPYC
  (family 25 model 17) a [32, 512] @ [512, 1408] ran at ~85 GFLOP/s per call and ~163 in a loop.
  """
  a = jax.random.normal(jax.random.key(0), (m, k), dtype)
  b = jax.random.normal(jax.random.key(1), (k, n), dtype)

  @jax.jit
  def dots(a, b):
    def body(_, carry):
      out = jnp.dot(a + carry, b)
      return (out[0, 0] * 1e-30).astype(a.dtype)  # a data dependency, numerically nothing

    return jax.lax.fori_loop(0, calls, body, jnp.zeros((), a.dtype))

  dot = jax.jit(jnp.dot) if calls == 1 else dots
  dot(a, b).block_until_ready()  # compile
  times = timed_calls(lambda: dot(a, b), repeats)
  flops = 2 * m * k * n * calls
  return flops / min(w for w, _ in times), flops / min(c for _, c in times)


def matmul_peak(
    shapes: Sequence[tuple[int, int, int]] = ((2048, 2048, 2048), (4096, 4096, 4096)),
    *,
    repeats: int = 5,
    dtype=jnp.float32,
) -> dict[tuple[int, int, int], tuple[float, float]]:
  """`matmul_rates` of each (m, k, n); the machine's peak is the largest of each column."""
  return {shape: matmul_rates(*shape, repeats=repeats, dtype=dtype) for shape in shapes}


def best_wall(fn: Callable[[], object], repeats: int) -> float:
  """Minimum wall seconds of `repeats` calls (the least disturbed by other processes)."""
  return min(w for w, _ in timed_calls(fn, repeats))


def memory_bandwidth() -> float:
  """Bytes/s: the best of an XLA reduction over 1 GiB (read only) and a numpy copy (read +
  write, both counted)."""
  import numpy as np

  x = jnp.ones((1 << 28,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  read = x.nbytes / best_wall(lambda: total(x), 5)
  del x
  a = np.ones(1 << 27, np.float32)
  b = np.empty_like(a)
  copy = 2 * a.nbytes / min(_np_copy_seconds(a, b) for _ in range(5))
  return max(read, copy)


def _np_copy_seconds(a, b) -> float:
  start = time.perf_counter()
  b[...] = a
  return time.perf_counter() - start
