"""Built-in synthetic tasks (`config.task.name`), for research at CPU scale."""

from prime_jax.tasks.registry import (
    Record,
    StepOracle,
    Task,
    get_task,
    register_task,
    step_oracle,
    task_names,
)
from prime_jax.tasks import arithmetic  # registers "arithmetic"
