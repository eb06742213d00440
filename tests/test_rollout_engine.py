"""Partial rollouts (`prime_jax.rollout_engine`) against one-shot sampling and `score` log-probs.

A tiny random decoder over a 128-token vocabulary; ids 1..11 are EOS ids, so responses stop after a
few tokens or run to the budget (a mixed length profile). References: `sample` of the same prompt
with the group's key (same params: identical tokens), and `token_logprobs` (the scorer the update
step uses) under the params that drew each token.
"""

import jax
import numpy as np
import pytest

from prime_jax.models import DecoderConfig, init_params
from prime_jax.rollout_engine import RolloutEngine
from prime_jax.sampling import SamplingConfig, sample
from prime_jax.scoring import pad_sequences, token_logprobs

MODEL = DecoderConfig(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=128,
)
N, T, PAD = 2, 16, 0
# Log-probs down to about -7 here: within 1e-5 absolute or 1e-5 relative (float32 rounding of the
# same numbers computed by a prefill, a decode step or the scorer).
CLOSE = dict(atol=1e-5, rtol=1e-5)
CONFIG = SamplingConfig(max_new_tokens=T, n_samples=N, eos_ids=tuple(range(1, 12)), pad_id=PAD)
RNG = np.random.default_rng(0)
PROMPTS = {10 + i: RNG.integers(12, 128, RNG.integers(2, 9)).tolist() for i in range(7)}


@pytest.fixture(scope="module")
def params():
  # A larger init than the default 0.02: a model far from uniform, so log-probs say something.
  return jax.tree.map(lambda a: a * 5, init_params(MODEL, jax.random.key(0)))


def engine(round_steps=3, rows=4):
  return RolloutEngine(
      model_config=MODEL, config=CONFIG, rows=rows, prompt_width=8, round_steps=round_steps
  )


def drive(eng, params_for_round, *, suspend_after=(), key=jax.random.key(5)):
  """Feeds PROMPTS to the engine round by round until all finish. Returns ({position: (tokens,
  logprobs, lengths) of its N samples, the round it finished}, {position: its group key},
  {round: {position: its samples' lengths} of the groups in flight right after a suspend})."""
  queue, results, keys, carried = list(PROMPTS), {}, {}, {}
  r = 0
  while len(results) < len(PROMPTS):
    round_key = jax.random.fold_in(key, r)
    new, queue = queue[: eng.free_groups()], queue[eng.free_groups() :]
    eng.add(new, [PROMPTS[p] for p in new], round_key)
    keys.update({p: jax.random.fold_in(round_key, j) for j, p in enumerate(new)})
    groups, out = eng.round(params_for_round(r))
    for i, g in enumerate(groups):
      rows = slice(i * N, (i + 1) * N)
      results[g.position] = (out.tokens[rows], out.logprobs[rows], out.lengths[rows], r)
    if r in suspend_after:
      eng.suspend()
      carried[r] = {g.position: [len(s.tokens) for s in g.samples] for g in eng.groups}
    r += 1
    assert r < 100
  return results, keys, carried


def score(params, prompt, tokens, lengths):
  p_tok, p_valid = pad_sequences([prompt] * N, pad_id=PAD, left=True)
  mask = np.arange(T)[None, :] < lengths[:, None]
  return np.where(mask, token_logprobs(params, p_tok, p_valid, tokens, mask, config=MODEL), 0)


def test_capped_rounds_with_a_suspend_equal_one_shot_sampling(params):
  """Rounds of 3 steps over 2 groups' rows, 7 prompts, every row suspended to the host and
  re-prefilled after round 1: each group's tokens are exactly `sample`'s for its key, and its
  log-probs equal `sample`'s and the scorer's."""
  eng = engine()
  results, keys, carried = drive(eng, lambda r: params, suspend_after=(1,))
  assert any(0 < n < T for lengths in carried[1].values() for n in lengths)  # resumed mid-way
  lengths = np.concatenate([r[2] for r in results.values()])
  assert lengths.min() < 4 and lengths.max() == T  # early stops and full-budget rows both
  for position, (tokens, logprobs, lengths, _) in results.items():
    p_tok, p_valid = pad_sequences([PROMPTS[position]], pad_id=PAD, left=True)
    ref = sample(params, p_tok, p_valid, keys[position], model_config=MODEL, config=CONFIG)
    np.testing.assert_array_equal(tokens, ref.tokens)
    np.testing.assert_array_equal(lengths, ref.lengths)
    np.testing.assert_allclose(logprobs, ref.logprobs, **CLOSE)
    np.testing.assert_allclose(logprobs, score(params, PROMPTS[position], tokens, lengths), **CLOSE)
  # Every drawn token counted once; an idle row-step is counted but not useful.
  assert eng.useful_tokens == sum(int(r[2].sum()) for r in results.values())
  assert 0 < eng.useful_tokens < eng.row_steps


def test_tokens_keep_the_log_probs_of_the_params_that_drew_them(params):
  """New params after a suspend (a training step): tokens drawn before it have the old params'
  log-probs, tokens drawn after it the new params' (the resumed prefix is re-prefilled)."""
  new_params = jax.tree.map(lambda a: a * 1.3, params)
  results, _, carried = drive(
      engine(), lambda r: params if r <= 1 else new_params, suspend_after=(1,)
  )
  assert any(0 < n < T for lengths in carried[1].values() for n in lengths)
  differ = 0.0
  for position, (tokens, logprobs, lengths, finished) in results.items():
    old = score(params, PROMPTS[position], tokens, lengths)
    new = score(new_params, PROMPTS[position], tokens, lengths)
    differ = max(differ, np.abs(old - new).max())
    # Tokens drawn before the suspend: all of a group finished by then, none of one added after.
    drawn_before = carried[1].get(position, [T if finished <= 1 else 0] * N)
    before = np.arange(T)[None, :] < np.asarray(drawn_before)[:, None]
    np.testing.assert_allclose(logprobs[before], old[before], **CLOSE)
    np.testing.assert_allclose(logprobs[~before], new[~before], **CLOSE)
  assert differ > 1e-2  # the two params really give these tokens different log-probs


def test_collect_rollouts_grades_finished_groups_and_carries_the_rest(params):
  """Two RL steps of `collect_rollouts` on one engine: every kept row's old log-probs are the
  scorer's, the utilisation metric is useful tokens over row-steps, and every drawn prompt is
  exactly once in a batch, the refill buffer or the engine."""
  import prime_jax.tasks  # noqa: F401  (registers the "arithmetic" ability)
  from prime_jax.data import PromptEncoder, PromptFormat, PromptIterator
  from prime_jax.rollout import collect_rollouts
  from prime_jax.rollout_engine import make_engine
  from test_rollout import CharTokenizer, record, rl_config

  class Tokenizer(CharTokenizer):
    eos_ids = CONFIG.eos_ids

  tokenizer = Tokenizer()
  rl = rl_config(
      n_samples=N,
      max_new_tokens=T,
      max_prompt_len=16,
      batch_prompts=2,
      sample_batch_prompts=3,
      filter_lo=0.0,  # random responses all score 0: keep every group
      filter_hi=1.0,
      partial_rollout_steps=3,
  )
  iterator = PromptIterator([record(i, 0) for i in range(40)], seed=0, shuffle=False)
  encoder = PromptEncoder(tokenizer, PromptFormat(apply_chat_template=False), rl.max_prompt_len)
  eng = make_engine(rl, MODEL, tokenizer)
  buffer, kept, in_flight_seen = [], [], 0
  for step in range(2):
    batch, buffer, metrics = collect_rollouts(
        params,
        model_config=MODEL,
        tokenizer=tokenizer,
        encoder=encoder,
        iterator=iterator,
        buffer=buffer,
        rl=rl,
        key=jax.random.key(step),
        engine=eng,
    )
    kept += batch.record_indices
    in_flight_seen += metrics["rollout/in_flight_groups"]
    assert metrics["rollout/in_flight_groups"] == len(eng.in_flight())
    assert metrics["rollout/utilisation"] == pytest.approx(
        metrics["rollout/tokens_sampled"] / metrics["rollout/row_steps"]
    )
    assert 0 < metrics["rollout/utilisation"] <= 1
    scored = token_logprobs(
        params,
        batch.prompt_tokens,
        batch.prompt_mask,
        batch.response_tokens,
        batch.response_mask,
        config=MODEL,
    )
    np.testing.assert_allclose(batch.old_logp, np.where(batch.response_mask, scored, 0), **CLOSE)
  assert in_flight_seen > 0  # some group really was carried over a step
  accounted = kept + buffer + eng.in_flight()
  assert sorted(accounted) == list(range(len(accounted)))  # drawn in order, none lost or doubled
