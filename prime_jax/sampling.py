"""The sampler: jitted pure functions over a `DecodeState` (a rollout engine), and `sample`.

A `DecodeState` holds N rows: each row's response so far (tokens, temperature-1 log-probs), its
PRNG key and its own KV cache, one (k, v) pair of buffers per layer: values [N, kv_heads, S,
head_dim], keys in the decode attention's layout (`prime_jax.models.decoder.cache_axes`).
Rows use the ragged layout: a row's context (its prompt, then its response) starts at slot 0, so a
token's slot is its RoPE position and row b's filled slots are [0, filled[b]).

- `admit` prefills contexts into chosen rows (a prompt once for its n sample rows, or a prompt
  plus a response prefix carried over from an earlier round) and draws each row's next token.
- `decode` runs at most `max_steps` steps; a step feeds every live row its last token, writes that
  token's keys and values in place and attends over the row's filled slots only
  (`prime_jax.models.decoding`). Rows stop at any EOS id or at the budget; the loop stops early
  when no row is live.

`sample` is one jitted program: admit every prompt's n sample rows, decode to the budget.
`prime_jax.partial_rollouts` drives `admit` and `decode` in capped rounds instead.

Shapes are static: the context width is rounded up to a bucket (`bucket_length`), so a training
run compiles one program per (bucket, batch size, SamplingConfig) instead of one per batch.

Randomness is per row: row r's token t is drawn with fold_in(keys[r], t), whatever else is in
the batch, so a row gives the same tokens sampled in one call or resumed over several.

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

from prime_jax.models.attention import DECODE_IMPLS
from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import (
    CACHE_AXES,
    Decoder,
    KVCache,
    cache_axes,
    cache_shapes,
    chunk_to_cache_layout,
    init_cache,
)
from prime_jax.models.decoding import decode_step, split_layers
from prime_jax.sharding import (
    DEFAULT_RULES,
    activation_rules,
    fit_to_shape,
    logical_sharding,
    rules_for_mesh,
)

_MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample. Hashable: it is a static argument of the jitted loop.

  temperature 0 is greedy (top_k / top_p are then ignored); top_k 0 and top_p 1 disable those
  filters. Filters apply in HF's order: temperature, then top-k, then top-p (the smallest set of
  most likely tokens whose probability reaches top_p). `prompt_buckets` are the allowed padded
  prompt widths (None: powers of two from 16, see `bucket_length`). `attention` and
  `attention_block` choose the decode step's attention (`prime_jax.models.attention`): "xla"
  (pure JAX, any backend), "pallas_gpu" (Triton kernel) or "pallas_interpret" (that kernel in
  Pallas' interpreter: tests); keys are read in blocks of `attention_block` slots.
  """

  max_new_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  n_samples: int = 1
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  prompt_buckets: Optional[tuple[int, ...]] = None
  attention: str = "xla"
  attention_block: int = 256

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
    if self.attention not in DECODE_IMPLS:
      raise ValueError(f"attention must be one of {DECODE_IMPLS}, got {self.attention!r}")
    if self.attention_block < 16:
      raise ValueError(f"attention_block must be >= 16, got {self.attention_block}")
    block = self.attention_block
    if self.attention != "xla" and block & (block - 1):
      # Triton's lowering takes only power-of-two array sizes, and a block is one [block, d] load.
      raise ValueError(
          f"attention={self.attention!r} needs a power-of-two attention_block, got {block}"
      )

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


class DecodeState(NamedTuple):
  """N rows of the rollout engine; T = max_new_tokens, S cache slots per row.

  cache: per layer (k, v) in the compute dtype: v [N, kv_heads, S, head_dim], k in the layout
    of `cache_axes(config.attention)`.
  tokens: [N, T] int32 response tokens so far, `pad_id` after them.
  logprobs: [N, T] float32 their temperature-1 log-probs, 0 after them.
  lengths: [N] int32 response tokens drawn so far (the last is not yet in the cache).
  filled: [N] int32 cache slots holding keys and values (context + response[:lengths - 1]).
  live: [N] bool, still generating (no EOS yet, under the budget); False for idle rows.
  keys: [N] PRNG keys; token t of row r is drawn with fold_in(keys[r], t).
  """

  cache: KVCache
  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  filled: jax.Array
  live: jax.Array
  keys: jax.Array

  def output(self) -> SampleOutput:
    mask = jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]
    return SampleOutput(self.tokens, self.logprobs, self.lengths, mask)


class Prefix(NamedTuple):
  """Responses carried into `admit` (partial rollouts): R rows, T columns.

  tokens: [R, T] int32 the response so far, `pad_id` after it; logprobs: [R, T] float32, 0 after;
  lengths: [R] int32 tokens so far, each in [1, T). The context given with them is the prompt
  followed by these tokens.
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array


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


def cache_length(prompt_width: int, config: SamplingConfig) -> int:
  """Slots per row for prompts of `prompt_width` and the response budget, rounded up to a
  multiple of the attention block when it spans more than one, and always for the Pallas kernel:
  it reads whole [block, head_dim] blocks, and Triton takes power-of-two sizes only (a 192-slot
  cache failed to lower on an H200)."""
  slots = prompt_width + config.max_new_tokens
  block = config.attention_block
  if slots <= block and config.attention == "xla":
    return slots
  return -(-slots // block) * block


def right_align(
    tokens: np.ndarray, valid: np.ndarray, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded [B, P] prompts -> (contexts [B, P] starting at slot 0, right-padded; lengths
  [B] int32): the ragged layout of the cache. Host numpy."""
  lengths = valid.sum(axis=1).astype(np.int32)
  shift = (np.arange(tokens.shape[1])[None, :] + (tokens.shape[1] - lengths)[:, None]) % (
      tokens.shape[1]
  )
  context = np.take_along_axis(tokens, shift, axis=1)
  return np.where(np.arange(tokens.shape[1])[None, :] < lengths[:, None], context, pad_id), lengths


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
      `rules` on the params' mesh: the KV cache (rows over the `batch` rule's axes, kv heads over
      the `kv_heads` rule's), the prompts and outputs (rows over `batch`) and the decoder's
      activations. The params may be in any layout of that mesh, e.g. the sampler's
      (`prime_jax.sharding.reshard_params` with `sampler_rules(config)`): pass the same rules.
    prompt_tokens: [B, P] int token ids, left-padded.
    prompt_valid: [B, P] bool, True on real tokens; every row needs at least one.
    key: PRNG key (ignored when greedy). Same key and inputs give the same tokens; row r
      (= prompt r // n_samples) draws with fold_in(key, r).
    model_config: the decoder's config.
    config: the sampling settings.
    rules: logical-axis rules of the sampler's layout (used when the params live on a mesh).
  Returns:
    SampleOutput with N = B * n_samples rows, the samples of prompt b at rows b*n .. b*n+n-1.
  """
  args, static = sample_args(
      params,
      prompt_tokens,
      prompt_valid,
      key,
      model_config=model_config,
      config=config,
      rules=rules,
  )
  out, _ = sample_jit(*args, **static)
  return out


def check_prompts(prompt_tokens, prompt_valid, model_config: DecoderConfig, config: SamplingConfig):
  """Host checks of a left-padded prompt batch; returns it as (int32 tokens, bool valid) numpy."""
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
  return prompt_tokens, valid


def typed_key(key) -> jax.Array:
  """One typed PRNG key: `jax.random.key(seed)` as is, a raw uint32 key (`jax.random.PRNGKey`)
  wrapped (the same key: the same draws); anything else is an error naming what was passed."""
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.dtype != jnp.uint32 or key.ndim != 1:
      raise ValueError(
          f"sample needs one PRNG key (jax.random.key(seed)); got an array of {key.dtype} with"
          f" shape {key.shape}"
      )
    key = jax.random.wrap_key_data(key)
  if key.shape != ():
    raise ValueError(
        f"sample needs one PRNG key (jax.random.key(seed)), got keys of shape {key.shape}; row r"
        " draws with fold_in(key, r)"
    )
  return key


def sample_args(params, prompt_tokens, prompt_valid, key, *, model_config, config, rules):
  """Checks and right-aligns the prompts, places them and a fresh state; returns `sample_jit`'s
  (positional args, static keyword args)."""
  prompt_tokens, valid = check_prompts(prompt_tokens, prompt_valid, model_config, config)
  key = typed_key(key)
  b, p = prompt_tokens.shape
  width = bucket_length(p, config.prompt_buckets)
  prompt_tokens = np.pad(prompt_tokens, ((0, 0), (width - p, 0)), constant_values=config.pad_id)
  valid = np.pad(valid, ((0, 0), (width - p, 0)))
  context, lengths = right_align(prompt_tokens, valid, config.pad_id)
  state = new_state(params, model_config, config, b * config.n_samples, width, rules=rules)
  mesh = params_mesh(params)
  if mesh is not None:  # prompt rows over the batch axes (where they divide)
    context, lengths = jax.device_put(
        (context, lengths), (row_sharding(mesh, context.shape, rules), row_sharding(mesh, (b,)))
    )
  return (params, context, lengths, key, state), static_args(model_config, config, mesh, rules)


def static_args(model_config, config, mesh, rules) -> dict:
  """The static keyword arguments of the jitted sampler functions for params on `mesh`."""
  if mesh is not None and mesh.size > 1 and config.attention != "xla":
    # Under jit XLA would gather a sharded cache onto every device for the kernel's custom call.
    raise ValueError(
        f"attention={config.attention!r} runs on one device (no shard_map around the kernel "
        f"yet); use 'xla' on this {mesh.size}-device mesh"
    )
  return dict(
      model_config=model_config,
      config=config,
      mesh=mesh,
      rules=() if mesh is None else rules_for_mesh(rules, mesh),
  )


def params_mesh(params):
  """The mesh of sharded params, None for params on one device (or host numpy arrays)."""
  leaf_sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
  return leaf_sharding.mesh if isinstance(leaf_sharding, NamedSharding) else None


def init_cache_like(
    params,
    model_config: DecoderConfig,
    batch: int,
    length: int,
    *,
    rules=DEFAULT_RULES,
    impl: str = "xla",
) -> KVCache:
  """A zeroed KV cache for the decode attention `impl`, placed like `params`: on their device, or
  sharded on their mesh.

  A mesh axis that does not divide its cache dimension is left out (that dimension replicated).
  """
  mesh = params_mesh(params)
  if mesh is None:
    return init_cache(model_config, batch, length, impl=impl)
  dtype = jnp.dtype(model_config.dtype)
  zeros = lambda shape, axes: jnp.zeros(
      shape, dtype, device=cache_sharding(mesh, shape, rules, axes)
  )
  pair = tuple(zip(cache_shapes(model_config, batch, length, impl), cache_axes(impl)))
  return tuple(tuple(zeros(*a) for a in pair) for _ in range(model_config.num_layers))


def new_state(
    params,
    model_config: DecoderConfig,
    config: SamplingConfig,
    rows: int,
    prompt_width: int,
    *,
    rules=DEFAULT_RULES,
) -> DecodeState:
  """An idle `DecodeState` of `rows` rows for prompts up to `prompt_width` tokens, placed like
  `params` (rows over the batch axes on a mesh)."""
  slots = cache_length(prompt_width, config)
  t = config.max_new_tokens
  mesh = params_mesh(params)
  where = lambda shape: None if mesh is None else row_sharding(mesh, shape, rules)
  place = lambda x: jax.device_put(x, where(x.shape))
  # Placeholder keys until `admit`, placed as their raw data: host numpy arrays may be put on a
  # mesh that spans several processes (each process places its shards), a key array may not.
  key_data = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), rows)))
  return DecodeState(
      cache=init_cache_like(params, model_config, rows, slots, rules=rules, impl=config.attention),
      tokens=place(np.full((rows, t), config.pad_id, np.int32)),
      logprobs=place(np.zeros((rows, t), np.float32)),
      lengths=place(np.zeros((rows,), np.int32)),
      filled=place(np.zeros((rows,), np.int32)),
      live=place(np.zeros((rows,), bool)),
      keys=jax.random.wrap_key_data(place(key_data)),
  )


def state_shapes(
    model_config: DecoderConfig, config: SamplingConfig, rows: int, prompt_width: int
) -> DecodeState:
  """The shapes and dtypes (`jax.ShapeDtypeStruct`s, no placement) of `new_state`'s state:
  what a compile-only check lowers the sampler with (`prime_jax.compile_check`)."""
  slots, t = cache_length(prompt_width, config), config.max_new_tokens
  return jax.eval_shape(
      lambda: DecodeState(
          cache=init_cache(model_config, rows, slots, impl=config.attention),
          tokens=jnp.zeros((rows, t), jnp.int32),
          logprobs=jnp.zeros((rows, t), jnp.float32),
          lengths=jnp.zeros((rows,), jnp.int32),
          filled=jnp.zeros((rows,), jnp.int32),
          live=jnp.zeros((rows,), bool),
          keys=jax.random.split(jax.random.key(0), rows),
      )
  )


def cache_sharding(mesh, shape, rules=DEFAULT_RULES, axes=CACHE_AXES) -> NamedSharding:
  """Where one KV cache array of `shape` and logical `axes` lives (default: values, [rows,
  kv_heads, slots, head_dim])."""
  return fit_to_shape(logical_sharding(mesh, axes, rules), shape)


def row_sharding(mesh, shape, rules=DEFAULT_RULES) -> NamedSharding:
  """Where a per-row array [rows] or [rows, positions] (prompts, sampler outputs) lives: rows
  over the batch axes, as the cache's rows."""
  return fit_to_shape(logical_sharding(mesh, ("batch", "length")[: len(shape)], rules), shape)


def choose_tokens(logits: jax.Array, keys: jax.Array, config: SamplingConfig):
  """One token per row from f32 logits [N, V], row r drawing with keys[r] ([N] keys); returns
  (tokens [N], temperature-1 logprobs [N])."""
  if config.greedy:
    return greedy_tokens(logits)
  scaled = logits / config.temperature
  if config.top_k or config.top_p < 1:
    k = min(config.top_k or logits.shape[-1], logits.shape[-1])
    top, index = jax.lax.top_k(scaled, k)  # sorted descending
    if config.top_p < 1:
      probs = jax.nn.softmax(top, axis=-1)
      mass_before = jnp.cumsum(probs, axis=-1) - probs  # the first token is always kept
      top = jnp.where(mass_before < config.top_p, top, -jnp.inf)
    tokens = jnp.take_along_axis(index, draw_indices(keys, top)[:, None], axis=-1)[:, 0]
  else:
    tokens = draw_indices(keys, scaled)
  tokens = tokens.astype(jnp.int32)
  picked = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
  return tokens, picked - jax.nn.logsumexp(logits, axis=-1)


def greedy_tokens(logits: jax.Array):
  """The most likely token of each row of f32 logits [N, V] (the first, on ties: `jnp.argmax`'s
  choice) and its temperature-1 log-prob; returns (tokens [N] int32, logprobs [N]).

  Written as a max, then the first index holding it, with the max shared by the log-sum-exp:
  `jnp.argmax` is a variadic (value, index) reduction that XLA's CPU backend runs slowly. On the
  sampler benchmark's [32, 16384] logits, `argmax` + `logsumexp` added 1.5 ms to a 4.0 ms head
  matmul, this form 0.4 ms (`experiments/results/sampler/results.md`). A row with a NaN logit
  gets token V - 1 and a NaN log-prob.
  """
  v = logits.shape[-1]
  top = jnp.max(logits, axis=-1, keepdims=True)
  first = jnp.min(jnp.where(logits == top, jnp.arange(v, dtype=jnp.int32), v), axis=-1)
  tokens = jnp.minimum(first, v - 1)
  # The picked logit is `top`: log p = top - (top + log sum exp(logits - top)).
  return tokens, -jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1))


_DRAW_CHUNK = 128


def draw_indices(keys: jax.Array, logits: jax.Array) -> jax.Array:
  """One index per row from softmax(logits) ([N, V], -inf allowed), row r with keys[r].

  Inverse-CDF sampling with one uniform per row: the chunk of _DRAW_CHUNK entries whose
  cumulative mass crosses u * total, then the entry inside it. Exact up to float32 rounding of the
  cumulative sums. It draws one random number per row where the Gumbel-max trick
  (`jax.random.categorical`) draws V: with V = 16384 those bits took ~14 of 63 ms of a decode
  step's single-threaded CPU time on the sampler benchmark's 30.9M model (B = 32).
  """
  n, v = logits.shape
  width = min(_DRAW_CHUNK, v)
  chunks = -(-v // width)
  probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  probs = jnp.pad(probs, ((0, 0), (0, chunks * width - v))).reshape(n, chunks, width)
  mass = probs.sum(axis=-1)  # [N, chunks]
  cum = jnp.cumsum(mass, axis=-1)
  target = jax.vmap(jax.random.uniform)(keys) * cum[:, -1]

  def crossing(cumulative, masses, point):
    """Index of the entry whose cumulative mass crosses `point`, clamped to the last entry with
    mass (rounding can put `point` at or past the total)."""
    last = masses.shape[-1] - 1 - jnp.argmax(masses[:, ::-1] > 0, axis=-1)
    return jnp.minimum(jnp.sum(cumulative <= point[:, None], axis=-1), last)

  chunk = crossing(cum, mass, target)
  inside = jnp.take_along_axis(probs, chunk[:, None, None], axis=1)[:, 0]  # [N, width]
  before = jnp.take_along_axis(cum - mass, chunk[:, None], axis=-1)[:, 0]
  return chunk * width + crossing(jnp.cumsum(inside, axis=-1), inside, target - before)


def cache_slots(state: DecodeState) -> int:
  """Slots per row of a state's KV cache (its values are [N, kv_heads, S, head_dim])."""
  return state.cache[0][1].shape[2]


def _is_eos(tokens: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.asarray(eos_ids, jnp.int32))


def _step_keys(keys: jax.Array, t: jax.Array) -> jax.Array:
  """[N] keys for each row's token t[r]."""
  return jax.vmap(jax.random.fold_in)(keys, t)


def state_shardings(mesh, state: DecodeState, rules, config: SamplingConfig) -> DecodeState:
  """Where a `DecodeState`'s arrays live on `mesh` (a tree of `NamedSharding`s shaped like it):
  each cache array by its logical axes (`cache_axes(config.attention)`), the rest by rows over the
  batch axes. `new_state` places a state so, and the jitted functions pin it so."""
  axes = cache_axes(config.attention)
  return state._replace(
      cache=tuple(
          tuple(cache_sharding(mesh, x.shape, rules, a) for x, a in zip(pair, axes))
          for pair in state.cache
      ),
      **{f: row_sharding(mesh, getattr(state, f).shape, rules) for f in DecodeState._fields[1:]},
  )


def _constrain(mesh, rules, state: DecodeState, config: SamplingConfig) -> DecodeState:
  """Pins a state's layout (`state_shardings`) on a mesh; no-op without one."""
  if mesh is None:
    return state
  return jax.tree.map(
      jax.lax.with_sharding_constraint, state, state_shardings(mesh, state, rules, config)
  )


@functools.partial(
    jax.jit, static_argnames=("model_config", "config", "mesh", "rules"), donate_argnames=("state",)
)
def sample_jit(
    params, context, context_lengths, key, state, *, model_config, config, mesh=None, rules=()
):
  """Admits every prompt's n rows into the fresh, donated `state` and decodes to the budget.

  context [B, W] right-padded prompts, context_lengths [B]. Returns (SampleOutput, the state).
  """
  with activation_rules(mesh, rules):
    rows = jnp.arange(state.tokens.shape[0])
    state = _admit(
        params,
        state,
        context,
        context_lengths,
        None,  # every row, in order
        jax.vmap(jax.random.fold_in, (None, 0))(key, rows),
        None,
        repeat=config.n_samples,
        model_config=model_config,
        config=config,
    )
    state, _ = _decode(
        params, state, config.max_new_tokens - 1, model_config=model_config, config=config
    )
  state = _constrain(mesh, rules, state, config)
  out = state.output()
  if mesh is not None:
    out = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, row_sharding(mesh, x.shape, rules)), out
    )
  return out, state


@functools.partial(
    jax.jit,
    static_argnames=("repeat", "model_config", "config", "mesh", "rules"),
    donate_argnames=("state",),
)
def admit(
    params,
    state: DecodeState,
    context: jax.Array,
    context_lengths: jax.Array,
    rows: jax.Array,
    keys: jax.Array,
    prefix: Optional[Prefix] = None,
    *,
    repeat: int,
    model_config: DecoderConfig,
    config: SamplingConfig,
    mesh=None,
    rules=(),
) -> DecodeState:
  """Prefills G contexts into R = G * repeat rows of the donated `state`; see `_admit`."""
  with activation_rules(mesh, rules):
    state = _admit(
        params,
        state,
        context,
        context_lengths,
        rows,
        keys,
        prefix,
        repeat=repeat,
        model_config=model_config,
        config=config,
    )
  return _constrain(mesh, rules, state, config)


@functools.partial(
    jax.jit, static_argnames=("model_config", "config", "mesh", "rules"), donate_argnames=("state",)
)
def decode(
    params, state: DecodeState, max_steps, *, model_config, config, mesh=None, rules=()
) -> tuple[DecodeState, jax.Array]:
  """At most `max_steps` (a traced int: one program for any value) decode steps of the donated
  `state`; returns (state, steps run). See `_decode`."""
  with activation_rules(mesh, rules):
    state, steps = _decode(params, state, max_steps, model_config=model_config, config=config)
  return _constrain(mesh, rules, state, config), steps


def _admit(
    params, state, context, context_lengths, rows, keys, prefix, *, repeat, model_config, config
):
  """Prefills contexts into rows and draws each row's next token.

  Args:
    state: the engine; rows outside `rows` are untouched.
    context: [G, W] int right-padded contexts (W <= the cache's slots): a prompt, or a prompt
      then its response so far (`prefix`).
    context_lengths: [G] int real tokens of each context, >= 1.
    rows: [G * repeat] int the rows context g goes to (g * repeat .. g * repeat + repeat - 1);
      a row index outside [0, N) drops that copy (padding of a fixed-size admission). None:
      every row of the state in order (G * repeat = N), written as whole arrays: a scatter at
      traced row indices cannot stay sharded over rows (XLA's SPMD partitioner all-gathers its
      updates, the whole prefill's k/v of every layer on every device), a whole-row write can.
    keys: [G * repeat] PRNG keys of those rows.
    prefix: None (fresh prompts) or the rows' responses so far (`Prefix`, R = G * repeat).
    repeat: rows per context (a fresh prompt's n samples share one prefill).
  Returns:
    The state with those rows live (unless their first token ends them).
  """
  g, w = context.shape
  r, budget = g * repeat, state.tokens.shape[1]
  chex.assert_shape([context_lengths], (g,))
  chex.assert_shape([keys], (r,))
  if rows is None:
    chex.assert_shape([state.tokens], (r, budget))
    put = lambda full, part: part if part.dtype == full.dtype else part.astype(full.dtype)
    window = lambda axes: (slice(None),) * axes.index("length") + (slice(0, w),)
  else:
    chex.assert_shape([rows], (r,))
    put = lambda full, part: full.at[rows].set(part, mode="drop")
    window = lambda axes: (rows,) + (slice(None),) * (axes.index("length") - 1) + (slice(0, w),)

  def write(full, part, axes):
    """The rows' slots [0, W) of one cache array <- a prefill's [G, W, kv_heads, head_dim]."""
    part = jnp.repeat(chunk_to_cache_layout(part, axes), repeat, axis=0)
    return full.at[window(axes)].set(part.astype(full.dtype), mode="drop")

  slots = cache_slots(state)
  if w > slots:
    raise ValueError(f"contexts of width {w} do not fit the cache's {slots}")
  model = Decoder(model_config)
  variables = {"params": params}
  valid = jnp.arange(w)[None, :] < context_lengths[:, None]
  hidden, kv = model.apply(variables, context, jnp.broadcast_to(jnp.arange(w), (g, w)), valid)
  last = jnp.take_along_axis(hidden, (context_lengths - 1)[:, None, None], axis=1)[:, 0]
  logits = jnp.repeat(model.apply(variables, last, method=Decoder.logits), repeat, axis=0)
  if prefix is None:
    prefix = Prefix(
        jnp.full((r, budget), config.pad_id, jnp.int32),
        jnp.zeros((r, budget), jnp.float32),
        jnp.zeros((r,), jnp.int32),
    )
  chex.assert_shape([prefix.tokens, prefix.logprobs], (r, budget))
  token, logprob = choose_tokens(logits, _step_keys(keys, prefix.lengths), config)
  at = (jnp.arange(r), prefix.lengths)
  lengths = prefix.lengths + 1
  return DecodeState(
      cache=tuple(
          tuple(
              write(full, part[layer], axes)
              for full, part, axes in zip(pair, (kv["k"], kv["v"]), cache_axes(config.attention))
          )
          for layer, pair in enumerate(state.cache)
      ),
      tokens=put(state.tokens, prefix.tokens.at[at].set(token)),
      logprobs=put(state.logprobs, prefix.logprobs.at[at].set(logprob)),
      lengths=put(state.lengths, lengths),
      filled=put(state.filled, jnp.repeat(context_lengths, repeat)),
      live=put(state.live, ~_is_eos(token, config.eos_ids) & (lengths < budget)),
      keys=put(state.keys, keys),
  )


def _decode(params, state, max_steps, *, model_config, config):
  """Decode steps while some row is live, at most `max_steps`; returns (state, steps run).

  A step feeds each live row its last token at slot filled (its position), writes that token's
  keys and values there and draws the next token from attention over slots [0, filled + 1).
  Idle and finished rows compute but write nothing and attend to one slot, so they neither touch
  the cache nor lengthen the attention loop.
  """
  layers = split_layers(params, model_config)  # once per call: sliced weights in the loop copy
  n, budget = state.tokens.shape
  slots = cache_slots(state)
  rows = jnp.arange(n)

  def running(carry):
    steps, st = carry
    return (steps < max_steps) & jnp.any(st.live)

  def step(carry):
    steps, st = carry
    logits, cache = decode_step(
        params,
        layers,
        st.cache,
        st.tokens[rows, st.lengths - 1],
        jnp.where(st.live, st.filled, slots),
        jnp.where(st.live, st.filled + 1, 1),
        config=model_config,
        block=config.attention_block,
        impl=config.attention,
    )
    token, logprob = choose_tokens(logits, _step_keys(st.keys, st.lengths), config)
    column = jnp.where(st.live, st.lengths, budget)  # idle rows: out of range, dropped
    lengths = st.lengths + st.live
    return steps + 1, st._replace(
        cache=cache,
        tokens=st.tokens.at[rows, column].set(token, mode="drop"),
        logprobs=st.logprobs.at[rows, column].set(logprob, mode="drop"),
        lengths=lengths,
        filled=st.filled + st.live,
        live=st.live & ~_is_eos(token, config.eos_ids) & (lengths < budget),
    )

  steps, state = jax.lax.while_loop(running, step, (jnp.int32(0), state))
  return state, steps
