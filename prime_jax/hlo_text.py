"""Reading XLA's optimized HLO text: computations, instructions, and what a loop body runs."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4}


def _bytes(dtype: str, dims: str) -> int:
  """Bytes of an array of HLO element type `dtype` and dimensions "d0,d1,..." (0: a type not in
  the table, e.g. token)."""
  return _DTYPE_BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)


_CALLS = re.compile(r"\b(?:calls|body|condition|to_apply)=%([\w.\-]+)")


class Instruction(NamedTuple):
  name: str
  shape: str  # e.g. "f32[6,2,128,8]{3,2,1,0}" or a tuple "(s32[], ...)"
  opcode: str
  text: str  # the whole line

  def array_bytes(self) -> int:
    """Bytes of a plain array result (0 for tuples and tokens)."""
    m = re.fullmatch(r"(\w+)\[([\d,]*)\](?:\{.*\})?", self.shape)
    return _bytes(m.group(1), m.group(2)) if m else 0

  def result_bytes(self) -> int:
    """Bytes of the result, a tuple's arrays summed; an async `-start` op's tuple (operands,
    result): its last element, what the op produces."""
    sizes = [_bytes(dtype, dims) for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", self.shape)]
    return sizes[-1] if self.shape.startswith("(") and sizes else sum(sizes)

  def called(self) -> list[str]:
    return _CALLS.findall(self.text)


def parse(hlo: str) -> tuple[dict[str, list[Instruction]], str]:
  """(computation name -> its instructions, the entry computation's name)."""
  computations, entry, current = {}, None, None
  for line in hlo.splitlines():
    header = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)
    if header:
      current = computations.setdefault(header.group(2), [])
      entry = header.group(2) if header.group(1) else entry
      continue
    inst = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\(", line)
    if inst and current is not None:
      current.append(Instruction(inst.group(1), inst.group(2), inst.group(3), line.strip()))
  return computations, entry


def reachable(computations: dict, root: str) -> set[str]:
  """`root` and every computation it calls, transitively (fusions, loops, reductions)."""
  seen, todo = set(), [root]
  while todo:
    name = todo.pop()
    if name in seen or name not in computations:
      continue
    seen.add(name)
    todo += [c for inst in computations[name] for c in inst.called()]
  return seen
