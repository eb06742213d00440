"""Boundary checks and dtype/mask coercion shared by the algorithm functions.

Every check runs at trace time on static shapes and Python hyperparameters, so the
functions stay jit-compatible; a failure raises ValueError naming the argument.
"""

import numbers
from typing import Sequence

import chex
import jax.numpy as jnp


def check_token_arrays(**arrays: chex.Array) -> tuple[int, int]:
  """Checks that every named array is [N, T] and that all share one shape; returns (N, T)."""
  for name, x in arrays.items():
    chex.assert_rank(
        x, 2, custom_message=f"`{name}` must be a [N, T] array", exception_type=ValueError
    )
  names = ", ".join(f"`{name}`" for name in arrays)
  chex.assert_equal_shape(
      list(arrays.values()),
      custom_message=f"{names} must share one [N, T] shape",
      exception_type=ValueError,
  )
  return next(iter(arrays.values())).shape


def check_per_response(num_rows: int, **arrays: chex.Array) -> None:
  """Checks that every named array is [N] with N = num_rows (one value per response)."""
  for name, x in arrays.items():
    chex.assert_shape(
        x,
        (num_rows,),
        custom_message=f"`{name}` must be [N] with N={num_rows}",
        exception_type=ValueError,
    )


def check_group_size(num_rows: int, n: int) -> int:
  """Checks the samples-per-prompt count n; returns the number of groups N // n."""
  if not _is_int(n) or n < 2:
    raise ValueError(f"`n` (samples per prompt) must be an int >= 2, got {n!r}")
  if num_rows % n:
    raise ValueError(f"a batch of {num_rows} responses is not a whole number of groups of n={n}")
  return num_rows // n


def check_num_shards(num_rows: int, num_shards: int) -> None:
  """Checks that the batch splits into `num_shards` equal contiguous row blocks."""
  if not _is_int(num_shards) or num_shards < 1 or num_rows % num_shards:
    raise ValueError(
        f"`num_shards` must be a positive int dividing N={num_rows}, got {num_shards!r}"
    )


def check_positive_int(name: str, value) -> None:
  """Checks a static count (a Python / numpy int) is >= 1."""
  if not _is_int(value) or value < 1:
    raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def check_nonnegative(name: str, value) -> None:
  """Checks a static (Python / numpy) number is >= 0; traced values pass unchecked."""
  if isinstance(value, numbers.Real) and not value >= 0:
    raise ValueError(f"`{name}` must be >= 0, got {value!r}")


def _is_int(value) -> bool:
  # Static Python/numpy integers only: these choose shapes, so they cannot be traced.
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")


def compute_dtype(*arrays: chex.Array) -> jnp.dtype:
  """The widest floating dtype among the inputs, at least float32.

  bf16 log-probs are upcast (sums run over thousands of tokens); float64 inputs
  under jax_enable_x64 stay float64.
  """
  floats = [x.dtype for x in arrays if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.result_type(jnp.float32, *floats)


def as_float_mask(mask: chex.Array, dtype: jnp.dtype) -> chex.Array:
  """A 0/1 mask given as bool, int or float, as `dtype` (nonzero means valid)."""
  return (jnp.asarray(mask) != 0).astype(dtype)
