"""The online filter and refill buffer of `prime_jax.rollout`, driven by a fake sampler.

The fake sampler reads each prompt's text to decide its responses: prompt "q07 k=3" gets
`n_samples` responses of which the first 3 box the right answer, so every group's mean accuracy
is known in advance; " trunc" makes its responses hit the length budget without EOS. Grading goes
through the real verifier registry (the arithmetic task's exact-integer ability).
"""

import jax
import numpy as np
import pytest

import prime_jax.tasks  # noqa: F401  (registers the "arithmetic" ability)
from prime_jax import configs
from prime_jax.data import PromptEncoder, PromptFormat, PromptIterator, Record
from prime_jax.rollout import FilterStarvedError, collect_rollouts, group_pass_mask
from prime_jax.sampling import SampleOutput

N = 4  # samples per prompt
T = 12  # response budget (max_new_tokens)
EOS, PAD = 1, 0
ANSWER = "7"


class CharTokenizer:
  """One token per character (its code point); ids below 32 are EOS and padding."""

  eos_ids = (EOS,)
  pad_id = PAD

  def encode(self, text, add_special_tokens=False):
    return [ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids if i >= 32)


def record(i: int, k: int, *, truncated: bool = False, pad: int = 0) -> Record:
  text = f"q{i:02d} k={k}" + " trunc" * truncated + " " * pad
  return Record.from_chat(
      id=f"r{i}",
      data_source="fake",
      ability="arithmetic",
      messages=[{"role": "user", "content": text}],
      ground_truth=ANSWER,
  )


def response_tokens(correct: bool, truncated: bool) -> tuple[list[int], int]:
  """(T token ids, length): a boxed answer then EOS, or a budget-filling run without EOS."""
  text = "\\boxed{" + (ANSWER if correct else "8") + "}"
  if truncated:
    ids = [ord(c) for c in (text * T)[:T]]
    return ids, T
  ids = [ord(c) for c in text] + [EOS]
  return ids + [PAD] * (T - len(ids)), len(ids)


class FakeSampler:
  """A `sample_fn` whose responses follow the prompt text; records what it was asked."""

  def __init__(self):
    self.calls = []  # (prompt texts, key) per call

  def __call__(self, params, tokens, valid, key, *, model_config, config):
    assert config.n_samples == N and config.max_new_tokens == T
    texts = ["".join(chr(t) for t in row[v]) for row, v in zip(tokens, valid)]
    self.calls.append((texts, key))
    rows, lengths = [], []
    for text in texts:
      k = int(text.split("k=")[1].split()[0])
      for j in range(N):
        ids, length = response_tokens(j < k, "trunc" in text)
        rows.append(ids)
        lengths.append(length)
    lengths = np.asarray(lengths, np.int32)
    mask = np.arange(T)[None, :] < lengths[:, None]
    return SampleOutput(
        tokens=np.asarray(rows, np.int32),
        logprobs=np.where(mask, -0.5, 0.0).astype(np.float32),
        lengths=lengths,
        mask=mask,
    )


def rl_config(**overrides):
  rl = configs.base_config().rl
  rl.update(
      dict(
          n_samples=N,
          max_new_tokens=T,
          max_prompt_len=24,
          batch_prompts=2,
          sample_batch_prompts=0,
          filter_lo=0.25,
          filter_hi=0.75,
          max_empty_rounds=3,
          filter_truncated=False,
      )
  )
  rl.update(overrides)
  return rl


def collect(
    records, rl, buffer=(), sampler=None, iterator=None, key=None, processes=None, oracle=None
):
  tokenizer = CharTokenizer()
  encoder = PromptEncoder(tokenizer, PromptFormat(apply_chat_template=False), rl.max_prompt_len)
  iterator = iterator or PromptIterator(records, seed=0, shuffle=False)
  sampler = sampler or FakeSampler()
  batch, new_buffer, metrics = collect_rollouts(
      None,
      model_config=None,
      tokenizer=tokenizer,
      encoder=encoder,
      iterator=iterator,
      buffer=list(buffer),
      rl=rl,
      key=jax.random.key(0) if key is None else key,
      sample_fn=sampler,
      processes=processes,
      oracle=oracle,
  )
  return batch, new_buffer, metrics, sampler


def ids(positions):
  """Record ids of source positions (a buffer, a batch's record_indices): record(i) is r{i}."""
  return [f"r{i}" for i in positions]


# ------------------------------------------------------------------------- group_pass_mask


def test_group_pass_mask_keeps_means_in_the_closed_interval():
  # Group means 0, 1/4, 1/2, 3/4, 1.
  acc = np.array([[1.0] * k + [0.0] * (4 - k) for k in range(5)]).ravel()
  np.testing.assert_array_equal(group_pass_mask(acc, 4, 0.25, 0.75), [0, 1, 1, 1, 0])
  np.testing.assert_array_equal(group_pass_mask(acc, 4, 0.0, 1.0), [1] * 5)
  np.testing.assert_array_equal(group_pass_mask(acc, 4, 0.3, 0.7), [0, 0, 1, 0, 0])
  # The released 0.2..0.8 with n = 5: 1/5 and 4/5 sit exactly on the bounds and are kept.
  acc5 = np.array([[1.0] * k + [0.0] * (5 - k) for k in range(6)]).ravel()
  np.testing.assert_array_equal(group_pass_mask(acc5, 5, 0.2, 0.8), [0, 1, 1, 1, 1, 0])


def test_group_pass_mask_drops_groups_with_a_truncated_response():
  acc = np.array([1, 0, 1, 0, 1, 1, 0, 0], np.float32)
  truncated = np.array([0, 0, 0, 1, 0, 0, 0, 0], bool)
  np.testing.assert_array_equal(group_pass_mask(acc, 4, 0.2, 0.8, truncated), [0, 1])


# ------------------------------------------------------------------------- collect_rollouts


def test_keeps_exactly_the_groups_inside_the_bounds_with_their_rows():
  records = [record(i, k) for i, k in enumerate([0, 1, 2, 3, 4])]
  rl = rl_config(batch_prompts=3, sample_batch_prompts=5)
  batch, buffer, metrics, sampler = collect(records, rl)
  assert len(sampler.calls) == 1 and buffer == []
  assert ids(batch.record_indices) == ["r1", "r2", "r3"]  # means 1/4, 1/2, 3/4; not 0 or 1
  np.testing.assert_array_equal(batch.acc, [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
  assert (
      batch.response_tokens.shape == batch.response_mask.shape == batch.old_logp.shape == (3 * N, T)
  )
  assert batch.prompt_tokens.shape == batch.prompt_mask.shape == (3 * N, rl.max_prompt_len)
  encoder = PromptEncoder(
      CharTokenizer(), PromptFormat(apply_chat_template=False), rl.max_prompt_len
  )
  for g, i in enumerate(batch.record_indices):  # each group's n rows hold its own prompt
    for row in range(g * N, (g + 1) * N):
      valid = batch.prompt_mask[row]
      assert tuple(batch.prompt_tokens[row][valid]) == encoder.encode(records[i]).token_ids
      assert valid[-1] and not valid[0]  # left-padded
  assert batch.texts[:2] == ["\\boxed{7}", "\\boxed{8}"]
  np.testing.assert_array_equal(batch.response_mask.sum(1), [10] * 12)  # 9 chars + EOS
  assert metrics["rollout/rounds"] == 1 and metrics["rollout/prompts_sampled"] == 5
  assert metrics["rollout/filter_pass_rate"] == pytest.approx(3 / 5)
  assert metrics["rollout/acc_all_samples"] == pytest.approx(10 / 20)
  assert metrics["rollout/refill_buffer"] == 0
  assert metrics["rollout/tokens_sampled"] == 5 * N * 10


def test_surplus_passing_prompts_are_carried_over_and_used_first():
  records = [record(i, 2) for i in range(8)]  # every group passes
  rl = rl_config(batch_prompts=2, sample_batch_prompts=3)
  iterator = PromptIterator(records, seed=0, shuffle=False)
  batch, buffer, metrics, _ = collect(records, rl, iterator=iterator)
  assert ids(batch.record_indices) == ["r0", "r1"] and ids(buffer) == ["r2"]
  assert metrics["rollout/refill_buffer"] == 1
  assert metrics["rollout/filter_pass_rate"] == 1.0

  batch, buffer, _, sampler = collect(records, rl, buffer=buffer, iterator=iterator)
  # The held prompt is sampled first, then the iterator continues where it stopped.
  assert [t.split()[0] for t in sampler.calls[0][0]] == ["q02", "q03", "q04"]
  assert ids(batch.record_indices) == ["r2", "r3"] and ids(buffer) == ["r4"]


def test_a_buffer_longer_than_a_round_is_drawn_in_order_and_kept():
  records = [record(i, 2) for i in range(8)]
  held = collect(records, rl_config(batch_prompts=1, sample_batch_prompts=5))[1]
  assert ids(held) == ["r1", "r2", "r3", "r4"]
  rl = rl_config(batch_prompts=1, sample_batch_prompts=2)
  iterator = PromptIterator(records, seed=0, shuffle=False)
  batch, buffer, _, sampler = collect(records, rl, buffer=held, iterator=iterator)
  assert [t.split()[0] for t in sampler.calls[0][0]] == ["q01", "q02"]
  assert iterator.state()["position"] == 0  # nothing new was drawn
  assert ids(batch.record_indices) == ["r1"] and ids(buffer) == ["r3", "r4", "r2"]


def test_refills_over_rounds_with_one_key_per_round():
  # One prompt per round; rounds 1 and 3 pass, rounds 2 and 4 (k=0, k=4) do not.
  records = [record(i, k) for i, k in enumerate([2, 0, 4, 1, 3])]
  rl = rl_config(batch_prompts=2, sample_batch_prompts=1, max_empty_rounds=3)
  key = jax.random.key(5)
  batch, buffer, metrics, sampler = collect(records, rl, key=key)
  assert ids(batch.record_indices) == ["r0", "r3"] and buffer == []
  assert metrics["rollout/rounds"] == 4 and metrics["rollout/prompts_sampled"] == 4
  assert metrics["rollout/filter_pass_rate"] == pytest.approx(2 / 4)
  assert metrics["rollout/acc_all_samples"] == pytest.approx((2 + 0 + 4 + 1) / 16)
  for r, (_, round_key) in enumerate(sampler.calls):
    np.testing.assert_array_equal(
        jax.random.key_data(round_key), jax.random.key_data(jax.random.fold_in(key, r))
    )


def test_gives_up_after_max_empty_rounds_in_a_row():
  records = [record(i, k) for i, k in enumerate([0, 4, 4, 0, 0, 4])]
  rl = rl_config(
      batch_prompts=1, sample_batch_prompts=2, max_empty_rounds=3, filter_lo=0.2, filter_hi=0.8
  )
  sampler = FakeSampler()
  with pytest.raises(FilterStarvedError) as e:
    collect(records, rl, sampler=sampler)
  assert len(sampler.calls) == 3
  message = str(e.value)
  for part in (
      "[0.2, 0.8]",
      "3 sampling rounds in a row",
      "2 prompts each",
      "filter_lo",
      "max_empty_rounds",
  ):
    assert part in message


def test_a_passing_round_resets_the_empty_round_count():
  # Rounds: empty, pass, empty, empty, pass. Three empty rounds in all, never two in a row.
  records = [record(i, k) for i, k in enumerate([0, 2, 0, 4, 2])]
  rl = rl_config(batch_prompts=2, sample_batch_prompts=1, max_empty_rounds=3)
  batch, _, metrics, _ = collect(records, rl)
  assert ids(batch.record_indices) == ["r1", "r4"] and metrics["rollout/rounds"] == 5
  with pytest.raises(FilterStarvedError, match="2 sampling rounds in a row"):
    collect(records, rl_config(batch_prompts=2, sample_batch_prompts=1, max_empty_rounds=2))


def test_filter_truncated_drops_groups_that_hit_the_length_budget():
  records = [record(0, 2, truncated=True), record(1, 2), record(2, 2)]
  rl = rl_config(batch_prompts=2, sample_batch_prompts=3)
  batch, buffer, _, _ = collect(records, rl)
  assert ids(batch.record_indices) == ["r0", "r1"] and ids(buffer) == ["r2"]  # off: kept
  assert batch.response_mask[:N].all()  # full-length rows, no EOS
  batch, buffer, metrics, _ = collect(
      records, rl_config(batch_prompts=2, sample_batch_prompts=3, filter_truncated=True)
  )
  assert ids(batch.record_indices) == ["r1", "r2"] and buffer == []
  assert metrics["rollout/filter_pass_rate"] == pytest.approx(2 / 3)


def test_a_response_ending_with_eos_exactly_at_the_budget_is_not_truncated():
  class EosAtBudget(FakeSampler):

    def __call__(self, *args, **kwargs):
      out = super().__call__(*args, **kwargs)
      tokens, lengths = np.array(out.tokens), np.full_like(out.lengths, T)
      tokens[:, -1] = EOS
      return out._replace(tokens=tokens, lengths=lengths, mask=np.ones_like(out.mask))

  rl = rl_config(batch_prompts=1, sample_batch_prompts=1, filter_truncated=True)
  batch, _, _, _ = collect([record(0, 2)], rl, sampler=EosAtBudget())
  assert ids(batch.record_indices) == ["r0"]


def test_prompts_over_max_prompt_len_are_dropped_and_counted():
  records = [record(0, 2, pad=30), record(1, 2), record(2, 2, pad=30), record(3, 2)]
  rl = rl_config(batch_prompts=2, sample_batch_prompts=2)
  batch, _, metrics, sampler = collect(records, rl)
  assert ids(batch.record_indices) == ["r1", "r3"]
  assert metrics["rollout/prompts_dropped_too_long"] == 2
  assert len(sampler.calls) == 1


class WrongDigitOracle:
  """A step oracle for the fake responses: a wrong answer's digit is its wrong step."""

  def first_wrong_step(self, record, response):
    assert record.ground_truth == ANSWER
    digit = response.find("8")
    return None if digit < 0 else (digit, digit + 1)


def test_oracle_rewards_ride_with_the_kept_rows():
  records = [record(0, 0), record(1, 2), record(2, 4), record(3, 1)]
  batch, _, metrics, _ = collect(records, rl_config(), oracle=WrongDigitOracle())
  assert batch.process_rewards.shape == batch.response_tokens.shape
  expected = np.zeros(batch.process_rewards.shape, np.float32)
  expected[batch.acc == 0, len("\\boxed{")] = -1.0  # the digit's token, one per character
  np.testing.assert_array_equal(batch.process_rewards, expected)
  np.testing.assert_array_equal(batch.update_inputs()["process_rewards"], expected)
  assert metrics["rollout/oracle_wrong_step_frac"] == 1 - 7 / 16  # of every sampled response
  assert metrics["rollout/oracle_wrong_step_frac_correct"] == 0.0
  plain, _, plain_metrics, _ = collect(records, rl_config())
  assert plain.process_rewards is None and "process_rewards" not in plain.update_inputs()
  assert not any("oracle" in k for k in plain_metrics)
