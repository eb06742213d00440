"""The sampling loop: one jitted program for policy rollouts, evaluation and the generate tool.

A left-padded prompt batch [B, P] is prefilled once, its KV cache is copied into the `n_samples`
rows of each prompt (the samples of a prompt are contiguous: rows i*n .. i*n+n-1), and a
`lax.while_loop` decodes one token per step over a preallocated cache that is donated to the jit.
Each row stops at any EOS id; the loop ends when every row is done or `max_new_tokens` is reached.

Shapes are static: the prompt width is rounded up to a bucket (`bucket_length`), so a training run
compiles one program per (bucket, batch size, SamplingConfig) instead of one per batch.

Log-probs are of the sampled token under the model's unmodified distribution (temperature 1, no
top-k/top-p truncation), i.e. exactly what `prime_jax.scoring.token_logprobs` returns for the same
tokens, as PPO's old log-probs require.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import Decoder, KVCache, init_cache, positions_from_mask
from prime_jax.sharding import (
    DEFAULT_RULES,
    activation_rules,
    fit_to_shape,
    logical_sharding,
    rules_for_mesh,
)

# Logical axes of a KV cache array [layers, batch, slots, kv_heads, head_dim].
_CACHE_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")
_MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample. Hashable: it is a static argument of the jitted loop.

  temperature 0 is greedy (top_k / top_p are then ignored); top_k 0 and top_p 1 disable those
  filters. Filters apply in HF's order: temperature, then top-k, then top-p (the smallest set of
  most likely tokens whose probability reaches top_p). `prompt_buckets` are the allowed padded
  prompt widths (None: powers of two from 16, see `bucket_length`).
  """

  max_new_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  n_samples: int = 1
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  prompt_buckets: Optional[tuple[int, ...]] = None

  def __post_init__(self):
    object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
    if self.prompt_buckets is not None:
      object.__setattr__(self, "prompt_buckets", tuple(sorted(int(b) for b in self.prompt_buckets)))
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
    if self.n_samples < 1:
      raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


class SampleOutput(NamedTuple):
  """Sampled responses; N = batch * n_samples rows, T = max_new_tokens columns.

  tokens: [N, T] int32, right-padded with `pad_id` after each row's EOS (or the budget).
  logprobs: [N, T] float32 log-prob of each sampled token at temperature 1; 0 on padding.
  lengths: [N] int32 number of response tokens, EOS included.
  mask: [N, T] bool, True for t < lengths (EOS included, padding excluded).
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  mask: jax.Array


def bucket_length(length: int, buckets: Optional[Sequence[int]] = None) -> int:
  """The padded width for `length`: the smallest bucket >= length.

  Default buckets are the powers of two from 16. A length above the largest given bucket is
  rounded up to a multiple of it.
  """
  if buckets is None:
    return max(_MIN_BUCKET, 1 << max(0, int(length) - 1).bit_length())
  buckets = sorted(buckets)
  for b in buckets:
    if b >= length:
      return b
  return -(-length // buckets[-1]) * buckets[-1]


def sample(
    params,
    prompt_tokens: jax.Array,
    prompt_valid: jax.Array,
    key: jax.Array,
    *,
    model_config: DecoderConfig,
    config: SamplingConfig,
    rules=DEFAULT_RULES,
) -> SampleOutput:
  """Samples `config.n_samples` responses for each prompt of a left-padded batch.

  Args:
    params: decoder params, on one device or sharded on a mesh. On a mesh everything follows
      `rules` on the params' mesh: the KV cache (batch over the `batch` rule's axes, kv heads over
      the `kv_heads` rule's), the prompts and outputs (rows over `batch`) and the decoder's
      activations. The params may be in any layout of that mesh, e.g. the sampler's
      (`prime_jax.sharding.reshard_params` with `sampler_rules(config)`): pass the same rules.
    prompt_tokens: [B, P] int token ids, left-padded.
    prompt_valid: [B, P] bool, True on real tokens; every row needs at least one.
    key: PRNG key (ignored when greedy). Same key and inputs give the same tokens.
    model_config: the decoder's config.
    config: the sampling settings.
    rules: logical-axis rules of the sampler's layout (used when the params live on a mesh).
  Returns:
    SampleOutput with N = B * n_samples rows, the samples of prompt b at rows b*n .. b*n+n-1.
  """
  args, static = _sample_args(
      params,
      prompt_tokens,
      prompt_valid,
      key,
      model_config=model_config,
      config=config,
      rules=rules,
  )
  out, _ = _sample_jit(*args, **static)
  return out


def _sample_args(params, prompt_tokens, prompt_valid, key, *, model_config, config, rules):
  """Checks and pads the prompts, places them and a zeroed cache; returns `_sample_jit`'s
  (positional args, static keyword args)."""
  prompt_tokens = np.asarray(prompt_tokens, np.int32)  # small: checked and padded on the host
  valid = np.asarray(prompt_valid, bool)
  if prompt_tokens.ndim != 2 or prompt_tokens.shape != valid.shape:
    raise ValueError(
        f"prompt_tokens {prompt_tokens.shape} and prompt_valid {valid.shape} must be "
        "one [B, P] shape"
    )
  if not valid[:, -1].all() or (np.diff(valid.astype(np.int8), axis=1) < 0).any():
    raise ValueError(
        "prompts must be left-padded: each row's real tokens must end at its last "
        "slot (an empty prompt is not allowed)"
    )
  longest = int(valid.sum(1).max())
  if longest + config.max_new_tokens > model_config.max_position_embeddings:
    raise ValueError(
        f"a prompt of {longest} tokens plus max_new_tokens={config.max_new_tokens} "
        f"exceeds the model's context of {model_config.max_position_embeddings} "
        "positions"
    )

  b, p = prompt_tokens.shape
  width = bucket_length(p, config.prompt_buckets)
  prompt_tokens = np.pad(prompt_tokens, ((0, 0), (width - p, 0)), constant_values=config.pad_id)
  valid = np.pad(valid, ((0, 0), (width - p, 0)))
  shape = (b * config.n_samples, width + config.max_new_tokens)
  cache = init_cache_like(params, model_config, *shape, rules=rules)
  mesh = _params_mesh(params)
  if mesh is not None:  # prompt rows over the batch axes (where they divide)
    rows = row_sharding(mesh, prompt_tokens.shape, rules)
    prompt_tokens, valid = jax.device_put((prompt_tokens, valid), rows)
  return (params, prompt_tokens, valid, key, cache), dict(
      model_config=model_config,
      config=config,
      mesh=mesh,
      rules=() if mesh is None else rules_for_mesh(rules, mesh),
  )


def _params_mesh(params):
  """The mesh of sharded params, None for params on one device (or host numpy arrays)."""
  leaf_sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
  return leaf_sharding.mesh if isinstance(leaf_sharding, NamedSharding) else None


def init_cache_like(
    params, model_config: DecoderConfig, batch: int, length: int, *, rules=DEFAULT_RULES
) -> KVCache:
  """A zeroed KV cache placed like `params`: on their device, or sharded on their mesh.

  A mesh axis that does not divide its cache dimension is left out (that dimension replicated).
  """
  mesh = _params_mesh(params)
  if mesh is None:
    return init_cache(model_config, batch, length)
  shape = (model_config.num_layers, batch, length, model_config.num_kv_heads, model_config.head_dim)
  sharding = cache_sharding(mesh, shape, rules)
  zeros = lambda: jnp.zeros(shape, jnp.dtype(model_config.dtype), device=sharding)
  return {"k": zeros(), "v": zeros()}


def cache_sharding(mesh, shape, rules=DEFAULT_RULES) -> NamedSharding:
  """Where a KV cache array [layers, batch, slots, kv_heads, head_dim] of `shape` lives."""
  return fit_to_shape(logical_sharding(mesh, _CACHE_AXES, rules), shape)


def row_sharding(mesh, shape, rules=DEFAULT_RULES) -> NamedSharding:
  """Where a per-row array [rows] or [rows, positions] (prompts, sampler outputs) lives: rows
  over the batch axes, as the cache's rows."""
  return fit_to_shape(logical_sharding(mesh, ("batch", "length")[: len(shape)], rules), shape)


def _choose_tokens(logits: jax.Array, key: jax.Array, config: SamplingConfig):
  """One token per row from f32 logits [N, V]; returns (tokens [N], temperature-1 logprobs [N])."""
  if config.greedy:
    tokens = jnp.argmax(logits, axis=-1)
  else:
    scaled = logits / config.temperature
    if config.top_k or config.top_p < 1:
      k = min(config.top_k or logits.shape[-1], logits.shape[-1])
      top, index = jax.lax.top_k(scaled, k)  # sorted descending
      if config.top_p < 1:
        probs = jax.nn.softmax(top, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # the first token is always kept
        top = jnp.where(mass_before < config.top_p, top, -jnp.inf)
      choice = jax.random.categorical(key, top, axis=-1)
      tokens = jnp.take_along_axis(index, choice[:, None], axis=-1)[:, 0]
    else:
      tokens = jax.random.categorical(key, scaled, axis=-1)
  tokens = tokens.astype(jnp.int32)
  picked = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
  return tokens, picked - jax.nn.logsumexp(logits, axis=-1)


def _is_eos(tokens: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.asarray(eos_ids, jnp.int32))


@functools.partial(
    jax.jit, static_argnames=("model_config", "config", "mesh", "rules"), donate_argnames=("cache",)
)
def _sample_jit(
    params, prompt_tokens, prompt_valid, key, cache, *, model_config, config, mesh=None, rules=()
):
  """The loop. prompt [B, P] (P already a bucket), cache [L, B*n, P+T, ...] zeroed and donated.

  Returns (SampleOutput, the cache) so the donated buffer is the loop's carry, updated in place.
  With a mesh it runs under `activation_rules(mesh, rules)`, and pins the cache and the outputs
  (rows over the batch axes) to the rules' layout.
  """
  with activation_rules(mesh, rules):
    out, cache = _sample_loop(
        params, prompt_tokens, prompt_valid, key, cache, model_config=model_config, config=config
    )
  if mesh is not None:
    out = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, row_sharding(mesh, x.shape, rules)), out
    )
    cache = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, cache_sharding(mesh, x.shape, rules)), cache
    )
  return out, cache


def _sample_loop(params, prompt_tokens, prompt_valid, key, cache, *, model_config, config):
  model = Decoder(model_config)
  variables = {"params": params}
  n = config.n_samples
  b, p = prompt_tokens.shape
  rows, budget = b * n, config.max_new_tokens
  chex.assert_shape(cache["k"], (model_config.num_layers, rows, p + budget, None, None))

  # Prefill each prompt once, then copy its cache into its n sample rows at slots [0, P).
  hidden, prefill = model.apply(
      variables,
      prompt_tokens,
      positions_from_mask(prompt_valid),
      prompt_valid,
      cache=init_cache(model_config, b, p, cache["k"].dtype),
      cache_offset=0,
  )
  cache = jax.tree.map(
      lambda full, part: jax.lax.dynamic_update_slice_in_dim(
          full, jnp.repeat(part, n, axis=1), 0, axis=2
      ),
      cache,
      prefill,
  )
  logits = jnp.repeat(model.apply(variables, hidden[:, -1], method=Decoder.logits), n, axis=0)
  # Response slots are all marked valid: causality already hides the ones not yet written.
  kv_valid = jnp.concatenate(
      [jnp.repeat(prompt_valid, n, axis=0), jnp.ones((rows, budget), bool)], axis=1
  )
  first_position = jnp.repeat(prompt_valid.sum(axis=1, dtype=jnp.int32), n)

  token, logprob = _choose_tokens(logits, jax.random.fold_in(key, 0), config)
  tokens = jnp.full((rows, budget), config.pad_id, jnp.int32).at[:, 0].set(token)
  logprobs = jnp.zeros((rows, budget), jnp.float32).at[:, 0].set(logprob)
  state = (
      jnp.int32(1),
      token,
      _is_eos(token, config.eos_ids),
      jnp.ones((rows,), jnp.int32),
      tokens,
      logprobs,
      cache,
  )

  def not_finished(state):
    t, _, done = state[:3]
    return (t < budget) & ~jnp.all(done)

  def step(state):
    # Feed response token t-1 (slot P+t-1), then choose token t; finished rows emit padding.
    t, prev, done, lengths, tokens, logprobs, cache = state
    hidden, cache = model.apply(
        variables,
        prev[:, None],
        (first_position + t - 1)[:, None],
        kv_valid,
        cache=cache,
        cache_offset=p + t - 1,
    )
    logits = model.apply(variables, hidden[:, 0], method=Decoder.logits)
    token, logprob = _choose_tokens(logits, jax.random.fold_in(key, t), config)
    token = jnp.where(done, config.pad_id, token)
    logprob = jnp.where(done, 0.0, logprob)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], t, axis=1)
    logprobs = jax.lax.dynamic_update_slice_in_dim(logprobs, logprob[:, None], t, axis=1)
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | _is_eos(token, config.eos_ids)
    return t + 1, token, done, lengths, tokens, logprobs, cache

  _, _, _, lengths, tokens, logprobs, cache = jax.lax.while_loop(not_finished, step, state)
  mask = jnp.arange(budget)[None, :] < lengths[:, None]
  return SampleOutput(tokens, logprobs, lengths, mask), cache
