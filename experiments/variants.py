"""The named experiment variants of the paper's comparisons: each a few config overrides of a base.

One variant applies to any base config:

  full scale   experiments/configs/eurus2_7b.py:NAME   (Eurus-2-7B-SFT + Eurus-2-RL-Data, spec §6)
  small scale  experiments/configs/arithmetic.py:NAME  (prime_jax.configs.arithmetic_config(), CPU)
  credit task  experiments/configs/arithmetic_credit.py:NAME  (arithmetic_credit_config(), CPU)

    python -m prime_jax.train --config=experiments/configs/eurus2_7b.py:grpo_prime --workdir=RUN
    python -m prime_jax.train --config=experiments/configs/arithmetic.py:prm_offline --workdir=DIR

`VARIANTS[name].overrides` are flattened `section.field` overrides (what `--config.section.field=`
would set); a value may be a function of the base config (`keep_responses`), resolved when the
variant is applied. `apply(base, name)` returns the locked result. The table of names, with the
paper's table / row for each, is in experiments/README.md; `experiments/run_table.py` runs them.
This module lives outside experiments/configs/ because every file there is a config file
(`get_config()`), and it is imported as `experiments.variants` (the repository root on sys.path,
as for `prime_jax` itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections

# prm.checkpoint of the ablations that need a separately trained PRM (the offline PRM, and the PRM
# initialised from a trained PRM): a placeholder for an HF checkpoint of an outcome-trained PRM
# with the policy's architecture and tokenizer (give the real one with
# --config.prm.checkpoint=DIR). At small scale experiments/run_table.py points it at the same
# seed's PRIME run's exported PRM.
TRAINED_PRM_PLACEHOLDER = "/path/to/trained-PRM"


def keep_responses(n_samples: int) -> Callable[[ml_collections.ConfigDict], int]:
  """rl.batch_prompts for `n_samples` samples per prompt that keeps the base's responses per RL
  step (batch_prompts x n_samples): the same PRM / policy mini-batch counts, KV-cache rows and
  update cost per step, n_samples / base n times fewer prompts."""

  def batch_prompts(base: ml_collections.ConfigDict) -> int:
    responses = base.rl.batch_prompts * base.rl.n_samples
    if responses % n_samples:
      raise ValueError(
          f"{responses} responses per step are not a whole number of groups of " f"{n_samples}"
      )
    return responses // n_samples

  batch_prompts.__name__ = f"keep_responses({n_samples})"
  return batch_prompts


@dataclasses.dataclass(frozen=True)
class Variant:
  overrides: Mapping[str, Any]  # {"rl.estimator": "grpo", ...}; values may be callables(base)
  what: str  # one line: what the run is
  paper: str  # the paper's table / row (or figure) it corresponds to


VARIANTS: dict[str, Variant] = {
    # Table 1 (and Table 4's RLOO pair).
    "prime": Variant(
        {},
        "PRIME: RLOO on implicit process + outcome rewards (the spec's defaults)",
        "Table 1 'PRIME' (step 240); Table 4 'RLOO w/ PRIME'",
    ),
    "rloo": Variant(
        {"rl.coef_proc": 0.0},
        "RLOO with the outcome verifier only (process stream off)",
        "Table 1 'RLOO, outcome verifier only' (step 240); Table 4 'RLOO'",
    ),
    # Table 4: other estimators, without and with PRIME's process rewards. Every row's advantages
    # are whitened over the batch (rl.whiten_advantages, the released RLOO convention), and an
    # estimator's two rows differ only in rl.coef_proc (docs/estimators.md).
    "reinforce": Variant(
        {"rl.estimator": "reinforce", "rl.coef_proc": 0.0},
        "REINFORCE, outcome reward only",
        "Table 4 'REINFORCE'",
    ),
    "reinforce_prime": Variant(
        {"rl.estimator": "reinforce"},
        "REINFORCE with PRIME's process rewards",
        "Table 4 'REINFORCE w/ PRIME'",
    ),
    "grpo": Variant(
        {"rl.estimator": "grpo", "rl.coef_proc": 0.0}, "GRPO, outcome reward only", "Table 4 'GRPO'"
    ),
    "grpo_prime": Variant(
        {"rl.estimator": "grpo"},
        "GRPO with PRIME's process rewards, stable form (rl.grpo_form=stable: the process term over "
        "the group std of response totals, O(1) at any length)",
        "Table 4 'GRPO w/ PRIME'",
    ),
    "grpo_prime_paper": Variant(
        {"rl.estimator": "grpo", "rl.grpo_form": "paper"},
        "GRPO with PRIME's process rewards as the paper's Eq. 7 writes it (process term over the "
        "group std of per-token means, ~|y| times the outcome term), then whitened",
        "Table 4 'GRPO w/ PRIME', Eq. 7 as written (not in run_table's table4: it collapsed at "
        "small scale)",
    ),
    "ppo": Variant(
        {"rl.estimator": "ppo", "rl.coef_proc": 0.0},
        "PPO (GAE, gamma = lambda = 1, a value head on the policy trunk), outcome reward only",
        "Table 4 'PPO'",
    ),
    "ppo_prime": Variant(
        {"rl.estimator": "ppo"},
        "PPO with PRIME's process rewards added to the token rewards",
        "Table 4 'PPO w/ PRIME'",
    ),
    "prm_value": Variant(
        {"rl.estimator": "prm_value"},
        "PRIME as value model: A_t = r_o - v(y_<t), v = cumulative beta * q of the implicit PRM",
        "Table 4 'PRIME as Value Model'",
    ),
    # Ablations of the implicit PRM (spec §9 headline ablations; the paper shows them as curves).
    # A frozen PRM initialised from the SFT model equals the reference, so every implicit reward
    # would be exactly 0 (spec §2) and the run would be outcome-only RLOO: the offline PRM has to
    # be a trained one, as the paper's is.
    "prm_offline": Variant(
        {"rl.prm_update": "none", "prm.checkpoint": TRAINED_PRM_PLACEHOLDER},
        "offline PRM: a separately trained PRM, frozen (implicit rewards from it, never updated)",
        "ablation: online vs offline PRM",
    ),
    "prm_from_trained": Variant(
        {"prm.checkpoint": TRAINED_PRM_PLACEHOLDER},
        "PRM initialised from a separately trained PRM instead of the SFT model (reference still "
        "the SFT model)",
        "ablation: PRM initialisation, SFT model vs a trained PRM",
    ),
    "ref_policy": Variant(
        {"rl.ref_type": "policy"},
        "reference = the policy's old log-probs instead of the frozen " "SFT model",
        "ablation: reference model, SFT vs policy",
    ),
    "double_forward": Variant(
        {"rl.prm_update": "before"},
        "double forward: update the PRM first, then re-score the " "batch with the updated PRM",
        "ablation: single vs double forward",
    ),
    "prm_dpo": Variant(
        {"rl.prm_loss": "dpo"},
        "PRM trained with the pairwise DPO loss instead of cross-entropy",
        "ablation: PRM loss, CE vs DPO",
    ),
    # Dense credit: how much of it the process stream gives (best on the credit task,
    # experiments/configs/arithmetic_credit.py).
    "prime_whole": Variant(
        {"rl.granularity": "whole"},
        "PRIME with each response's summed implicit reward on its last token: the PRM's outcome "
        "judgement without its within-response credit (density control)",
        "ablation: token vs whole-response implicit rewards (not in the spec's tables)",
    ),
    "oracle": Variant(
        {"rl.process_reward": "oracle"},
        "oracle process rewards (-1 on the tokens of each response's first wrong step, from the "
        "task's own step oracle) through PRIME's process stream; no PRM: what a perfect PRM "
        "could give",
        "ceiling of dense credit, not in the paper (tasks with a step oracle: arithmetic)",
    ),
    "prime_n16": Variant(
        {"rl.n_samples": 16, "rl.batch_prompts": keep_responses(16)},
        "PRIME with 16 samples per prompt, prompts per step cut to keep the responses per step",
        "16-samples run (not in the spec's tables)",
    ),
}


def names() -> list[str]:
  return list(VARIANTS)


def needs_trained_prm(name: str) -> bool:
  """Whether variant `name` starts from a separately trained PRM (TRAINED_PRM_PLACEHOLDER)."""
  return VARIANTS[name].overrides.get("prm.checkpoint") == TRAINED_PRM_PLACEHOLDER


def resolved_overrides(base: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """The flattened overrides of variant `name` on `base`, callables evaluated."""
  if name not in VARIANTS:
    raise ValueError(f"unknown experiment variant {name!r}; known: {', '.join(VARIANTS)}")
  return {
      key: value(base) if callable(value) else value
      for key, value in VARIANTS[name].overrides.items()
  }


def apply(base: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A locked copy of `base` with variant `name`'s overrides (an unknown field is an error)."""
  overrides = resolved_overrides(base, name)
  config = base.copy_and_resolve_references()
  config.lock()
  config.update_from_flattened_dict(overrides)
  return config
