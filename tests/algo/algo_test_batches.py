"""Random ragged test batches and a jit cache shared by the prime_jax.algo tests."""

import functools

import jax
import numpy as np

NUM_ROWS = 16  # N for every n in GROUP_SIZES, so each jitted function compiles once per n
WIDTH = 12  # T
GROUP_SIZES = (2, 4, 8)
TOL = dict(rtol=1e-5, atol=1e-5)
PADDING_JUNK = 1e3  # finite garbage in padded positions; must never reach a result


def random_batch(seed, n, *, bool_mask=False):
  """A float32 batch of NUM_ROWS responses in groups of n, with ragged lengths in [1, WIDTH].

  The first group's acc are all equal (an uninformative group); the second group has
  soft labels; the others are 0/1. Padding holds large junk values.
  """
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, WIDTH + 1, size=NUM_ROWS)
  lengths[0], lengths[-1] = WIDTH, 1
  valid = np.arange(WIDTH)[None, :] < lengths[:, None]

  def token_array(values):
    junk = PADDING_JUNK * rng.normal(size=values.shape)
    return np.where(valid, values, junk).astype(np.float32)

  logp_ref = -np.abs(rng.normal(size=(NUM_ROWS, WIDTH))) * 2
  logp_prm = logp_ref + 0.3 * rng.normal(size=logp_ref.shape)
  logp = logp_ref + 0.2 * rng.normal(size=logp_ref.shape)
  acc = rng.integers(0, 2, size=NUM_ROWS).astype(np.float64)
  acc[:n] = 1.0
  acc[n : 2 * n] = rng.uniform(size=n).round(2)
  return dict(
      lengths=[int(x) for x in lengths],
      mask=valid if bool_mask else valid.astype(np.float32),
      logp_prm=token_array(logp_prm),
      logp_ref=token_array(logp_ref),
      logp=token_array(logp),
      old_logp=token_array(logp + 0.3 * rng.normal(size=logp.shape)),
      scores=token_array(0.5 * rng.normal(size=logp.shape)),
      values=token_array(rng.normal(size=logp.shape)),
      acc=acc.astype(np.float32),
  )


@functools.cache
def _jitted(fn, static_items):
  return jax.jit(functools.partial(fn, **dict(static_items)))


def call_jitted(fn, *arrays, traced=None, **static):
  """fn(*arrays, **traced, **static) through a cached jax.jit.

  `static` keywords are compile-time constants (one compilation per value); `traced`
  keywords are passed as traced values, so changing them reuses the compiled function.
  """
  return _jitted(fn, tuple(sorted(static.items())))(*arrays, **(traced or {}))
