"""The model under evaluation and its responses: a checkpoint loaded onto the mesh, prompts
batched by length and sampled by `prime_jax.generation.generate`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax

from prime_jax.data.prompts import Prompt
from prime_jax.evaluation.benchmarks import BUDGET_STEP, EvalError, EvalMode
from prime_jax.generation import generate
from prime_jax.models import load_hf_checkpoint, read_hf_config
from prime_jax.sampling import SamplingConfig
from prime_jax.sharding import DEFAULT_RULES, make_mesh, param_shardings, parse_mesh
from prime_jax.tokenizer import load_tokenizer

# ----------------------------------------------------------------------------- the model


@dataclasses.dataclass
class LoadedModel:
  """A checkpoint ready to sample: its directory, config, params (on the mesh) and tokenizer."""

  directory: str
  config: Any  # DecoderConfig
  params: Any
  tokenizer: Any  # prime_jax.tokenizer.Tokenizer


def resolve_checkpoint(path: str | os.PathLike) -> Path:
  """The HF checkpoint directory of `path`: `path` itself when it holds config.json, else a
  trainer workdir's exported policy (`path/export/policy`)."""
  path = Path(path)
  if (path / "config.json").is_file():
    return path
  exported = path / "export" / "policy"
  if (exported / "config.json").is_file():
    return exported
  if not path.exists():
    raise EvalError(
        f"checkpoint {path} does not exist (a local directory is needed; download "
        "a Hub model first, e.g. `huggingface-cli download NAME --local-dir DIR`)"
    )
  raise EvalError(
      f"{path} is neither a Hugging Face checkpoint directory (no config.json) nor a "
      "trainer workdir with export/policy/config.json"
  )


def load_model(
    checkpoint: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    mesh: str | Mapping[str, int] = "data=-1,fsdp=1,tensor=1",
) -> LoadedModel:
  """Loads `checkpoint` (see `resolve_checkpoint`) with its tokenizer, params in `dtype` laid out
  on a mesh of all devices (`prime_jax.sharding.make_mesh(mesh)`, the default rule table)."""
  directory = resolve_checkpoint(checkpoint)
  tokenizer = load_tokenizer(directory)
  overrides = dict(dtype=dtype, param_dtype=dtype)
  config = read_hf_config(str(directory), **overrides)
  try:
    try:
      axes = parse_mesh(mesh)
    except ValueError as e:
      raise EvalError(str(e)) from None
    device_mesh = make_mesh(axes)
  except ValueError as e:
    raise EvalError(f"mesh: {e}") from None
  shardings = param_shardings(config, device_mesh, DEFAULT_RULES)
  config, params = load_hf_checkpoint(str(directory), shardings=shardings, **overrides)
  return LoadedModel(str(directory), config, params, tokenizer)


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class BatchGroup:
  """Consecutive batches of the length-sorted prompts that share one token budget."""

  indices: tuple[int, ...]
  max_new_tokens: int


def plan_generation(
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_new_tokens: int,
    context: int,
    step: int = BUDGET_STEP,
) -> tuple[list[BatchGroup], list[int]]:
  """(groups, skipped): prompts sorted by length (stable), cut into batches of `batch_size`,
  each batch's budget `max_new_tokens` or, when its longest prompt leaves less room in the
  `context`, the room left rounded down to a multiple of `step` (the exact room when under
  `step`); consecutive batches of one budget form a group. `skipped`: prompts that fill the
  context on their own (no budget left)."""
  if batch_size < 1 or max_new_tokens < 1:
    raise ValueError(
        f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must " "be >= 1"
    )
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  skipped = [i for i in order if context - lengths[i] < 1]
  order = [i for i in order if context - lengths[i] >= 1]
  groups: list[BatchGroup] = []
  for start in range(0, len(order), batch_size):
    chunk = order[start : start + batch_size]
    room = context - lengths[chunk[-1]]
    if room >= max_new_tokens:
      budget = max_new_tokens
    else:
      budget = room // step * step if room >= step else room
    if groups and groups[-1].max_new_tokens == budget:
      groups[-1] = BatchGroup(groups[-1].indices + tuple(chunk), budget)
    else:
      groups.append(BatchGroup(tuple(chunk), budget))
  return groups, sorted(skipped)


def generate_responses(
    model: LoadedModel,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    mode: EvalMode,
    batch_size: int,
    key: jax.Array,
) -> tuple[list[list[str]], list[int]]:
  """(responses, budgets): `mode.k` decoded responses per prompt (in the prompts' order) and
  each prompt's token budget (0, with k empty responses, for a prompt that fills the context).

  Batches are built by `plan_generation` and sampled by `prime_jax.generation.generate`.
  """
  tokenizer = model.tokenizer
  lengths = [len(p.token_ids) for p in prompts]
  groups, _ = plan_generation(
      lengths,
      batch_size=batch_size,
      max_new_tokens=max_new_tokens,
      context=model.config.max_position_embeddings,
  )
  responses: list[list[str]] = [[""] * mode.k for _ in prompts]
  budgets = [0] * len(prompts)
  for g, group in enumerate(groups):
    sampling = SamplingConfig(
        max_new_tokens=group.max_new_tokens,
        temperature=mode.temperature,
        top_p=mode.top_p,
        n_samples=mode.k,
        eos_ids=tokenizer.eos_ids,
        pad_id=tokenizer.pad_id,
    )
    texts = generate(
        model.params,
        model.config,
        tokenizer,
        [list(prompts[i].token_ids) for i in group.indices],
        sampling,
        jax.random.fold_in(key, g),
        min(batch_size, len(group.indices)),
    )
    for j, i in enumerate(group.indices):
      responses[i] = texts[j * mode.k : (j + 1) * mode.k]
      budgets[i] = group.max_new_tokens
  return responses, budgets
