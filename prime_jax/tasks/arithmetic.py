"""Multi-step integer arithmetic with a chain of thought: the built-in task for CPU-scale research.

A prompt is a start value and k operations on zero-padded numbers, ending in `=`, e.g.
`a=07;+05;*02;-03=` (width = digits of `max_value`); the final `=` marks where the response starts
however the prompt is rendered (chat template or plain). The response writes the running value
after each operation, one step per line written out as an equation, then the answer boxed:

    07+05=12
    12*02=24
    24-03=21
    \\boxed{21}

Every running value stays in 0..max_value and `*` operands lie in mul_min..mul_max. The default
run (`arithmetic_config()`) uses single digits, `max_value=9` (`a=7;-5;*3=`, `7-5=2`): with two
digits SFT learnt the carries and the later operands at a seed- and CPU-dependent step, too late
on some seeds (README "The default run"). For two digits, both format choices are what lets a
~200k-parameter model learn the task within ~1,000 SFT steps on a CPU: zero padding puts every
digit at a fixed offset (unpadded numbers stayed under 7% accuracy), and restating each step's
operands next to its result keeps the arithmetic local (with bare results,
`12 / 24 / 21`, the model must find the i-th operation in the prompt and stayed near 10% greedy
accuracy after 1,000 steps, against 90% with the equations).

With `step_labels` each operation and each response line carry
the step's letter, `a=07;A+05;B*02;C-03=` and `A07+05=12` / `B12*02=24` / `C24-03=21`: a line finds
its operation by matching its letter (a content lookup) instead of by counting lines, the skill
SFT learnt last. Without letters, models that missed the band over seeds 0-9 copied the third or
fourth operand with a wrong digit (one got 69 of 82 four-step prompts wrong against 17 of 76
two-step ones); with letters, the greedy answers of three such seeds' models copied no operand
wrong, and what errors are left are arithmetic (experiments/results/sft_band/NOTES.md).

SFT demonstrations carry step mistakes: with probability `mistake_rate` a step's result is off by
±1..3 and later steps continue from the wrong value, so the SFT model is imperfect and RL has
something to fix. Grading is exact: the last `\\boxed{}` must hold the right integer.

With `free_order`, the demonstrator writes the two operands of each `+` / `*` step in an order it
draws at random (`12+05=17` or `05+12=17`): tokens that do not change the outcome, so the n samples
of a prompt stop sharing long prefixes and outcome-only RLOO loses the step credit it gets where
samples diverge (the `arithmetic_credit_config()` task). Grading still reads only the box.

`first_wrong_step` is the task's own step oracle: the character span of the first step line that
is not the right equation (either operand order), or of what stands where the box should be. It
gives the oracle process rewards of `rl.process_reward="oracle"` (`prime_jax.oracle_rewards`).

Knobs (config.task): min_ops, max_ops, max_value, mul_min, mul_max, mistake_rate, free_order,
step_labels, num_train, num_eval.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np

from prime_jax.verifiers.math_answer import last_boxed
from prime_jax.data.records import Record
from prime_jax.tasks.registry import register_task
from prime_jax.tokenizer import train_sentencepiece
from prime_jax.verifiers import ItemResult, register_ability

NAME = "arithmetic"
ABILITY = "arithmetic"
OPS = ("+", "-", "*")
COMMUTATIVE = ("+", "*")
BOXED = "\\boxed{"
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # step i's letter with step_labels
_MAX_MISTAKE = 3
_TOKENIZER_CORPUS = 4000  # demonstrations the tokenizer is trained on
_SPLIT_STREAMS = {"train": 0, "eval": 1}


@dataclasses.dataclass(frozen=True)
class ArithmeticSpec:
  """The difficulty knobs, validated. A field a task config lacks keeps its default here, so
  configs written before a knob existed still describe the same task."""

  min_ops: int = 2
  max_ops: int = 4
  max_value: int = 99
  mul_min: int = 2
  mul_max: int = 5
  mistake_rate: float = 0.1
  free_order: bool = False  # demonstrations write `+` / `*` operands in a random order
  step_labels: bool = False  # letter each operation and each response line: `;A+05` / `A07+05=12`

  def __post_init__(self):
    if not 1 <= self.min_ops <= self.max_ops:
      raise ValueError(
          f"arithmetic task needs 1 <= min_ops <= max_ops, got min_ops={self.min_ops}"
          f" max_ops={self.max_ops}"
      )
    if self.max_value < 2:
      raise ValueError(f"arithmetic task needs max_value >= 2, got {self.max_value}")
    if not 1 <= self.mul_min <= self.mul_max <= self.max_value:
      raise ValueError(
          f"arithmetic task needs 1 <= mul_min <= mul_max <= max_value, got "
          f"mul_min={self.mul_min} mul_max={self.mul_max}"
      )
    if not 0.0 <= self.mistake_rate <= 1.0:
      raise ValueError(f"arithmetic task needs 0 <= mistake_rate <= 1, got {self.mistake_rate}")
    for knob in ("free_order", "step_labels"):
      if not isinstance(getattr(self, knob), bool):
        raise ValueError(f"arithmetic task needs {knob} True or False, got {getattr(self, knob)!r}")
    if self.step_labels and self.max_ops > len(LABELS):
      raise ValueError(
          f"arithmetic task with step_labels has {len(LABELS)} letters, so max_ops <="
          f" {len(LABELS)}; got max_ops={self.max_ops}"
      )

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> "ArithmeticSpec":
    return cls(
        **{f.name: task_config[f.name] for f in dataclasses.fields(cls) if f.name in task_config}
    )

  @property
  def width(self) -> int:
    """Digits every number is zero-padded to."""
    return len(str(self.max_value))


@dataclasses.dataclass(frozen=True)
class Problem:
  """A start value and a chain of (op, operand) steps."""

  start: int
  steps: tuple[tuple[str, int], ...]


def apply_op(value: int, op: str, operand: int) -> int:
  if op == "+":
    return value + operand
  if op == "-":
    return value - operand
  if op == "*":
    return value * operand
  raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def chain_values(problem: Problem) -> list[int]:
  """The running value after each step (the last one is the answer)."""
  values, value = [], problem.start
  for op, operand in problem.steps:
    value = apply_op(value, op, operand)
    values.append(value)
  return values


def _labels(problem: Problem, labels: bool) -> list[str]:
  """Each step's letter (A, B, ...) with `labels`, else empty strings."""
  return list(LABELS[: len(problem.steps)]) if labels else [""] * len(problem.steps)


def format_prompt(problem: Problem, width: int, *, labels: bool = False) -> str:
  """`a=07;+05;*02=`; with `labels` each operation carries its step's letter, `a=07;A+05;B*02=`."""
  return (
      f"a={problem.start:0{width}d}"
      + "".join(
          f";{label}{op}{operand:0{width}d}"
          for label, (op, operand) in zip(_labels(problem, labels), problem.steps)
      )
      + "="
  )


def format_response(
    problem: Problem,
    values: list[int],
    width: int,
    *,
    swaps: Sequence[bool] | None = None,
    labels: bool = False,
) -> str:
  """One step per line, `left op operand = value`, where `left` is the line above's value (the
  start value on the first line); then the last value boxed. `values` are the running values as
  written, possibly with mistakes. `swaps[i]` writes step i's operands the other way round,
  `operand op left` (only for the commutative `+` and `*`); None swaps none. With `labels` a
  line starts with its step's letter (`B12*02=24`), the one the prompt puts before the step's
  operation, so a line finds its operation by matching that letter instead of by counting."""
  swaps = [False] * len(problem.steps) if swaps is None else swaps
  lines, left = [], problem.start
  for label, (op, operand), value, swap in zip(
      _labels(problem, labels), problem.steps, values, swaps, strict=True
  ):
    if swap and op not in COMMUTATIVE:
      raise ValueError(f"cannot swap the operands of {op!r}: only {COMMUTATIVE} commute")
    a, b = (operand, left) if swap else (left, operand)
    lines.append(f"{label}{a:0{width}d}{op}{b:0{width}d}={value:0{width}d}\n")
    left = value
  return "".join(lines) + f"{BOXED}{values[-1]:0{width}d}}}"


_PROMPT_RE = re.compile(r"a=(\d+)((?:;[A-Z]?[-+*]\d+)+)=")
_STEP_RE = re.compile(r";([A-Z]?)([-+*])(\d+)")


def _parse_prompt(text: str) -> tuple[Problem, bool]:
  """(problem, whether the prompt letters its steps); the letters must be A, B, ... in order."""
  match = _PROMPT_RE.fullmatch(text.strip())
  if match is None:
    raise ValueError(f"not an arithmetic prompt (expected like 'a=07;+05;*02='): {text!r}")
  found = _STEP_RE.findall(match.group(2))
  problem = Problem(int(match.group(1)), tuple((op, int(n)) for _, op, n in found))
  letters = "".join(label for label, _, _ in found)
  if letters not in ("", LABELS[: len(found)]):
    raise ValueError(
        f"arithmetic prompt letters its steps {letters!r}; expected none or"
        f" {LABELS[: len(found)]!r}: {text!r}"
    )
  return problem, bool(letters)


def parse_prompt(text: str) -> Problem:
  """The problem of a prompt in either format (`format_prompt`, with or without labels)."""
  return _parse_prompt(text)[0]


def _feasible_steps(
    value: int, spec: ArithmeticSpec, rng: np.random.Generator
) -> list[tuple[str, int]]:
  """One candidate (op, operand) per operation that can keep `value` in 0..max_value."""
  candidates = []
  if value < spec.max_value:
    candidates.append(("+", int(rng.integers(1, spec.max_value - value + 1))))
  if value > 0:
    candidates.append(("-", int(rng.integers(1, value + 1))))
  mul_hi = min(spec.mul_max, spec.max_value // value) if value else spec.mul_max
  if mul_hi >= spec.mul_min:
    candidates.append(("*", int(rng.integers(spec.mul_min, mul_hi + 1))))
  return candidates


def sample_problem(spec: ArithmeticSpec, rng: np.random.Generator) -> Problem:
  """A uniformly drawn feasible operation at each step, with a uniform operand for it."""
  value = start = int(rng.integers(0, spec.max_value + 1))
  steps = []
  for _ in range(int(rng.integers(spec.min_ops, spec.max_ops + 1))):
    candidates = _feasible_steps(value, spec, rng)
    op, operand = candidates[int(rng.integers(len(candidates)))]
    value = apply_op(value, op, operand)
    steps.append((op, operand))
  return Problem(start, tuple(steps))


def _stays_in_range(value: int, steps, max_value: int) -> bool:
  for op, operand in steps:
    value = apply_op(value, op, operand)
    if not 0 <= value <= max_value:
      return False
  return True


def demonstration_values(
    problem: Problem, spec: ArithmeticSpec, rng: np.random.Generator
) -> list[int]:
  """Running values as a fallible demonstrator writes them.

  Each step is wrong with probability `mistake_rate`: its result is off by a delta drawn from
  ±1..3 among those that keep this and every later value in 0..max_value (no mistake when none
  does); later steps apply their operations to the wrong value.
  """
  values, value = [], problem.start
  for i, (op, operand) in enumerate(problem.steps):
    value = apply_op(value, op, operand)
    if rng.random() < spec.mistake_rate:
      deltas = _mistake_deltas(value, problem.steps[i + 1 :], spec)
      if deltas:
        value += deltas[int(rng.integers(len(deltas)))]
    values.append(value)
  return values


def _mistake_deltas(value: int, rest, spec: ArithmeticSpec) -> list[int]:
  """The deltas in ±1..3 that keep `value + delta` and every value after it (the steps `rest`
  applied to it) in 0..max_value."""
  return [
      d
      for d in range(-_MAX_MISTAKE, _MAX_MISTAKE + 1)
      if d and 0 <= value + d <= spec.max_value and _stays_in_range(value + d, rest, spec.max_value)
  ]


def mistake_pair(
    problem: Problem, spec: ArithmeticSpec, rng: np.random.Generator
) -> tuple[str, str, int]:
  """(good response, bad response, index of the wrong step): a matched pair for measuring a
  PRM's process credit (`prime_jax.prm_credit`).

  The bad copy is the good one with exactly one mistake: a step drawn uniformly among those that
  can take one (the last step always can) gets a result off by a delta drawn uniformly from its
  `_mistake_deltas`, and later steps continue consistently from the wrong value, so every later
  line is locally right and the boxed answer is wrong (+, - keep the error, * by >= 1 scales it,
  never to 0). Both texts agree up to the wrong result's first differing digit. A step is a line
  of the response; the index counts lines from 0 (the boxed answer is the last line).
  """
  values = chain_values(problem)
  candidates = [
      (i, deltas)
      for i, value in enumerate(values)
      if (deltas := _mistake_deltas(value, problem.steps[i + 1 :], spec))
  ]
  step, deltas = candidates[int(rng.integers(len(candidates)))]
  value = values[step] + deltas[int(rng.integers(len(deltas)))]
  bad = values[:step] + [value]
  for op, operand in problem.steps[step + 1 :]:
    value = apply_op(value, op, operand)
    bad.append(value)
  return (
      format_response(problem, values, spec.width, labels=spec.step_labels),
      format_response(problem, bad, spec.width, labels=spec.step_labels),
      step,
  )


def demonstration_text(problem: Problem, spec: ArithmeticSpec, rng: np.random.Generator) -> str:
  """A fallible demonstrator's response: `demonstration_values`, then (with `free_order`) a fair
  coin per commutative step for its operand order. Without free_order the rng draws exactly what
  it drew before the knob existed, so the default task's demonstrations are unchanged."""
  values = demonstration_values(problem, spec, rng)
  swaps = None
  if spec.free_order:
    coins = rng.random(len(problem.steps)) < 0.5
    swaps = [bool(c) and op in COMMUTATIVE for c, (op, _) in zip(coins, problem.steps)]
  return format_response(problem, values, spec.width, swaps=swaps, labels=spec.step_labels)


_LINE_RE = re.compile(r"([A-Z]?)(\d+)([-+*])(\d+)=(\d+)")
_BOX_RE = re.compile(re.escape(BOXED) + r"(\d+)\}")


def _step_is_right(line: str, label: str, value: int, op: str, operand: int) -> bool:
  """Whether `line` (no newline) is `label` (the step's letter or "") then step (op, operand) on
  running value `value` with the right result; a commutative step may name its operands in
  either order."""
  match = _LINE_RE.fullmatch(line)
  if match is None or match[1] != label or match[3] != op:
    return False
  operands = (int(match[2]), int(match[4]))
  stated = {operands, operands[::-1]} if op in COMMUTATIVE else {operands}
  return (value, operand) in stated and int(match[5]) == apply_op(value, op, operand)


def first_wrong_step(
    problem: Problem, response: str, *, labels: bool = False
) -> tuple[int, int] | None:
  """The character span [start, stop) of the response's first wrong step; None if all are right.

  The response should be k step lines, each ending in a newline, then `\\boxed{answer}` and
  nothing else. Step line i is wrong unless it is the right equation of step i on the correct
  running value (either operand order for `+` / `*`; zero padding optional), starting with the
  step's letter with `labels` and with no letter without. Because every line
  before the first wrong one is right, "wrong given the line above's written value" and "not the
  correct running value" find the same first step; this checks the latter. A malformed line is a
  wrong step. After the k right lines the rest of the response must be exactly the right box,
  else the rest is the wrong step (an extra line; a missing, malformed or wrong box; text after
  it. The grader reads only the last box, so a response can be graded right and still have a
  wrong step). A step's span covers its line and newline; it is empty, at the end of the
  response, when the response stops where the wrong step's text should start.
  """
  pos, value = 0, problem.start
  for label, (op, operand) in zip(_labels(problem, labels), problem.steps):
    end = response.find("\n", pos)
    if end < 0:  # the last line, without its newline
      if not _step_is_right(response[pos:], label, value, op, operand):
        return pos, len(response)
      return len(response), len(response)  # a right step, then the response stops
    if not _step_is_right(response[pos:end], label, value, op, operand):
      return pos, end + 1
    pos, value = end + 1, apply_op(value, op, operand)
  box = _BOX_RE.fullmatch(response, pos)
  if box is None or int(box[1]) != value:
    return pos, len(response)
  return None


def _record(problem: Problem, spec: ArithmeticSpec, split: str, index: int) -> Record:
  return Record.from_chat(
      id=f"{NAME}-{split}-{index:06d}",
      data_source=NAME,
      ability=ABILITY,
      messages=[
          {"role": "user", "content": format_prompt(problem, spec.width, labels=spec.step_labels)}
      ],
      ground_truth=str(chain_values(problem)[-1]),
  ).validate()


def make_problems(
    spec: ArithmeticSpec, seed: int, num_train: int, num_eval: int
) -> dict[str, list[Problem]]:
  """Distinct eval problems, then train problems (repeats allowed) none of which is in eval.

  Each split draws from its own stream of `seed`, so eval does not change with num_train.
  """
  eval_rng = np.random.default_rng([seed, _SPLIT_STREAMS["eval"]])
  eval_set: dict[Problem, None] = {}  # ordered set
  for _ in range(100 * num_eval + 100):
    if len(eval_set) == num_eval:
      break
    eval_set[sample_problem(spec, eval_rng)] = None
  else:
    raise ValueError(
        f"found only {len(eval_set)} distinct arithmetic problems for num_eval="
        f"{num_eval}; lower num_eval or widen max_ops/max_value"
    )
  train_rng = np.random.default_rng([seed, _SPLIT_STREAMS["train"]])
  train, rejected = [], 0
  while len(train) < num_train:
    problem = sample_problem(spec, train_rng)
    if problem in eval_set:
      rejected += 1
      if rejected > 100 * num_train + 100:
        raise ValueError(
            "almost every arithmetic problem is in the eval split; widen "
            "max_ops/max_value or lower num_eval"
        )
      continue
    train.append(problem)
  return {"train": train, "eval": list(eval_set)}


_INT_RE = re.compile(r"[+-]?\d+")


def score_response(response: str, ground_truth: str) -> float:
  """1.0 iff the last `\\boxed{}` holds an integer equal to the ground truth, else 0.0."""
  answer = last_boxed(response)
  if answer is None or not _INT_RE.fullmatch(answer.strip()):
    return 0.0
  if not _INT_RE.fullmatch(ground_truth.strip()):
    raise ValueError(f"arithmetic ground truth must be an integer, got {ground_truth!r}")
  return float(int(answer) == int(ground_truth))


def grade_item(response: str, ground_truth: str, timeout_s: float) -> ItemResult:
  """The verifier registry's scorer for ability "arithmetic"; counts responses without a box."""
  del timeout_s  # an exact integer comparison takes microseconds
  return ItemResult(
      score_response(response, ground_truth), {"no_answer": int(last_boxed(response) is None)}
  )


class ArithmeticTask:
  """The task object registered under "arithmetic" (see prime_jax.tasks.registry.Task)."""

  name = NAME
  ability = ABILITY

  def make_splits(
      self, task_config: ml_collections.ConfigDict, seed: int
  ) -> dict[str, list[Record]]:
    spec = ArithmeticSpec.from_config(task_config)
    problems = make_problems(spec, seed, task_config.num_train, task_config.num_eval)
    return {
        split: [_record(p, spec, split, i) for i, p in enumerate(ps)]
        for split, ps in problems.items()
    }

  def demonstration(
      self, task_config: ml_collections.ConfigDict, record: Record, rng: np.random.Generator
  ) -> str:
    spec = ArithmeticSpec.from_config(task_config)
    return demonstration_text(parse_prompt(record.chat()[-1]["content"]), spec, rng)

  def first_wrong_step(self, record: Record, response: str) -> tuple[int, int] | None:
    """The step oracle (`prime_jax.tasks.registry.StepOracle`): `first_wrong_step` of the
    record's problem. Needs no task config: both operand orders are right either way, and the
    prompt says whether lines carry step letters."""
    problem, labels = _parse_prompt(record.chat()[-1]["content"])
    return first_wrong_step(problem, response, labels=labels)

  def mistake_pairs(
      self, task_config: ml_collections.ConfigDict, records: list[Record], seed: int, num_pairs: int
  ) -> list[dict]:
    """`num_pairs` matched pairs (`mistake_pair`) on `records`, cycling through them (a record
    used again gets another mistake); deterministic in `seed`. Rows, in the format
    `prime_jax.prm_credit` reads from JSONL: {"id", "prompt" (the record's chat messages),
    "ability", "good", "bad", "wrong_step"}."""
    if not records:
      raise ValueError("mistake_pairs needs at least one record")
    spec = ArithmeticSpec.from_config(task_config)
    rng = np.random.default_rng([seed, 4])
    rows = []
    for i in range(num_pairs):
      record = records[i % len(records)]
      good, bad, step = mistake_pair(parse_prompt(record.chat()[-1]["content"]), spec, rng)
      rows.append(
          dict(
              id=f"{record.id}/mistake{i}",
              prompt=record.chat(),
              ability=record.ability,
              good=good,
              bad=bad,
              wrong_step=step,
          )
      )
    return rows

  def train_tokenizer(
      self, task_config: ml_collections.ConfigDict, out_dir: str | os.PathLike, seed: int
  ) -> Path:
    """A character-level sentencepiece model `out_dir/tokenizer.model` (23 pieces without step
    labels: 4 specials, `\\boxed{`, the 18 characters of the text; one more per step letter).

    One piece per character keeps every number's digits at fixed offsets; BPE merges such as
    `;*` shift them depending on the operation and slowed SFT a lot.
    """
    spec = ArithmeticSpec.from_config(task_config)
    rng = np.random.default_rng([seed, 2])
    texts = []
    for _ in range(_TOKENIZER_CORPUS):
      problem = sample_problem(spec, rng)
      texts.append(format_prompt(problem, spec.width, labels=spec.step_labels))
      texts.append(demonstration_text(problem, spec, rng))
    return train_sentencepiece(
        texts,
        Path(out_dir) / "tokenizer",
        vocab_size=64,
        model_type="char",
        user_defined_symbols=[BOXED],
        hard_vocab_limit=False,
        seed=seed,
    )


TASK = register_task(ArithmeticTask())
register_ability(ABILITY, grade_item, stateless=True)  # plain Python: no cache to outgrow
