"""Oracle process rewards: a task's own knowledge of each response's first wrong step, per token.

`rl.process_reward="oracle"` replaces the implicit PRM's q with these rewards in the process
stream (same granularity, normalisation and RLOO returns; `prime_jax.algo.update_step`): -1 on
every token of the first wrong step, 0 elsewhere, so the run measures what a perfect step-level
PRM could give on the task. A task provides the step oracle as `first_wrong_step(record,
response) -> (start, stop) | None`, a character span of the response text
(`prime_jax.tasks.registry.StepOracle`); this module turns spans into token positions.

Character offsets come from the tokenizer's decoding of each token on its own (the arithmetic
tokenizer is one character per token except the piece `\\boxed{`, and EOS decodes to nothing),
checked to add up to the decoding of the whole response, the text the oracle read.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

Span = Optional[tuple[int, int]]


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> np.ndarray:
  """[L] int: the end offset in `tokenizer.decode(token_ids)` of each token's text (token t
  covers characters [ends[t-1], ends[t]), ends[-1] = 0). Raises ValueError when the tokens'
  decodings do not concatenate to the whole decoding (a tokenizer whose pieces merge or strip
  when decoded together), where no such offsets exist."""
  pieces = [tokenizer.decode([int(i)]) for i in token_ids]
  text = tokenizer.decode([int(i) for i in token_ids])
  if "".join(pieces) != text:
    raise ValueError(
        "the tokens' decodings do not concatenate to the response's decoding, so character "
        f"spans have no token positions: {pieces[:20]} vs {text[:80]!r}"
    )
  return np.cumsum([len(p) for p in pieces], dtype=np.int64)


def span_token_mask(ends: np.ndarray, span: tuple[int, int]) -> np.ndarray:
  """[L] bool: the tokens whose characters overlap `span` = [start, stop). A span that covers no
  token's characters (the response stopped where the wrong step should start) selects the last
  token, which is where the response went wrong by stopping (EOS, or the truncation point)."""
  starts = np.concatenate([[0], ends[:-1]])
  start, stop = span
  mask = (starts < stop) & (ends > start)
  if not mask.any() and len(ends):
    mask[-1] = True
  return mask


def oracle_token_rewards(
    spans: Sequence[Span], tokens: np.ndarray, lengths: np.ndarray, tokenizer
) -> np.ndarray:
  """Oracle process rewards of a batch of responses.

  Args:
    spans: [N] the first wrong step's character span in each response's decoding, None when
      every step is right.
    tokens: [N, T] int response tokens, right-padded.
    lengths: [N] valid tokens per row (EOS included).
    tokenizer: the run's tokenizer (`prime_jax.tokenizer.Tokenizer`).
  Returns:
    [N, T] float32: -1 on the first wrong step's tokens, 0 elsewhere (and on padding).
  """
  rewards = np.zeros(np.shape(tokens), np.float32)
  for i, span in enumerate(spans):
    if span is not None:
      ends = token_char_ends(tokenizer, tokens[i, : lengths[i]])
      rewards[i, : lengths[i]] = np.where(span_token_mask(ends, span), -1.0, 0.0)
  return rewards
