"""Data: records, input formats, the tensorflow-datasets store, prompt iteration and rendering.

records    the record schema every source becomes (`Record`)
formats    Eurus-2-RL-Data, math problem sets and code sets, from .jsonl / .parquet
prepare    `python -m prime_jax.data.prepare --input FILES --out DATA_DIR`
storage    `write_records` / `load_split` (tfds ArrayRecord, no TensorFlow)
iterator   `PromptIterator`: deterministic, resumable, shuffled per epoch
prompts    system prompt, user suffixes, chat template; drops over-long prompts
"""

from prime_jax.data.iterator import PromptIterator
from prime_jax.data.prompts import (
    EURUS_SYSTEM_PROMPT,
    SYSTEM_PROMPTS,
    USER_SUFFIXES,
    Prompt,
    PromptEncoder,
    PromptFormat,
    build_chat,
)
from prime_jax.data.records import MalformedRecord, Record
from prime_jax.data.storage import (DataError, RecordSource, load_split, split_names, write_records)

__all__ = [
    "DataError",
    "EURUS_SYSTEM_PROMPT",
    "MalformedRecord",
    "Prompt",
    "PromptEncoder",
    "PromptFormat",
    "PromptIterator",
    "Record",
    "RecordSource",
    "SYSTEM_PROMPTS",
    "USER_SUFFIXES",
    "build_chat",
    "load_split",
    "split_names",
    "write_records",
]
