"""PRIME's algorithm as pure JAX functions over [N, T] response batches.

Start with `prime_jax.algo.prime` (the paper's equations, in order) and docs/algorithm.md (where the
code follows the released PRIME code rather than the paper); `prime_jax.algo.update_step` runs them
on the policy, the PRM and the reference in one compiled step.

Conventions: N = B·n responses with the n samples of a prompt in contiguous rows; T response
positions; masks are bool or 0/1 (1 on valid tokens t < L_i, right-padded). Every function
is jit-compatible with its keyword hyperparameters static where they choose a code path.
"""

from prime_jax.algo.baseline_estimators import (
    gae_advantages,
    grpo_advantages,
    prm_value_advantages,
    reinforce_advantages,
)
from prime_jax.algo.minibatches import merge_minibatches, split_minibatches
from prime_jax.algo.policy_loss import aggregate_token_loss, ppo_clip_loss, value_loss
from prime_jax.algo.prime import (
    implicit_rewards,
    prime_advantages,
    prm_ce_loss,
    rloo_returns,
    sequence_reward,
)
from prime_jax.algo.prm_losses import prm_dpo_loss, prm_pair_accuracy, prm_pair_accuracy_strict
from prime_jax.algo.rewards import at_granularity, normalize_process_rewards
from prime_jax.algo.token_ops import (
    last_token_mask,
    outcome_token_rewards,
    reverse_discounted_cumsum,
    whiten,
)

__all__ = [
    "aggregate_token_loss",
    "at_granularity",
    "gae_advantages",
    "grpo_advantages",
    "implicit_rewards",
    "last_token_mask",
    "merge_minibatches",
    "normalize_process_rewards",
    "outcome_token_rewards",
    "ppo_clip_loss",
    "prime_advantages",
    "prm_ce_loss",
    "prm_dpo_loss",
    "prm_pair_accuracy",
    "prm_pair_accuracy_strict",
    "prm_value_advantages",
    "reinforce_advantages",
    "reverse_discounted_cumsum",
    "rloo_returns",
    "sequence_reward",
    "split_minibatches",
    "value_loss",
    "whiten",
]
