"""Rollouts with PRIME's online filter: sample, grade, keep B mixed groups (docs/algorithm.md,
"One RL step").

Host-side orchestration around the jitted sampler: prompts come from the refill buffer first, then
the data iterator; each round samples n responses per prompt, grades them with the verifier
registry (`prime_jax.verifiers.grading.grade_responses`) and keeps the groups whose mean accuracy
lies in [lo, hi]. Rounds repeat until B groups passed; passing groups beyond B go back to the
buffer (re-sampled next step). Prompts are held as their records' positions in the train split,
so the buffer is a list of integers.

With partial rollouts (rl.partial_rollout_steps > 0, `prime_jax.rollout_engine.make_engine`) a
round decodes at most that many steps and grades the groups that finished; unfinished ones stay in
the engine, across steps too, and rows freed by finished groups take new prompts.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from prime_jax.data import Prompt, PromptEncoder, PromptIterator
from prime_jax.distributed import ProcessGroup, process_group, to_host
from prime_jax.oracle_rewards import oracle_token_rewards
from prime_jax.rollout_engine import RolloutEngine, sampling_config
from prime_jax.sampling import SampleOutput, sample
from prime_jax.scoring import pad_sequences
from prime_jax.tasks import StepOracle
from prime_jax.verifiers.grading import grade_responses, merge_grader_metrics


class FilterStarvedError(RuntimeError):
  """No group passed the online filter for too many sampling rounds in a row."""


def group_pass_mask(
    acc: np.ndarray, n: int, lo: float, hi: float, truncated: Optional[np.ndarray] = None
) -> np.ndarray:
  """[N] outcome scores -> [N/n] bool: keep a group iff lo <= mean acc <= hi (inclusive), and,
  when `truncated` [N] is given, none of its responses hit the length budget."""
  groups = np.asarray(acc, np.float64).reshape(-1, n)
  mean = groups.mean(axis=1)
  keep = (mean >= lo - 1e-9) & (mean <= hi + 1e-9)  # 1/4 etc. must not fall off on rounding
  if truncated is not None:
    keep &= ~np.asarray(truncated, bool).reshape(-1, n).any(axis=1)
  return keep


@dataclasses.dataclass
class RolloutBatch:
  """B kept groups, N = B * n rows, as host numpy arrays (the update step's batch layout)."""

  record_indices: list[int]  # [B] positions in the train split of the groups' records
  prompt_tokens: np.ndarray  # [N, P] int32, left-padded
  prompt_mask: np.ndarray  # [N, P] bool
  response_tokens: np.ndarray  # [N, T] int32, right-padded
  response_mask: np.ndarray  # [N, T] bool, EOS included
  old_logp: np.ndarray  # [N, T] float32, the sampler's temperature-1 log-probs
  acc: np.ndarray  # [N] float32
  texts: list[str]
  # [N, T] float32 oracle process rewards (rl.process_reward="oracle"), else None
  process_rewards: Optional[np.ndarray] = None

  def update_inputs(self) -> dict[str, np.ndarray]:
    inputs = dict(
        prompt_tokens=self.prompt_tokens,
        prompt_mask=self.prompt_mask,
        response_tokens=self.response_tokens,
        response_mask=self.response_mask,
        old_logp=self.old_logp,
        acc=self.acc,
    )
    if self.process_rewards is not None:
      inputs["process_rewards"] = self.process_rewards
    return inputs


def _take_rows(arrays: dict, rows: np.ndarray) -> dict:
  return {k: v[rows] for k, v in arrays.items()}


def collect_rollouts(
    params,
    *,
    model_config,
    tokenizer,
    encoder: PromptEncoder,
    iterator: PromptIterator,
    buffer: Sequence[int],
    rl,
    key: jax.Array,
    sample_fn: Callable[..., SampleOutput] = sample,
    processes: Optional[ProcessGroup] = None,
    oracle: Optional[StepOracle] = None,
    engine: Optional[RolloutEngine] = None,
) -> tuple[RolloutBatch, list[int], dict]:
  """Samples until `rl.batch_prompts` groups pass the filter.

  Prompts are positions in `iterator.source`. With several processes, every process walks
  the same positions and takes the same decisions; each reads, encodes and grades only its
  share of a round's prompts (`processes.share`), and the prompt tokens, the prompts' lengths
  and the scores are exchanged, so the result is the same for any number of processes.

  Args:
    params: policy params. buffer: source positions of prompts held over from the last step
      (used first).
    key: this step's PRNG key; round r samples with fold_in(key, r).
    processes: the run's processes (default: JAX's).
    oracle: the task's step oracle, for rl.process_reward="oracle": each process finds the
      first wrong step of its share's responses and the oracle token rewards are exchanged
      like the scores; the batch carries them as `process_rewards`.
    engine: partial rollouts (`make_engine`; one process only): rounds capped at its
      round_steps, groups still unfinished at the end stay in it for the next call (which
      resumes them under the params it is given); `sample_fn` is then unused.
  Returns:
    (batch, the new refill buffer, metrics of the rounds: counts, pass rate, accuracy of all
    samples, grader stats, utilisation = useful tokens / (rows x steps run)).
  """
  processes = processes or process_group()
  n, want = rl.n_samples, rl.sample_batch_prompts or rl.batch_prompts
  sampling = sampling_config(rl, tokenizer)
  encoded: dict[int, Prompt] = {}  # this process's prompts, by source position

  def encode(positions: Sequence[int]) -> list[Prompt]:
    missing = [i for i in dict.fromkeys(positions) if i not in encoded]
    for i, record in zip(missing, iterator.read(missing)):
      encoded[i] = encoder.encode(record)
    return [encoded[i] for i in positions]

  def prompt_lengths(positions: list[int]) -> list[int]:
    mine = [positions[j] for j in processes.share(len(positions))]
    parts = processes.allgather([len(p.token_ids) for p in encode(mine)])
    return [length for part in parts for length in part]

  buffer = list(buffer)
  kept_positions: list[int] = []
  kept_rows: list[dict] = []
  kept_texts: list[str] = []
  surplus: list[int] = []
  sampled_acc, dropped, rounds, empty, drawn_total, graded = [], 0, 0, 0, 0, 0
  oracle_flagged = []  # [round] bool [rows]: the oracle found a wrong step
  grader_metrics: dict = {}
  seconds = {"sampling": 0.0, "grading": 0.0}
  tokens_sampled, row_steps = 0, 0
  engine_start = None if engine is None else (engine.useful_tokens, engine.row_steps)

  def draw(count: int) -> list[int]:
    nonlocal buffer, dropped, drawn_total
    positions, buffer = buffer[:count], buffer[count:]
    drawn, num_dropped = encoder.draw_positions(
        iterator, count - len(positions), lengths=prompt_lengths
    )
    dropped += num_dropped
    drawn_total += count
    return positions + drawn

  def padded(own: list[Prompt]) -> tuple[np.ndarray, np.ndarray]:
    tokens, valid = pad_sequences(
        [p.token_ids for p in own], length=rl.max_prompt_len, pad_id=tokenizer.pad_id, left=True
    )
    return processes.allgather_rows(tokens), processes.allgather_rows(valid)

  def sample_round():
    """This round's groups to grade: (source positions, this process's share of them (a
    slice), its prompts, all prompts' tokens and mask [G, P], their samples [G * n rows]);
    None when no group finished (partial rollouts)."""
    nonlocal tokens_sampled, row_steps
    start = time.perf_counter()
    if engine is not None:
      new = draw(engine.free_groups())
      engine.add(new, [p.token_ids for p in encode(new)], jax.random.fold_in(key, rounds))
      groups, out = engine.round(params)
      seconds["sampling"] += time.perf_counter() - start
      positions = [g.position for g in groups]
      own = encode(positions)
      return (positions, slice(0, len(positions)), own, *padded(own), out) if groups else None
    positions = draw(want)
    mine = processes.share(len(positions))  # the groups this process reads and grades
    own = encode([positions[g] for g in mine])
    tokens, valid = padded(own)
    start = time.perf_counter()
    out = sample_fn(
        params,
        tokens,
        valid,
        jax.random.fold_in(key, rounds),
        model_config=model_config,
        config=sampling,
    )
    out = SampleOutput(*(to_host(x) for x in out))
    seconds["sampling"] += time.perf_counter() - start
    # The loop ran every row until the longest one ended.
    tokens_sampled += int(np.sum(out.lengths))
    row_steps += len(out.lengths) * int(np.max(out.lengths))
    return positions, mine, own, tokens, valid, out

  while len(kept_positions) < rl.batch_prompts:
    sampled = sample_round()
    if sampled is None:
      rounds += 1
      continue
    positions, mine, own, tokens, valid, out = sampled
    start = time.perf_counter()
    lengths = np.asarray(out.lengths)
    graded += len(positions)
    texts = [tokenizer.decode(row[:length]) for row, length in zip(out.tokens, lengths)]
    records = [p.record for p in own]
    own_acc, own_metrics = grade_responses(records, texts[mine.start * n : mine.stop * n], n)
    acc, grader_metrics = merge_grader_metrics(
        processes.allgather(
            dict(
                scores=own_acc.tolist(),
                abilities=np.repeat([r.ability for r in records], n).tolist(),
                metrics=own_metrics,
            )
        )
    )
    if oracle is not None:  # timed as grading
      rows = slice(mine.start * n, mine.stop * n)
      spans = [oracle.first_wrong_step(records[j // n], t) for j, t in enumerate(texts[rows])]
      process_rewards = processes.allgather_rows(
          oracle_token_rewards(spans, out.tokens[rows], lengths[rows], tokenizer)
      )
      oracle_flagged.append((process_rewards < 0).any(axis=1))
    seconds["grading"] += time.perf_counter() - start
    sampled_acc.append(acc)
    truncated = None
    if rl.filter_truncated:
      finished = np.isin(
          out.tokens[np.arange(len(lengths)), np.maximum(lengths - 1, 0)], tokenizer.eos_ids
      )
      truncated = ~finished
    passed = np.flatnonzero(group_pass_mask(acc, n, rl.filter_lo, rl.filter_hi, truncated))
    rounds += 1
    empty = 0 if len(passed) else empty + 1
    if empty >= rl.max_empty_rounds:
      raise FilterStarvedError(
          f"no group of {n} samples had a mean accuracy in [{rl.filter_lo}, {rl.filter_hi}]"
          f" for {empty} sampling rounds in a row ({want} prompts each); the task is too "
          "easy or too hard for this policy: widen rl.filter_lo/filter_hi, change the "
          "data, or raise rl.max_empty_rounds"
      )
    arrays = dict(
        prompt_tokens=np.repeat(tokens, n, axis=0),
        prompt_mask=np.repeat(valid, n, axis=0),
        response_tokens=out.tokens,
        response_mask=out.mask,
        old_logp=out.logprobs,
        acc=acc,
    )
    if oracle is not None:
      arrays["process_rewards"] = process_rewards
    for g in passed:
      if len(kept_positions) < rl.batch_prompts:
        rows = np.arange(g * n, (g + 1) * n)
        kept_positions.append(positions[g])
        kept_rows.append(_take_rows(arrays, rows))
        kept_texts += [texts[i] for i in rows]
      else:
        surplus.append(positions[g])
  if engine is not None:
    engine.suspend()  # the unfinished groups resume under the next call's params
    tokens_sampled = engine.useful_tokens - engine_start[0]
    row_steps = engine.row_steps - engine_start[1]
  batch = RolloutBatch(
      kept_positions,
      texts=kept_texts,
      **{k: np.concatenate([r[k] for r in kept_rows]) for k in kept_rows[0]},
  )
  all_acc = np.concatenate(sampled_acc)
  metrics = dict(
      grader_metrics,
      **{
          "rollout/rounds": rounds,
          "rollout/prompts_sampled": drawn_total,
          "rollout/filter_pass_rate": (len(kept_positions) + len(surplus)) / graded,
          "rollout/acc_all_samples": float(all_acc.mean()),
          "rollout/prompts_dropped_too_long": dropped,
          "rollout/refill_buffer": len(buffer + surplus),
          "rollout/tokens_sampled": tokens_sampled,
          # Useful tokens / (rows x steps run): below 1 while finished rows wait for others.
          "rollout/row_steps": row_steps,
          "rollout/utilisation": tokens_sampled / max(row_steps, 1),
          "time/sampling": seconds["sampling"],
          "time/sampling_per_token": seconds["sampling"] / max(tokens_sampled, 1),
          "time/grading": seconds["grading"],
      },
  )
  if engine is not None:
    metrics["rollout/in_flight_groups"] = len(engine.in_flight())
  if oracle is not None:
    flagged = np.concatenate(oracle_flagged)
    metrics["rollout/oracle_wrong_step_frac"] = float(flagged.mean())
    # Graded right with a wrong step on the way: what the oracle sees and the outcome does not.
    flagged_correct = flagged[all_acc > 0]
    metrics["rollout/oracle_wrong_step_frac_correct"] = (
        float(flagged_correct.mean()) if flagged_correct.size else 0.0
    )
  return batch, buffer + surplus, metrics
