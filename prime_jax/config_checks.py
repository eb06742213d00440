"""`validate(config)`: the one check of a run's config, called before any work by
`python -m prime_jax.train` (`train.train`), `python -m prime_jax.sft` (`sft.run_sft`) and
`python -m prime_jax.tools.prm_credit`. A bad setting is one ValueError naming the field and what it
may be.

The rules, in one place:
  * `config.rl`: every choice field against its allowed values (`RL_CHOICES`), `ppo_epochs`, the
    estimator's process stream (`check_rl_config`);
  * `config.ref`: the frozen reference's param dtype (`ref_options`, which also gives configs
    without a `ref` section its defaults);
  * the PRM's source: an offline PRM must not be the reference (`check_prm_source`);
  * `rl.process_reward="oracle"`: the task must have a step oracle (`prime_jax.tasks.step_oracle`).
What needs the model as well (PPO's value head: `check_model_for`) is checked when the update step
is built (`prime_jax.algo.update_step.make_update_step`).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from prime_jax.algo.minibatches import PRM_BATCH_ORDERS
from prime_jax.models.config import DecoderConfig
from prime_jax.tasks import step_oracle

ESTIMATORS = ("rloo", "reinforce", "grpo", "ppo", "prm_value")
RL_CHOICES = dict(
    process_reward=("prm", "oracle"),
    prm_update=("after", "before", "none"),
    prm_loss=("ce", "dpo"),
    prm_batch_order=PRM_BATCH_ORDERS,
    ref_type=("freeze", "policy"),
    granularity=("token", "whole"),
    reward_scale=("none", "beta"),
    prime_norm=("batch_norm", "none"),
    norm_scope=("shard", "global"),
    estimator=ESTIMATORS,
    rloo_form=("code", "paper"),
    grpo_form=("stable", "paper"),
    loss_agg=("seq-mean-token-mean", "token-mean"),
    old_logp=("recompute", "sampler"),
)
REF_PARAM_DTYPES = ("float32", "bfloat16")


def validate(config) -> None:
  """Raises a ValueError naming the first bad setting of `config` (a full run config)."""
  check_rl_config(config.rl)
  ref_options(config)
  check_prm_source(config)
  if config.rl.process_reward == "oracle":
    step_oracle(config.task.name)  # a task without one is an error naming those that have one


def uses_prm(rl) -> bool:
  """Whether the update step runs the implicit PRM (and so the reference) at all: not for
  outcome-only runs, nor when the process stream is the task's oracle."""
  if rl.process_reward == "oracle":
    return False
  return rl.estimator == "prm_value" or rl.coef_proc != 0


def check_rl_config(rl) -> None:
  for key, choices in RL_CHOICES.items():
    if rl[key] not in choices:
      raise ValueError(f"config.rl.{key}={rl[key]!r}; expected one of {choices}")
  if rl.ppo_epochs < 1:
    raise ValueError(f"config.rl.ppo_epochs must be >= 1, got {rl.ppo_epochs}")
  if rl.process_reward == "oracle" and rl.estimator == "prm_value":
    raise ValueError(
        "config.rl.estimator='prm_value' takes its values from the implicit PRM's q; it has no "
        "oracle form (rl.process_reward='oracle')"
    )


def check_model_for(rl, model_config: DecoderConfig) -> None:
  if (rl.estimator == "ppo") != model_config.value_head:
    raise ValueError(
        f"estimator={rl.estimator!r} needs model_config.value_head="
        f"{rl.estimator == 'ppo'} (PPO's value head sits on the policy trunk)"
    )


def ref_options(config):
  """`config.ref` (param_dtype, offload), checked; configs without it get the defaults."""
  ref = config.get("ref") or ConfigDict(dict(param_dtype="float32", offload=False))
  if ref.param_dtype not in REF_PARAM_DTYPES:
    raise ValueError(
        f"config.ref.param_dtype={ref.param_dtype!r}; expected one of {REF_PARAM_DTYPES}"
    )
  return ref


def check_prm_source(config) -> None:
  """An offline PRM (prm_update="none") from the policy's own checkpoint, against the frozen
  copy of it as the reference, is the reference: every implicit reward would be exactly 0 and
  the run silently outcome-only. Such a PRM has to come from a trained checkpoint."""
  rl = config.rl
  if (
      uses_prm(rl)
      and rl.prm_update == "none"
      and rl.ref_type == "freeze"
      and not config.prm.checkpoint
  ):
    raise ValueError(
        "rl.prm_update='none' (an offline PRM) with config.prm.checkpoint empty: the PRM "
        "would start from the policy's checkpoint, which is also the frozen reference "
        "(rl.ref_type='freeze'), so every implicit reward would be 0 and the run outcome-only. "
        "Set --config.prm.checkpoint to a trained PRM, or use rl.coef_proc=0 for outcome-only"
    )
