"""Partial rollouts: sampling rounds capped at `round_steps` decode steps, unfinished rows carried.

Without it a sampling round decodes until its longest response ends, and rows that stopped early
compute padding meanwhile: with a heavy-tailed length mix most of a round's row-steps are waste.
The engine instead keeps the `rows` rows of one `prime_jax.sampling.DecodeState` busy across
rounds: a round admits queued groups into free rows (a prompt's n samples share one prefill),
decodes at most `round_steps` steps, and hands back the groups whose n samples have all finished;
their rows take the next round's groups. A long response simply stays in its row.

Across training steps: `suspend` (end of a step) moves each unfinished sample to the host with its
tokens, log-probs and PRNG key; the next step's first round prefills its prompt and response so
far under the new params and it continues. Each token keeps the log-prob of the params that drew
it, i.e. the exact behaviour log-prob (what rl.old_logp="sampler" uses; "recompute" recomputes
old log-probs under the current params, as without partial rollouts). With unchanged params a
resumed sample draws the same tokens it would have drawn uninterrupted (per-row keys).

Trade-offs (why it is off by default): a step's batch favours short responses (groups that finish
early are graded first; long ones join a later step), and a response carried across a step mixes
tokens of two policies. In exchange rows stop idling behind the longest response.

`utilisation` = useful tokens / (rows x steps run): a decode step runs every row, an admission
runs its admitted rows once (their first token).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prime_jax.distributed import process_group, to_host
from prime_jax.models.config import DecoderConfig
from prime_jax.sampling import (
    DecodeState,
    Prefix,
    SampleOutput,
    SamplingConfig,
    static_args,
    admit,
    bucket_length,
    cache_slots,
    decode,
    new_state,
    params_mesh,
    row_sharding,
)
from prime_jax.sharding import DEFAULT_RULES

# A prefill materialises [contexts, heads, width, width] f32 attention scores: admissions are
# split so that one call's stay under this.
_PREFILL_SCORES_BYTES = 1 << 30


@functools.partial(jax.jit, static_argnums=(1, 2))
def _row_keys(key: jax.Array, groups: int, n: int) -> jax.Array:
  """[groups, n, key data]: sample i of group j draws with fold_in(fold_in(key, j), i)."""
  fold = jax.vmap(jax.random.fold_in, (None, 0))
  return jax.random.key_data(
      jax.vmap(lambda k: fold(k, jnp.arange(n)))(fold(key, jnp.arange(groups)))
  )


@dataclasses.dataclass
class _Sample:
  """One response of a group: on the device (`row`), or on the host (`tokens` so far)."""

  key: np.ndarray  # PRNG key data of its row
  row: Optional[int] = None
  tokens: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
  logprobs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  done: bool = False


@dataclasses.dataclass
class Group:
  """A prompt and its n samples in flight."""

  position: int  # the prompt's source position (what the refill buffer holds)
  prompt: np.ndarray  # [P] int32 its token ids, unpadded
  samples: list[_Sample]
  admitted: bool = False  # prefilled once: its samples resume alone from then on

  @property
  def done(self) -> bool:
    return all(s.done for s in self.samples)


class RolloutEngine:
  """Rows kept busy across capped sampling rounds; see the module docstring.

  Args:
    model_config: the decoder's config.
    config: the sampling settings (`n_samples` per group, the budget, the attention).
    rows: device rows (a multiple of n_samples).
    prompt_width: the longest prompt (tokens) a group may have.
    round_steps: decode steps per round, >= 1.
    rules: the sampler's logical-axis rules (used when the params live on a mesh).
  """

  def __init__(
      self,
      *,
      model_config: DecoderConfig,
      config: SamplingConfig,
      rows: int,
      prompt_width: int,
      round_steps: int,
      rules=DEFAULT_RULES,
  ):
    if rows % config.n_samples:
      raise ValueError(f"rows={rows} is not a multiple of n_samples={config.n_samples}")
    if round_steps < 1:
      raise ValueError(f"round_steps must be >= 1, got {round_steps}")
    if process_group().count > 1:
      raise NotImplementedError("partial rollouts run on one process only")
    self.model_config, self.config, self.rules = model_config, config, rules
    self.rows, self.round_steps = rows, round_steps
    self.prompt_width = bucket_length(prompt_width, config.prompt_buckets)
    self._state: Optional[DecodeState] = None
    self._owner: list[Optional[_Sample]] = [None] * rows
    self._lengths = np.zeros(rows, np.int64)  # each row's response length at the last look
    self._groups: list[Group] = []  # queued or in flight, in admission order
    self.row_steps = 0  # rows x steps run, all rounds so far
    self.useful_tokens = 0  # tokens drawn for samples, all rounds so far

  @property
  def utilisation(self) -> float:
    return self.useful_tokens / self.row_steps if self.row_steps else 0.0

  def free_groups(self) -> int:
    """How many more groups the next round can admit (each needs n free rows)."""
    waiting = sum(s.row is None and not s.done for g in self._groups for s in g.samples)
    return (self._owner.count(None) - waiting) // self.config.n_samples

  @property
  def groups(self) -> list[Group]:
    """The groups queued or not yet finished, in the order they were queued."""
    return list(self._groups)

  def in_flight(self) -> list[int]:
    """Source positions of the groups queued or not yet finished."""
    return [g.position for g in self._groups]

  def add(self, positions: Sequence[int], prompts: Sequence[Sequence[int]], key: jax.Array):
    """Queues groups (at most `free_groups()`); group j's sample i draws with key
    fold_in(fold_in(key, j), i), as `sample` would draw row i of that prompt with
    fold_in(key, j)."""
    if len(positions) > self.free_groups():
      raise ValueError(f"{len(positions)} groups do not fit; {self.free_groups()} free")
    if not positions:
      return
    n = self.config.n_samples
    padded = 1 << max(0, len(positions) - 1).bit_length()  # a few shapes, a few compiles
    keys = np.asarray(_row_keys(key, padded, n))
    for j, (position, prompt) in enumerate(zip(positions, prompts, strict=True)):
      if not 0 < len(prompt) <= self.prompt_width:
        raise ValueError(f"prompt of {len(prompt)} tokens; 1..{self.prompt_width} allowed")
      samples = [_Sample(key=keys[j, i]) for i in range(n)]
      self._groups.append(Group(int(position), np.asarray(prompt, np.int32), samples))

  def round(self, params) -> tuple[list[Group], SampleOutput]:
    """Admits what waits, decodes at most `round_steps` steps, returns the groups finished now.

    Returns:
      (finished groups, in the order they were queued; their samples as one SampleOutput of
      len(groups) * n rows, a group's samples contiguous).
    """
    if self._state is None:
      self._state = new_state(
          params, self.model_config, self.config, self.rows, self.prompt_width, rules=self.rules
      )
    self._admit_resumed(params)
    self._admit_new(params)
    self._state, steps = decode(params, self._state, self.round_steps, **self._jit_args(params))
    self.row_steps += self.rows * int(steps)
    self._collect()
    finished = [g for g in self._groups if g.done]
    self._groups = [g for g in self._groups if not g.done]
    return finished, self._output(finished)

  def suspend(self):
    """Moves every unfinished sample to the host (end of a training step: the next round
    prefills them under the params it is given)."""
    if self._state is None:
      return
    self._collect()
    for row, sample in enumerate(self._owner):
      if sample is not None:
        sample.row, self._owner[row] = None, None
    self._state = self._state._replace(live=jnp.zeros_like(self._state.live))

  # ------------------------------------------------------------------------------------------

  def _jit_args(self, params) -> dict:
    return static_args(self.model_config, self.config, params_mesh(params), self.rules)

  def _place(self, params, *arrays):
    mesh = params_mesh(params)
    if mesh is None:
      return arrays
    return jax.device_put(arrays, tuple(row_sharding(mesh, a.shape, self.rules) for a in arrays))

  def _take_rows(self, samples: list[_Sample]) -> np.ndarray:
    free = [r for r, s in enumerate(self._owner) if s is None][: len(samples)]
    for row, sample in zip(free, samples, strict=True):
      self._owner[row], sample.row = sample, row
    return np.asarray(free, np.int32)

  def _admit_new(self, params):
    """Queued groups into free rows, n rows each, one prefill per prompt."""
    fresh = [g for g in self._groups if not g.admitted]
    fresh = fresh[: self._owner.count(None) // self.config.n_samples]
    if not fresh:
      return
    samples = [s for g in fresh for s in g.samples]
    rows = self._take_rows(samples)
    self._admit(
        params, [g.prompt for g in fresh], rows, samples, None, repeat=len(fresh[0].samples)
    )
    for g in fresh:
      g.admitted = True

  def _admit_resumed(self, params):
    """Samples suspended at the end of the last step: prompt + response so far, one row each."""
    pairs = [(g, s) for g in self._groups if g.admitted for s in g.samples]
    pairs = [(g, s) for g, s in pairs if s.row is None and not s.done]
    if not pairs:
      return
    t, pad = self.config.max_new_tokens, self.config.pad_id
    samples = [s for _, s in pairs]
    prefix = Prefix(
        np.stack([np.pad(s.tokens, (0, t - len(s.tokens)), constant_values=pad) for s in samples]),
        np.stack([np.pad(s.logprobs, (0, t - len(s.logprobs))) for s in samples]),
        np.asarray([len(s.tokens) for s in samples], np.int32),
    )
    rows = self._take_rows(samples)
    contexts = [np.concatenate([g.prompt, s.tokens]) for g, s in pairs]
    self._admit(params, contexts, rows, samples, prefix, repeat=1)

  def _admit(self, params, contexts, rows, samples, prefix: Optional[Prefix], *, repeat: int):
    """`admit` calls over the contexts, as many per call as keep the prefill's attention scores
    under _PREFILL_SCORES_BYTES (a resumed context can be prompt + budget long); each call's
    count padded to a power of two (padding rows drop) and its width to a bucket, so rounds
    reuse a few programs."""
    slots = cache_slots(self._state)
    width = min(bucket_length(max(len(c) for c in contexts)), slots)
    scores = 4 * self.model_config.num_heads * width * width  # f32 scores of one context
    per_call = 1 << (max(1, _PREFILL_SCORES_BYTES // scores).bit_length() - 1)
    for lo in range(0, len(contexts), per_call):
      part = slice(lo, lo + per_call)
      rows_part = slice(lo * repeat, (lo + per_call) * repeat)
      self._admit_call(
          params,
          contexts[part],
          width,
          rows[rows_part],
          samples[rows_part],
          None if prefix is None else Prefix(*(x[rows_part] for x in prefix)),
          repeat=repeat,
      )

  def _admit_call(self, params, contexts, width, rows, samples, prefix, *, repeat):
    g = len(contexts)
    padded = 1 << max(0, g - 1).bit_length()
    context = np.full((padded, width), self.config.pad_id, np.int32)
    lengths = np.ones(padded, np.int32)
    for i, c in enumerate(contexts):
      context[i, : len(c)], lengths[i] = c, len(c)
    all_rows = np.full(padded * repeat, self.rows, np.int32)  # out of range: dropped
    all_rows[: len(rows)] = rows
    keys = np.zeros((padded * repeat,) + samples[0].key.shape, np.uint32)
    keys[: len(samples)] = np.stack([s.key for s in samples])
    if prefix is not None:
      pad = lambda x: np.concatenate([x, np.zeros((padded - g,) + x.shape[1:], x.dtype)])
      prefix = Prefix(*(pad(np.asarray(x)) for x in prefix))
      self._lengths[rows] = prefix.lengths[:g]
    else:
      self._lengths[rows] = 0
    context, lengths, all_rows = self._place(params, context, lengths, all_rows)
    self._state = admit(
        params,
        self._state,
        context,
        lengths,
        all_rows,
        jax.random.wrap_key_data(keys),
        None if prefix is None else Prefix(*self._place(params, *prefix)),
        repeat=repeat,
        **self._jit_args(params),
    )
    self.row_steps += len(rows)

  def _collect(self):
    """Reads the rows back: counts the tokens drawn since the last look, stores what each sample
    has so far and marks the finished ones done (their rows free)."""
    st = self._state
    lengths, live = to_host(st.lengths), to_host(st.live)
    tokens, logprobs, keys = (
        to_host(st.tokens),
        to_host(st.logprobs),
        to_host(jax.random.key_data(st.keys)),
    )
    for row, sample in enumerate(self._owner):
      if sample is None:
        continue
      length = int(lengths[row])
      self.useful_tokens += length - int(self._lengths[row])
      self._lengths[row] = length
      sample.tokens, sample.logprobs = tokens[row, :length], logprobs[row, :length]
      sample.key = keys[row]
      if not live[row]:
        sample.done, sample.row, self._owner[row] = True, None, None

  def _output(self, groups: list[Group]) -> SampleOutput:
    t = self.config.max_new_tokens
    samples = [s for g in groups for s in g.samples]
    tokens = np.full((len(samples), t), self.config.pad_id, np.int32)
    logprobs = np.zeros((len(samples), t), np.float32)
    lengths = np.zeros(len(samples), np.int32)
    for i, s in enumerate(samples):
      tokens[i, : len(s.tokens)], logprobs[i, : len(s.tokens)] = s.tokens, s.logprobs
      lengths[i] = len(s.tokens)
    return SampleOutput(tokens, logprobs, lengths, np.arange(t)[None, :] < lengths[:, None])


def sampling_config(rl, tokenizer) -> SamplingConfig:
  """The rollouts' sampling settings from the rl config."""
  return SamplingConfig(
      max_new_tokens=rl.max_new_tokens,
      temperature=rl.temperature,
      top_p=rl.top_p,
      top_k=rl.top_k,
      n_samples=rl.n_samples,
      eos_ids=tuple(tokenizer.eos_ids),
      pad_id=tokenizer.pad_id,
      prompt_buckets=(rl.max_prompt_len,),
      attention=rl.decode_attention,
      attention_block=rl.decode_block,
  )


def make_engine(rl, model_config, tokenizer, rules=DEFAULT_RULES) -> Optional[RolloutEngine]:
  """The partial-rollout engine a run keeps across steps, None when rl.partial_rollout_steps is
  0 (off): rows for `sample_batch_prompts` (or `batch_prompts`) groups."""
  if not rl.partial_rollout_steps:
    return None
  return RolloutEngine(
      model_config=model_config,
      config=sampling_config(rl, tokenizer),
      rows=(rl.sample_batch_prompts or rl.batch_prompts) * rl.n_samples,
      prompt_width=rl.max_prompt_len,
      round_steps=rl.partial_rollout_steps,
      rules=rules,
  )
