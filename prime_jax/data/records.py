"""The record every data source is turned into, and its validation.

A record is one prompt with what grading needs:
  id           unique within a split, e.g. "train.parquet:17" or a source's own id;
  data_source  where it came from ("numina_olympiads", "math500", "arithmetic", ...);
  ability      the verifier family that grades it: "math", "code", or a task's own ability
               ("arithmetic"); lower-case letters, digits and underscores;
  messages     JSON string of the chat, [{"role": ..., "content": str}, ...] with roles system,
               user or assistant, and at least one user message;
  ground_truth math: the LaTeX answer; code: JSON string {"inputs": [...], "outputs": [...]
               [, "fn_name": str]} with as many outputs as inputs (at least one test).
Every field is valid UTF-8 text (no lone surrogates), so it can be stored and read back exactly.

`Record.validate()` checks all of this; writers call it on every record they store, so records
read back from a prepared split are valid without checking them again.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping, Sequence

FIELDS = ("id", "data_source", "ability", "messages", "ground_truth")
ROLES = ("system", "user", "assistant")
_ABILITY_RE = re.compile(r"[a-z][a-z0-9_]*")


class MalformedRecord(ValueError):
  """A row that cannot be a record; the message says which field is wrong and why."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One prompt and its ground truth (see the module docstring for the fields)."""

  id: str
  data_source: str
  ability: str
  messages: str
  ground_truth: str

  def validate(self) -> "Record":
    """Returns the record itself, or raises `MalformedRecord` naming the first bad field."""
    for name in FIELDS:
      value = getattr(self, name)
      if not isinstance(value, str):
        raise MalformedRecord(f"{name} must be a string, got {type(value).__name__}")
      try:
        value.encode("utf-8")
      except UnicodeEncodeError as e:
        raise MalformedRecord(f"{name} is not valid UTF-8 text ({e.reason})") from None
    for name in ("id", "data_source", "ground_truth"):
      if not getattr(self, name).strip():
        raise MalformedRecord(f"{name} is empty")
    if not _ABILITY_RE.fullmatch(self.ability):
      raise MalformedRecord(f"ability {self.ability!r} is not a lower-case name like 'math'")
    _check_messages(self.messages)
    if self.ability == "code":
      _check_code_ground_truth(self.ground_truth)
    return self

  @classmethod
  def from_chat(
      cls,
      *,
      id: str,
      data_source: str,
      ability: str,
      messages: Sequence[Mapping[str, Any]] | str,
      ground_truth: str,
  ) -> "Record":
    """A record from a chat given as a list of {"role", "content"} dicts (other keys are dropped)
    or as its JSON string; not yet validated."""
    if not isinstance(messages, str):
      messages = encode_messages(messages)
    return cls(
        id=id,
        data_source=data_source,
        ability=ability,
        messages=messages,
        ground_truth=ground_truth,
    )

  def chat(self) -> list[dict[str, str]]:
    """The messages as a list of {"role", "content"} dicts."""
    return json.loads(self.messages)

  def to_dict(self) -> dict[str, str]:
    return {name: getattr(self, name) for name in FIELDS}


def encode_messages(messages: Sequence[Mapping[str, Any]]) -> str:
  """The JSON string of a chat, keeping only each message's role and content."""
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
    raise MalformedRecord(
        f"messages must be a list of chat messages, got " f"{type(messages).__name__}"
    )
  plain = []
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
      raise MalformedRecord(f"message {i} is not a {{'role', 'content'}} object: {message!r:.80}")
    plain.append({"role": message["role"], "content": message["content"]})
  return json.dumps(plain, ensure_ascii=False)


def _check_messages(text: str) -> None:
  try:
    messages = json.loads(text)
  except json.JSONDecodeError as e:
    raise MalformedRecord(f"messages is not valid JSON: {e}") from None
  if not isinstance(messages, list) or not messages:
    raise MalformedRecord("messages must be a non-empty JSON list of chat messages")
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
      raise MalformedRecord(f"message {i} must be an object with exactly 'role' and 'content'")
    if message["role"] not in ROLES:
      raise MalformedRecord(f"message {i} has role {message['role']!r}; expected one of {ROLES}")
    if not isinstance(message["content"], str):
      raise MalformedRecord(f"message {i} content must be a string")
  if not any(m["role"] == "user" and m["content"].strip() for m in messages):
    raise MalformedRecord("messages hold no non-empty user message")


def _check_code_ground_truth(text: str) -> None:
  try:
    tests = json.loads(text)
  except json.JSONDecodeError as e:
    raise MalformedRecord(f"code ground_truth is not valid JSON: {e}") from None
  if not isinstance(tests, dict):
    raise MalformedRecord('code ground_truth must be a JSON object {"inputs", "outputs"}')
  inputs, outputs = tests.get("inputs"), tests.get("outputs")
  if not isinstance(inputs, list) or not isinstance(outputs, list):
    raise MalformedRecord("code ground_truth needs lists 'inputs' and 'outputs'")
  if not inputs or len(inputs) != len(outputs):
    raise MalformedRecord(
        f"code ground_truth has {len(inputs)} inputs and {len(outputs)} "
        "outputs; expected the same number, at least one"
    )
  if "fn_name" in tests and not (isinstance(tests["fn_name"], str) and tests["fn_name"]):
    raise MalformedRecord("code ground_truth 'fn_name' must be a non-empty string")
