"""`validate(config)`: the one check of a run's config, called before any work by
`python -m prime_jax.train` (`train.train`), `python -m prime_jax.sft` (`sft.run_sft`) and
`python -m prime_jax.tools.prm_credit`. A bad setting is one ValueError naming the field and what it
may be.

The rules live with the code that relies on them and are collected here:
  * `config.rl`: every choice field against its allowed values, `ppo_epochs`, the estimator's
    process stream (`prime_jax.algo.update_step.check_rl_config`);
  * `config.ref`: the frozen reference's param dtype (`update_step.ref_options`);
  * the PRM's source: an offline PRM must not be the reference (`check_prm_source`, here);
  * `rl.process_reward="oracle"`: the task must have a step oracle (`prime_jax.tasks.step_oracle`).
What needs the model as well (PPO's value head: `update_step.check_model_for`) is checked when the
update step is built.
"""

from __future__ import annotations

from prime_jax.algo.update_step import check_rl_config, ref_options, uses_prm
from prime_jax.tasks import step_oracle


def validate(config) -> None:
  """Raises a ValueError naming the first bad setting of `config` (a full run config)."""
  check_rl_config(config.rl)
  ref_options(config)
  check_prm_source(config)
  if config.rl.process_reward == "oracle":
    step_oracle(config.task.name)  # a task without one is an error naming those that have one


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
