"""From a record's chat to the prompt the policy continues.

Rendering, in order:
  1. system prompt: when the format names one and the chat does not start with a system message,
     it is prepended (a chat that has one, like every current Eurus-2-RL-Data row, keeps its own);
  2. user suffix: when asked, the ability's instruction (math: box the answer; code: a ```python
     block) is appended to the last user message, unless that message already contains it
     (compared ignoring whitespace, so the released data's own suffix is not doubled);
  3. text: the tokenizer's chat template with the generation prompt (Qwen2.5: "<|im_start|>
     assistant\\n"), or, with apply_chat_template off, the message contents joined by a blank
     line ("\\n\\n"), nothing added.
Token ids: the chat template writes any BOS itself, so the template's text is encoded without
special tokens; plain text is encoded with them (the tokenizer's BOS, if it has one). SFT
demonstrations must be built from `PromptEncoder.encode` too, so that RL prompts match them.

Prompts longer than `max_prompt_len` tokens are dropped and counted (`PromptEncoder.draw` for the
training stream, `PromptEncoder.encode_all` for a held-out split).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from prime_jax.data.iterator import PromptIterator
from prime_jax.data.records import Record

# The "action-centric" system prompt of Eurus-2-RL-Data / Eurus-2-7B-PRIME, verbatim (the
# system message of every row of PRIME-RL/Eurus-2-RL-Data, leading and trailing newlines included).
EURUS_SYSTEM_PROMPT = (
    "\nWhen tackling complex reasoning tasks, you have access to the following actions. Use them "
    "as needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]\n\n[VERIFY]\n\n"
    "[SIMPLIFY]\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should strictly follow the format "
    "below:\n\n[ACTION NAME]\n\n# Your action step 1\n\n# Your action step 2\n\n"
    "# Your action step 3\n\n...\n\nNext action: [NEXT ACTION NAME]\n\n"
)

SYSTEM_PROMPTS = {"eurus": EURUS_SYSTEM_PROMPT, "none": None}

# Appended to the last user message, as in Eurus-2-RL-Data and the Eurus-2 evaluation prompts.
USER_SUFFIXES = {
    "math": "\n\nPresent the answer in LaTex format: \\boxed{Your answer}",
    "code": "\n\nWrite Python code to solve the problem. Present the code in \n```python\n"
    "Your code\n```\nat the end.",
}

PLAIN_SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class PromptFormat:
  """How a chat becomes prompt text.

  system_prompt: text to prepend as a system message when the chat has none; None = never.
  user_suffix: append the ability's instruction (USER_SUFFIXES) to the last user message.
  apply_chat_template: render with the tokenizer's chat template; else join the contents.
  """

  system_prompt: Optional[str] = None
  user_suffix: bool = False
  apply_chat_template: bool = True

  @classmethod
  def from_config(cls, task_config: Mapping[str, Any]) -> "PromptFormat":
    """From `config.task`: system_prompt (a SYSTEM_PROMPTS name), user_suffix,
    apply_chat_template."""
    missing = [
        k for k in ("system_prompt", "user_suffix", "apply_chat_template") if k not in task_config
    ]
    if missing:
      raise KeyError(f"config.task is missing {missing} (needed to render prompts)")
    name = task_config["system_prompt"]
    if name not in SYSTEM_PROMPTS:
      raise ValueError(
          f"config.task.system_prompt={name!r}; expected one of " f"{sorted(SYSTEM_PROMPTS)}"
      )
    return cls(
        system_prompt=SYSTEM_PROMPTS[name],
        user_suffix=bool(task_config["user_suffix"]),
        apply_chat_template=bool(task_config["apply_chat_template"]),
    )


def _squash(text: str) -> str:
  return "".join(text.split())


def build_chat(
    messages: Sequence[Mapping[str, str]], ability: str, fmt: PromptFormat
) -> list[dict[str, str]]:
  """The chat after steps 1-2 of the module docstring (a new list; the input is not changed)."""
  chat = [{"role": m["role"], "content": m["content"]} for m in messages]
  if fmt.system_prompt is not None and chat[0]["role"] != "system":
    chat.insert(0, {"role": "system", "content": fmt.system_prompt})
  suffix = USER_SUFFIXES.get(ability) if fmt.user_suffix else None
  if suffix is not None:
    last_user = max(i for i, m in enumerate(chat) if m["role"] == "user")
    if _squash(suffix) not in _squash(chat[last_user]["content"]):
      chat[last_user]["content"] += suffix
  return chat


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A record with its rendered prompt text and token ids (unpadded)."""

  record: Record
  text: str
  token_ids: tuple[int, ...]


class PromptEncoder:
  """Renders and tokenizes records; drops (and counts) prompts over `max_prompt_len` tokens.

  `tokenizer` is a `prime_jax.tokenizer.Tokenizer` (anything with `apply_chat_template(messages,
  add_generation_prompt=True)` and `encode(text, add_special_tokens=...)`).
  """

  def __init__(self, tokenizer, fmt: PromptFormat, max_prompt_len: int):
    if max_prompt_len < 1:
      raise ValueError(f"max_prompt_len must be positive, got {max_prompt_len}")
    self.tokenizer = tokenizer
    self.fmt = fmt
    self.max_prompt_len = max_prompt_len

  def render(self, record: Record) -> str:
    chat = build_chat(record.chat(), record.ability, self.fmt)
    if self.fmt.apply_chat_template:
      return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    return PLAIN_SEPARATOR.join(m["content"] for m in chat)

  def encode(self, record: Record) -> Prompt:
    """The record's prompt, whatever its length."""
    text = self.render(record)
    ids = self.tokenizer.encode(text, add_special_tokens=not self.fmt.apply_chat_template)
    return Prompt(record, text, tuple(ids))

  def encode_all(self, records: Sequence[Record]) -> tuple[list[Prompt], int]:
    """(prompts of `records` that fit, in order; how many were dropped for length)."""
    prompts = [self.encode(record) for record in records]
    kept = [p for p in prompts if len(p.token_ids) <= self.max_prompt_len]
    return kept, len(prompts) - len(kept)

  def draw(self, records: PromptIterator, n: int) -> tuple[list[Prompt], int]:
    """The next `n` prompts that fit, and how many were dropped on the way. Dropping more than
    an epoch's worth of records in one call means too few prompts fit: an error."""
    prompts: dict[int, Prompt] = {}

    def lengths(positions):
      for i, record in zip(positions, records.read(positions)):
        prompts[i] = self.encode(record)
      return [len(prompts[i].token_ids) for i in positions]

    positions, dropped = self.draw_positions(records, n, lengths=lengths)
    return [prompts[i] for i in positions], dropped

  def draw_positions(
      self,
      records: PromptIterator,
      n: int,
      *,
      lengths: Optional[Callable[[list[int]], Sequence[int]]] = None,
  ) -> tuple[list[int], int]:
    """`draw` as source positions: those of the next `n` prompts that fit, and how many were
    dropped. `lengths(positions)` gives the prompts' token counts (default: encode them here;
    the trainer's processes each encode a share and exchange the counts)."""
    if lengths is None:
      lengths = lambda positions: [len(self.encode(r).token_ids) for r in records.read(positions)]
    num_records = len(records.source)
    kept, dropped = [], 0
    while len(kept) < n:
      # Exactly the shortfall, so the iterator never runs past the records used.
      positions = records.take_positions(n - len(kept))
      for i, length in zip(positions, lengths(positions)):
        if length <= self.max_prompt_len:
          kept.append(i)
        else:
          dropped += 1
      if dropped > num_records:
        raise ValueError(
            f"found only {len(kept)} of {n} prompts within max_prompt_len="
            f"{self.max_prompt_len} tokens after a full pass over {num_records} "
            "records; raise rl.max_prompt_len or check the data"
        )
    return kept, dropped
