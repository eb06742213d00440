r"""Per-device memory plan of a PRIME run from shapes alone: nothing is allocated, no device needed.

`plan(config, mesh_axes, hardware, model_config)` builds an abstract mesh of the slice's devices
(`jax.sharding.AbstractMesh`), takes the run's real shardings (`update_step_shardings` with the
config's rule table, the KV cache's `CACHE_AXES`) and the real optimiser states
(`create_train_state` with `policy_optimizer` / `prm_optimizer` under `jax.eval_shape`), and adds
up the bytes one device holds, item by item:

* resident for the whole run: policy params + AdamW moments, PRM params + AdamW moments (when the
  step runs the PRM), the frozen reference (when one is needed);
* update step (peak = resident + these): gradients (the micro-batch accumulator plus the
  micro-batch's own gradient), activations, the chunked log-prob logits, the FSDP-gathered
  weights, the step's inputs;
* sampling (peak = resident + these): the KV cache of `sample_batch_prompts x n_samples` rows and
  `max_prompt_len + max_new_tokens` slots, the prefill's transients, the decode logits.

The package, by job:
  * `inputs`: what a plan is of: the slice (`parse_hardware`, per-device HBM tables) and the
    model's shapes (`resolve_model_config`: presets, a checkpoint's config.json,
    config.policy.init);
  * `estimates`: per-device bytes of each item: exact shard sizes of the run's states and KV
    cache, the activation / FSDP estimates (their formulas and accuracy are its docstring);
  * `report`: the `Plan` (items, phase peaks, verdict, markdown table) and `plan` itself;
  * `knobs`: the config flags that would make a plan fit (`suggestions`), each checked by
    planning again.
The command line is `python -m prime_jax.tools.plan`.
"""

from prime_jax.memory_plan.estimates import (
    abstract_mesh,
    activation_estimate,
    axis_ways,
    cache_bytes,
    cache_shape,
    residual_profile,
    rule_table,
    shard_bytes,
    tree_shard_bytes,
)
from prime_jax.memory_plan.inputs import (
    GPU_DEFAULT_MEM_FRACTION,
    GPU_TYPES,
    MODEL_ALIASES,
    MODEL_PRESETS,
    TPU_TYPES,
    GiB,
    Hardware,
    hardware_names,
    parse_hardware,
    resolve_model_config,
)
from prime_jax.memory_plan.knobs import suggestions
from prime_jax.memory_plan.report import PHASES, Item, Plan, as_hardware, plan

__all__ = [
    "GPU_DEFAULT_MEM_FRACTION",
    "GPU_TYPES",
    "GiB",
    "Hardware",
    "Item",
    "MODEL_ALIASES",
    "MODEL_PRESETS",
    "PHASES",
    "Plan",
    "TPU_TYPES",
    "abstract_mesh",
    "activation_estimate",
    "as_hardware",
    "axis_ways",
    "cache_bytes",
    "cache_shape",
    "hardware_names",
    "parse_hardware",
    "plan",
    "residual_profile",
    "resolve_model_config",
    "rule_table",
    "shard_bytes",
    "suggestions",
    "tree_shard_bytes",
]
