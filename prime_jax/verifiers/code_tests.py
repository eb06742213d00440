"""Code grading inputs: the program (last ```python block) and its test cases (Eurus-2 JSON).

Ground truth (Eurus-2-RL-Data): a JSON object {"inputs": [...], "outputs": [...]} with an
optional "fn_name". Without fn_name each input is a stdin string and each output the expected
stdout (lists of lines are joined with newlines, as in APPS). With fn_name the problem is
call-based: an input is either a string with one JSON argument per line (the released PRIME
format) or a list of arguments; an output is JSON (a string is decoded when it parses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_FENCE = "```python"


def extract_code(response: str) -> str | None:
  """The last ```python block of a response (to the closing fence or the end), or None."""
  start = response.rfind(_FENCE)
  if start < 0:
    return None
  body = response[start + len(_FENCE) :]
  body = body.split("```", 1)[0]
  return body if body.strip() else None


@dataclass(frozen=True)
class TestSuite:
  """Test cases ready to run: stdin strings or argument lists, and expected outputs."""

  inputs: tuple
  outputs: tuple
  fn_name: str | None


def _joined(value, what: str, index: int) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return "\n".join(value)
  raise ValueError(
      f"{what}[{index}] must be a string or a list of strings for a stdin/stdout "
      f"problem, got {type(value).__name__}"
  )


def _call_args(value, index: int) -> list:
  if isinstance(value, list):
    return value
  if isinstance(value, str):
    try:
      return [json.loads(line) for line in value.split("\n") if line.strip()]
    except ValueError as exc:
      raise ValueError(
          f"inputs[{index}] of a call-based problem is not one JSON value per " f"line: {exc}"
      ) from None
  raise ValueError(
      f"inputs[{index}] of a call-based problem must be a list of arguments or "
      f"a string of JSON lines, got {type(value).__name__}"
  )


def _call_expected(value):
  if isinstance(value, str):
    try:
      return json.loads(value)
    except ValueError:
      return value
  return value


def parse_ground_truth(ground_truth: str | dict, max_tests: int) -> TestSuite:
  """Parse Eurus-2 code ground truth, keeping the first `max_tests` cases.

  Raises ValueError naming the problem when the ground truth is malformed.
  """
  if isinstance(ground_truth, str):
    try:
      ground_truth = json.loads(ground_truth)
    except ValueError as exc:
      raise ValueError(f"code ground truth is not valid JSON: {exc}") from None
  if not isinstance(ground_truth, dict):
    raise ValueError(
        f"code ground truth must be a JSON object, got " f"{type(ground_truth).__name__}"
    )
  inputs, outputs = ground_truth.get("inputs"), ground_truth.get("outputs")
  if not isinstance(inputs, list) or not isinstance(outputs, list):
    raise ValueError("code ground truth needs list fields 'inputs' and 'outputs'")
  if len(inputs) != len(outputs):
    raise ValueError(f"code ground truth has {len(inputs)} inputs but {len(outputs)} outputs")
  if not inputs:
    raise ValueError("code ground truth has no test cases")
  fn_name = ground_truth.get("fn_name") or None
  if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
    raise ValueError(f"fn_name must be a Python identifier, got {fn_name!r}")
  inputs, outputs = inputs[:max_tests], outputs[:max_tests]
  if fn_name is None:
    ins = tuple(_joined(v, "inputs", i) for i, v in enumerate(inputs))
    outs = tuple(_joined(v, "outputs", i) for i, v in enumerate(outputs))
  else:
    ins = tuple(_call_args(v, i) for i, v in enumerate(inputs))
    outs = tuple(_call_expected(v) for v in outputs)
  return TestSuite(ins, outs, fn_name)
