"""Generation and held-out evaluation with the shared sampler, used by SFT (`prime_jax.sft`), the RL
trainer's evals (`prime_jax.train`) and the benchmark harness (`prime_jax.evaluation`).

`sample_batches` samples responses to token-id prompts in fixed-size batches (one compiled
program), `generate` decodes them (`prime_jax.tools.generate` writes them token by token);
`evaluate` measures a model on task records as the trainer reports it: greedy accuracy, the
accuracy of `rl.n_samples` samples per prompt at `rl.temperature`, and the share of those groups
the online filter (`rl.filter_lo..filter_hi`) would keep. `prompt_encoder` renders prompts as RL
does.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import jax
import ml_collections
import numpy as np

from prime_jax import verifiers
from prime_jax.data import PromptEncoder, PromptFormat, Record
from prime_jax.distributed import to_host
from prime_jax.models import DecoderConfig
from prime_jax.sampling import SampleOutput, SamplingConfig, sample
from prime_jax.scoring import pad_sequences
from prime_jax.sharding import DEFAULT_RULES, sampler_rules
from prime_jax.tokenizer import Tokenizer


def prompt_encoder(config: ml_collections.ConfigDict, tokenizer: Tokenizer) -> PromptEncoder:
  """Renders prompts as RL does (its length limit applies to RL's draws, not used here)."""
  return PromptEncoder(tokenizer, PromptFormat.from_config(config.task), config.rl.max_prompt_len)


def sample_batches(
    params,
    model_config: DecoderConfig,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    key: jax.Array,
    batch_size: int,
    rules=DEFAULT_RULES,
) -> Iterator[tuple[int, SampleOutput]]:
  """Samples `sampling.n_samples` responses per prompt (token ids) in batches of `batch_size`
  prompts, the last one filled up with copies of its first prompt so that every batch has one
  shape (one compiled program); batch b samples with fold_in(key, b), prompts left-padded with
  `sampling.pad_id`. Yields (the batch's number of real prompts, its `SampleOutput` as host numpy
  arrays: the real prompts' rows first, prompt-major). `rules`: the sampler's layout on the
  params' mesh (see `prime_jax.sampling.sample`)."""
  for b, start in enumerate(range(0, len(prompts), batch_size)):
    chunk = list(prompts[start : start + batch_size])
    padded = chunk + [chunk[0]] * (batch_size - len(chunk))
    tokens, valid = pad_sequences(padded, pad_id=sampling.pad_id, left=True)
    out = sample(
        params,
        tokens,
        valid,
        jax.random.fold_in(key, b),
        model_config=model_config,
        config=sampling,
        rules=rules,
    )
    # to_host: with several processes the sampled rows are spread over all of them.
    yield len(chunk), SampleOutput(*(to_host(x) for x in out))


def generate(
    params,
    model_config: DecoderConfig,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    key: jax.Array,
    batch_size: int,
    rules=DEFAULT_RULES,
) -> list[str]:
  """Decoded responses, `sampling.n_samples` per prompt (prompt-major), sampled by
  `sample_batches` (whose arguments these are)."""
  texts = []
  for real, out in sample_batches(params, model_config, prompts, sampling, key, batch_size, rules):
    rows = out.tokens[: real * sampling.n_samples]
    texts += [tokenizer.decode(row[:n]) for row, n in zip(rows, out.lengths)]
  return texts


def evaluate(
    params,
    model_config: DecoderConfig,
    tokenizer: Tokenizer,
    records: list[Record],
    config: ml_collections.ConfigDict,
    key: jax.Array,
) -> dict:
  """Greedy accuracy, sampled accuracy and the online filter's pass share on `records`, sampled
  in the config's sampler layout (`sampler_rules`)."""
  if config.eval.num_prompts:
    records = records[: config.eval.num_prompts]
  encoder = prompt_encoder(config, tokenizer)
  prompts = [list(encoder.encode(r).token_ids) for r in records]
  truths = [r.ground_truth for r in records]
  ability = records[0].ability
  rl, n = config.rl, config.rl.n_samples
  common = dict(
      max_new_tokens=config.eval.max_new_tokens, eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id
  )
  batch_size = min(config.eval.batch_size, len(prompts))
  rules = sampler_rules(config)
  greedy = generate(
      params,
      model_config,
      tokenizer,
      prompts,
      SamplingConfig(temperature=0.0, **common),
      key,
      batch_size,
      rules,
  )
  sampled = generate(
      params,
      model_config,
      tokenizer,
      prompts,
      SamplingConfig(
          temperature=rl.temperature, top_p=rl.top_p, top_k=rl.top_k, n_samples=n, **common
      ),
      key,
      batch_size,
      rules,
  )
  greedy_acc = np.asarray(verifiers.grade(ability, greedy, truths), np.float64)
  sampled_acc = np.asarray(
      verifiers.grade(ability, sampled, np.repeat(truths, n).tolist()), np.float64
  ).reshape(len(prompts), n)
  group_mean = sampled_acc.mean(axis=1)
  passes = (group_mean >= rl.filter_lo) & (group_mean <= rl.filter_hi)
  return dict(
      accuracy_greedy=float(greedy_acc.mean()),
      accuracy_sampled=float(sampled_acc.mean()),
      filter_pass_rate=float(passes.mean()),
      num_prompts=len(prompts),
      n_samples=n,
      temperature=rl.temperature,
      example=dict(prompt=encoder.render(records[0]), greedy=greedy[0], sampled=sampled[0]),
  )
