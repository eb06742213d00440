r"""A direct measure of an implicit PRM's process credit, on matched response pairs.

A pair is a correct response and a copy with one injected mistake, identical up to the first
wrong token t* (the task's `mistake_pairs`, or JSONL rows {"prompt", "good", "bad"}). With
q[t] = log π_prm(y_t | ·) − log π_ref(y_t | ·) (nats; `prime_jax.algo.implicit_rewards`), a PRM
that gives process credit should

  * dip at the mistake: dip = q_bad[t*] − q_good[t*] < 0. The contexts before t* are the same, so
    the dip is how much more the PRM than the reference prefers the right token over the wrong one;
  * localise it: the step (a line of the response) with the lowest summed q in the bad response
    is the wrong one, more often than chance (1 / number of steps);
  * keep or lower q after the mistake: the bad response's later tokens are locally consistent
    continuations of a wrong value;
  * rank the pair at response level: Σ q_good > Σ q_bad (the sign of the PRM's logit difference).

It also reports β·NLL_ref(good). Since log π_prm <= 0, Σ_t q <= NLL_ref(y), so the PRM's logit
z = β·Σ q is capped at β·NLL_ref(y) and its P(correct) = sigmoid(z) at sigmoid(β·NLL_ref(y)): at
β = 0.05 on a short, confident response the PRM cannot say "correct" however it is trained.

Responses are scored with EOS appended, as the trainer scores sampled responses. Steps are lines:
token t belongs to the step numbered by the newlines decoded from the tokens before it (a token
that spans a line break counts to the line it ends).

Layout: `tokenize_pairs` (rows -> `TokenPair`s), `pair_arrays` (-> padded `PairArrays`),
`score` / `measure` (model forwards, jitted once per shape), then pure numpy metric math:
`pair_metrics` (per pair) and `summarize` (the summary the CLI writes and the trainer logs under
`prm_credit/`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from prime_jax.data import PromptEncoder, Record
from prime_jax.distributed import to_host
from prime_jax.models.config import DecoderConfig
from prime_jax.scoring import pad_sequences, token_logprobs

STEP_SEPARATOR = "\n"
QUANTILES = (10, 50, 90)


class PairError(ValueError):
  """A pair row that cannot be measured; the message starts with the row's place."""


@dataclasses.dataclass(frozen=True)
class TokenPair:
  """One pair as token ids. `good` and `bad` are response ids with EOS last; they agree on
  positions < first_diff and differ at first_diff (t*). `*_steps[t]`: the step (line) of token t."""

  where: str  # the row's place: "file:line" or a pair id
  prompt: tuple[int, ...]
  good: tuple[int, ...]
  bad: tuple[int, ...]
  first_diff: int
  good_steps: tuple[int, ...]
  bad_steps: tuple[int, ...]


def check_pair_row(row: dict, where: str) -> None:
  """Raises `PairError` naming `where` unless `row` is {"prompt": text or chat messages, "good":
  text, "bad": text[, "ability": name]} with a bad copy that differs from the good one."""
  prompt = row.get("prompt")
  messages_ok = isinstance(prompt, list) and all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in prompt
  )
  if not ((isinstance(prompt, str) and prompt) or (messages_ok and prompt)):
    raise PairError(
        f"{where}: `prompt` must be a non-empty string or a list of {{'role', 'content'}} "
        "chat messages"
    )
  for field in ("good", "bad"):
    if not isinstance(row.get(field), str) or not row[field]:
      raise PairError(f"{where}: `{field}` must be a non-empty response string")
  if row["good"] == row["bad"]:
    raise PairError(f"{where}: the bad response is identical to the good one")
  if "ability" in row and not isinstance(row["ability"], str):
    raise PairError(f"{where}: `ability` must be a string")


def token_steps(tokenizer, ids: Sequence[int]) -> tuple[int, ...]:
  """The step (line) index of each token: the number of STEP_SEPARATORs decoded from the tokens
  before it. Each distinct id is decoded once."""
  breaks: dict[int, int] = {}
  steps, step = [], 0
  for i in ids:
    steps.append(step)
    if i not in breaks:
      breaks[i] = tokenizer.decode([i]).count(STEP_SEPARATOR)
    step += breaks[i]
  return tuple(steps)


def tokenize_pairs(
    rows: Sequence[tuple[str, dict]], encoder: PromptEncoder, *, ability: str
) -> list[TokenPair]:
  """(place, row) pairs -> `TokenPair`s. The prompt (a string is one user message) is rendered by
  `encoder` as RL renders prompts; `ability` (for the format's user suffix) applies to rows
  without their own. Raises `PairError` naming the row on a malformed row or on a bad response
  that tokenises like the good one."""
  tokenizer = encoder.tokenizer
  eos = [tokenizer.eos_ids[0]] if tokenizer.eos_ids else []
  pairs = []
  for where, row in rows:
    check_pair_row(row, where)
    prompt = row["prompt"]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    # Rendering reads only the chat and the ability: no ground truth is needed.
    record = Record.from_chat(
        id=where,
        data_source="prm_credit",
        ability=row.get("ability", ability),
        messages=messages,
        ground_truth="",
    )
    good, bad = (
        tuple(tokenizer.encode(row[f], add_special_tokens=False) + eos) for f in ("good", "bad")
    )
    differ = [t for t, (a, b) in enumerate(zip(good, bad)) if a != b]
    first_diff = differ[0] if differ else min(len(good), len(bad))
    if good == bad or first_diff >= min(len(good), len(bad)):
      # A bad copy that is a strict prefix of the good one (or the reverse) has no wrong token.
      raise PairError(f"{where}: the good and bad responses have no differing token")
    pairs.append(
        TokenPair(
            where,
            encoder.encode(record).token_ids,
            good,
            bad,
            first_diff,
            token_steps(tokenizer, good),
            token_steps(tokenizer, bad),
        )
    )
  return pairs


class PairArrays(NamedTuple):
  """M pairs, padded. Model inputs have 2M rows, the M good responses then the M bad ones."""

  prompt_tokens: np.ndarray  # [2M, P] int32, left-padded
  prompt_valid: np.ndarray  # [2M, P] bool
  response_tokens: np.ndarray  # [2M, T] int32, right-padded
  response_mask: np.ndarray  # [2M, T] bool
  first_diff: np.ndarray  # [M] int: t*
  bad_steps: np.ndarray  # [M, T] int: the bad response's step of each token, -1 on padding


def pair_arrays(pairs: Sequence[TokenPair], *, pad_id: int) -> PairArrays:
  if not pairs:
    raise ValueError("no pairs to measure")
  prompts = [p.prompt for p in pairs] * 2
  responses = [p.good for p in pairs] + [p.bad for p in pairs]
  prompt_tokens, prompt_valid = pad_sequences(prompts, pad_id=pad_id, left=True)
  response_tokens, response_mask = pad_sequences(responses, pad_id=pad_id, left=False)
  bad_steps = np.full((len(pairs), response_tokens.shape[1]), -1, np.int64)
  for i, p in enumerate(pairs):
    bad_steps[i, : len(p.bad_steps)] = p.bad_steps
  first_diff = np.array([p.first_diff for p in pairs], np.int64)
  return PairArrays(
      prompt_tokens, prompt_valid, response_tokens, response_mask, first_diff, bad_steps
  )


# --------------------------------------------------------------------------- model scoring


def score(
    params,
    arrays: PairArrays,
    *,
    model_config: DecoderConfig,
    batch_size: int,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> np.ndarray:
  """Log-probs [2M, T] float32 (nats, 0 on padding) of every response token of `arrays` under
  `params`, in batches of `batch_size` rows (the last one padded by repeating its last row, so
  one program is compiled). With `mesh` (params sharded on it, possibly over several processes)
  the inputs are placed replicated on it and the results gathered to every process."""
  rows = arrays.response_tokens.shape[0]
  batch_size = min(batch_size, rows)
  inputs = (arrays.prompt_tokens, arrays.prompt_valid, arrays.response_tokens, arrays.response_mask)
  pad = -rows % batch_size
  inputs = [np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) for x in inputs]
  out = []
  for start in range(0, rows + pad, batch_size):
    batch = [x[start : start + batch_size] for x in inputs]
    if mesh is not None:
      batch = jax.device_put(batch, NamedSharding(mesh, PartitionSpec()))
    out.append(to_host(token_logprobs(params, *batch, config=model_config)))
  return np.concatenate(out)[:rows]


def measure(
    prm_params,
    ref_params,
    arrays: PairArrays,
    *,
    prm_config: DecoderConfig,
    ref_config: DecoderConfig,
    beta: float,
    batch_size: int,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> dict[str, np.ndarray]:
  """Scores the pairs with the PRM and the reference; returns `pair_metrics`' per-pair arrays
  and the token-level q_good, q_bad [M, T] (nats, 0 on padding)."""
  logp_prm = score(prm_params, arrays, model_config=prm_config, batch_size=batch_size, mesh=mesh)
  logp_ref = score(ref_params, arrays, model_config=ref_config, batch_size=batch_size, mesh=mesh)
  m = len(arrays.first_diff)
  q = np.where(arrays.response_mask, logp_prm - logp_ref, 0.0)
  mask = arrays.response_mask
  per_pair = pair_metrics(
      q[:m],
      q[m:],
      mask[:m],
      mask[m:],
      arrays.first_diff,
      arrays.bad_steps,
      -logp_ref[:m].sum(axis=1),
      beta=beta,
  )
  return dict(per_pair, q_good=q[:m], q_bad=q[m:])


# --------------------------------------------------------------------------- metric math


def _mean_after(q: np.ndarray, mask: np.ndarray, first_diff: np.ndarray) -> np.ndarray:
  """[M] mean of q over the valid positions t > first_diff of each row; NaN where there are none."""
  after = mask & (np.arange(q.shape[1])[None, :] > first_diff[:, None])
  count = after.sum(axis=1)
  total = np.where(after, q, 0.0).sum(axis=1)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pair_metrics(
    q_good: np.ndarray,
    q_bad: np.ndarray,
    good_mask: np.ndarray,
    bad_mask: np.ndarray,
    first_diff: np.ndarray,
    bad_steps: np.ndarray,
    nll_ref_good: np.ndarray,
    *,
    beta: float,
) -> dict[str, np.ndarray]:
  """Per-pair process-credit numbers.

  Args:
    q_good, q_bad: [M, T] q = log π_prm − log π_ref of each response token (nats), 0 on padding.
    good_mask, bad_mask: [M, T] bool, True on real tokens.
    first_diff: [M] int, t* (a valid position of both responses).
    bad_steps: [M, T] int, the step (line) of each bad-response token, -1 on padding.
    nll_ref_good: [M] −Σ_t log π_ref of the good response (nats).
    beta: the PRM β.
  Returns (each [M] float64 unless said):
    dip: q_bad[t*] − q_good[t*].
    wrong_step: the step holding t*; num_steps: steps of the bad response.
    step_q_bad: [M, S] the bad response's q summed over each step's tokens, NaN past its last
      step. A sum, not a mean: the sums add up to Σ q, the PRM's response score over β, so a step's
      sum is its share of the outcome logit; a mean would shrink a one-digit mistake by the
      length of its line.
    localised: 1 when the wrong step alone has the lowest step sum, 1/k when it ties with k − 1
      others (the expected hit of a random tie-break), else 0; an untrained PRM (q ≡ 0) scores
      exactly the chance rate 1 / num_steps.
    q_after_bad, q_after_good: mean q over each response's tokens after t* (NaN if none).
    sum_q_good, sum_q_bad: Σ_t q; pair_correct: 1.0 iff sum_q_good > sum_q_bad (a tie is wrong,
      as in `prime_jax.algo.prm_pair_accuracy_strict`).
    beta_nll_ref: β·NLL_ref(good), the cap of the PRM's logit z = β·Σ q on the good response;
      p_correct_cap: sigmoid of it, the highest P(correct) the PRM can give that response.
  """
  m = len(first_diff)
  rows = np.arange(m)
  q_good = np.where(good_mask, q_good, 0.0).astype(np.float64)
  q_bad = np.where(bad_mask, q_bad, 0.0).astype(np.float64)
  num_steps = bad_steps.max(axis=1) + 1
  step_q = np.zeros((m, int(num_steps.max())))
  r, t = np.nonzero(bad_mask)
  np.add.at(step_q, (r, bad_steps[r, t]), q_bad[r, t])
  exists = np.arange(step_q.shape[1])[None, :] < num_steps[:, None]
  step_q = np.where(exists, step_q, np.nan)
  wrong_step = bad_steps[rows, first_diff]
  lowest = exists & (step_q == np.nanmin(step_q, axis=1, keepdims=True))
  localised = lowest[rows, wrong_step] / lowest.sum(axis=1)
  sum_good, sum_bad = q_good.sum(axis=1), q_bad.sum(axis=1)
  beta_nll = beta * np.asarray(nll_ref_good, np.float64)
  return dict(
      dip=q_bad[rows, first_diff] - q_good[rows, first_diff],
      wrong_step=wrong_step,
      num_steps=num_steps,
      step_q_bad=step_q,
      localised=localised,
      q_after_bad=_mean_after(q_bad, bad_mask, first_diff),
      q_after_good=_mean_after(q_good, good_mask, first_diff),
      sum_q_good=sum_good,
      sum_q_bad=sum_bad,
      pair_correct=(sum_good > sum_bad).astype(np.float64),
      beta_nll_ref=beta_nll,
      p_correct_cap=1.0 / (1.0 + np.exp(-beta_nll)),
  )


def _nanmean(x: np.ndarray) -> float:
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")


def summarize(per_pair: dict[str, np.ndarray]) -> dict[str, float]:
  """The summary of `pair_metrics`' output: flat {name: float}, logged as `prm_credit/NAME`.

  dip_mean, dip_pXX (quantiles, nats), p_dip_negative (share of dips < 0); localisation (mean of
  `localised`) against localisation_chance (mean of 1 / num_steps); q_after_mistake_bad /
  _good (means over pairs of the per-pair means after t*, pairs without such tokens left out);
  pair_accuracy (mean of pair_correct); beta_nll_ref_mean / _pXX and p_correct_cap_mean / _p10
  (the cap on the PRM's P(correct) for the good responses); num_pairs.
  """
  dip, beta_nll = per_pair["dip"], per_pair["beta_nll_ref"]
  summary = dict(num_pairs=float(len(dip)), dip_mean=float(dip.mean()))
  summary.update({f"dip_p{q}": float(np.percentile(dip, q)) for q in QUANTILES})
  summary.update(
      p_dip_negative=float((dip < 0).mean()),
      localisation=float(per_pair["localised"].mean()),
      localisation_chance=float((1.0 / per_pair["num_steps"]).mean()),
      q_after_mistake_bad=_nanmean(per_pair["q_after_bad"]),
      q_after_mistake_good=_nanmean(per_pair["q_after_good"]),
      pair_accuracy=float(per_pair["pair_correct"].mean()),
      beta_nll_ref_mean=float(beta_nll.mean()),
  )
  summary.update({f"beta_nll_ref_p{q}": float(np.percentile(beta_nll, q)) for q in QUANTILES})
  summary.update(
      p_correct_cap_mean=float(per_pair["p_correct_cap"].mean()),
      p_correct_cap_p10=float(np.percentile(per_pair["p_correct_cap"], 10)),
  )
  return summary
