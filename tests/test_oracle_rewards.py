"""Oracle process rewards: character spans -> token positions -> rewards -> RLOO returns, checked
against plain loops (tests/algo/algo_numpy_reference.py) on the arithmetic task's real tokenizer."""

import jax.numpy as jnp
import numpy as np
import pytest

from algo import algo_numpy_reference as ref
from prime_jax import configs
from prime_jax.algo import normalize_process_rewards, prime_advantages
from prime_jax.oracle_rewards import oracle_token_rewards, span_token_mask, token_char_ends
from prime_jax.scoring import pad_sequences
from prime_jax.tasks import get_task, pair_maker, step_oracle, tasks_with
from prime_jax.tokenizer import load_tokenizer

TASK = get_task("arithmetic")


class PieceTokenizer:
  """Ids index `pieces`; "" pieces (EOS, padding) decode to nothing, as special tokens do."""

  def __init__(self, pieces):
    self.pieces = pieces

  def decode(self, ids):
    return "".join(self.pieces[i] for i in ids)


@pytest.fixture(scope="module")
def credit_task():
  c = configs.arithmetic_credit_config().task
  c.update(dict(num_train=400, num_eval=20, mistake_rate=0.1))
  return c


@pytest.fixture(scope="module")
def tokenizer(credit_task, tmp_path_factory):
  return load_tokenizer(TASK.train_tokenizer(credit_task, tmp_path_factory.mktemp("tok"), seed=0))


def test_char_ends_come_from_the_pieces_not_one_char_per_token():
  tok = PieceTokenizer(["", "\\boxed{", "2", "}", "\n"])
  assert token_char_ends(tok, [2, 4, 1, 2, 3, 0]).tolist() == [1, 2, 9, 10, 11, 11]
  ends = token_char_ends(tok, [2, 4, 1, 2, 3, 0])
  # "\boxed{" (characters 2..8) is one token: any span touching it selects it.
  assert np.flatnonzero(span_token_mask(ends, (2, 11))).tolist() == [2, 3, 4]
  assert np.flatnonzero(span_token_mask(ends, (5, 6))).tolist() == [2]
  # An empty span at the end of the text is charged to the last token (EOS here).
  assert np.flatnonzero(span_token_mask(ends, (11, 11))).tolist() == [5]


def test_pieces_that_do_not_concatenate_are_an_error():
  class Merging(PieceTokenizer):

    def decode(self, ids):
      return super().decode(ids).replace("ab", "c")

  with pytest.raises(ValueError, match="do not concatenate"):
    token_char_ends(Merging(["a", "b"]), [0, 1])


def test_step_oracle_lookup():
  assert step_oracle("arithmetic") is TASK
  with pytest.raises(ValueError, match="no step oracle"):
    step_oracle("eurus")


def test_pair_maker_lookup_names_the_tasks_that_build_pairs():
  assert pair_maker("arithmetic") is TASK
  assert tasks_with("mistake_pairs") == ["arithmetic"]
  with pytest.raises(
      ValueError, match=r"no mistake-pair builder \(tasks with one: \['arithmetic'\]\)"
  ):
    pair_maker("eurus")


def reference_rewards(tok, ids, span):
  """-1 on the tokens whose characters overlap `span`, with each token's characters found by
  decoding growing prefixes (not the pieces); the last token when none does."""
  out = np.zeros(len(ids))
  if span is None:
    return out
  hit = False
  for t in range(len(ids)):
    start, stop = len(tok.decode(ids[:t])), len(tok.decode(ids[: t + 1]))
    if start < span[1] and stop > span[0]:
      out[t], hit = -1.0, True
  if not hit:
    out[len(ids) - 1] = -1.0
  return out


def test_oracle_rewards_and_their_rloo_returns_match_plain_loops(credit_task, tokenizer):
  """Demonstrations with mistakes (and a few cut short) of the credit task: the oracle's span,
  token rewards, batch_norm and PRIME's returns and advantages against the numpy reference."""
  n, groups = 4, 8
  rng = np.random.default_rng(0)
  records = TASK.make_splits(credit_task, seed=0)["train"][:groups]
  texts, rows = [], []
  for r in records:
    for j in range(n):
      ids = tokenizer.encode(TASK.demonstration(credit_task, r, rng), add_special_tokens=False)
      if j == 3:  # stops early (maybe inside a step, or where one should start)
        ids = ids[: int(rng.integers(0, len(ids)))]
      text = tokenizer.decode(ids)
      ids = ids + [tokenizer.eos_ids[0]]
      texts.append(text)
      rows.append(ids)
  tokens, mask = pad_sequences(rows, length=96, pad_id=tokenizer.pad_id, left=False)
  lengths = mask.sum(axis=1)
  spans = [TASK.first_wrong_step(records[i // n], t) for i, t in enumerate(texts)]
  assert sum(s is None for s in spans) >= 4 and sum(s is not None for s in spans) >= 8
  acc = np.array(
      [
          float(t.endswith(f"{{{int(records[i // n].ground_truth):02d}}}"))
          for i, t in enumerate(texts)
      ]
  )

  rewards = oracle_token_rewards(spans, tokens, lengths, tokenizer)
  expected = np.zeros(rewards.shape)
  for i, ids in enumerate(rows):
    expected[i, : len(ids)] = reference_rewards(tokenizer, ids, spans[i])
  np.testing.assert_array_equal(rewards, expected)
  for i, span in enumerate(spans):  # a wrong step's line is 9 tokens (8 characters + newline)
    if span is not None and span[1] - span[0] == 9:
      assert rewards[i].sum() == -9

  scores = normalize_process_rewards(jnp.asarray(rewards), jnp.asarray(mask), num_shards=2)
  np.testing.assert_allclose(scores, ref.normalize_process_rewards(expected, lengths, 2), atol=1e-6)
  adv, returns = prime_advantages(scores, jnp.asarray(acc, jnp.float32), jnp.asarray(mask), n=n)
  ref_adv, ref_returns = ref.prime_advantages(
      ref.normalize_process_rewards(expected, lengths, 2), acc, lengths, n
  )
  np.testing.assert_allclose(returns, ref_returns, atol=1e-5)
  np.testing.assert_allclose(adv, ref_adv, atol=1e-4)
