"""Built-in synthetic tasks (`config.task.name`), for research at CPU scale."""

from prime_jax.tasks.registry import (
    PairMaker,
    Record,
    StepOracle,
    Task,
    get_task,
    pair_maker,
    register_task,
    step_oracle,
    task_names,
    tasks_with,
)
from prime_jax.tasks import arithmetic  # registers "arithmetic"
