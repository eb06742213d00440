"""The arithmetic task: generator, mistakes, grading and tokenizer, checked against code written here."""

import re

import numpy as np
import pytest

from prime_jax import configs, verifiers
from prime_jax.tasks import get_task, task_names
from prime_jax.tasks import arithmetic as ar
from prime_jax.tokenizer import load_tokenizer

TASK = get_task("arithmetic")
STEP = re.compile(r";([-+*])(\d+)")


def task_config(**overrides):
  # Two-digit values (the default has single digits): the patterns below read `07+05=12`, and
  # carries and zero padding get exercised; width 1 is the `max_value=9` case of
  # test_records_have_the_format_range_and_ground_truth.
  c = configs.arithmetic_config().task
  c.update({"num_train": 2000, "num_eval": 200, "max_value": 99, **overrides})
  return c


def reference_chain(prompt):
  """(start, [(op, operand)], running values) of a prompt, parsed and computed independently."""
  head, *_ = prompt.split(";")
  start = int(head[len("a=") :])
  steps = [(op, int(n)) for op, n in STEP.findall(prompt)]
  value, values = start, []
  for op, n in steps:
    value = {"+": value + n, "-": value - n, "*": value * n}[op]
    values.append(value)
  return start, steps, values


def prompts(records):
  return [r.chat()[-1]["content"] for r in records]


@pytest.mark.parametrize(
    "knobs", [dict(), dict(min_ops=1, max_ops=6, max_value=9, mul_min=2, mul_max=3)]
)
def test_records_have_the_format_range_and_ground_truth(knobs):
  c = task_config(**knobs)
  width = len(str(c.max_value))
  num = rf"\d{{{width}}}"
  prompt_re = re.compile(rf"a={num}(;[-+*]{num}){{{c.min_ops},{c.max_ops}}}=")
  splits = TASK.make_splits(c, seed=0)
  lengths = set()
  for split, records in splits.items():
    for i, r in enumerate(records):
      assert r.id == f"arithmetic-{split}-{i:06d}"
      assert (r.ability, r.data_source) == ("arithmetic", "arithmetic")
      assert [m["role"] for m in r.chat()] == ["user"]
      prompt = r.chat()[0]["content"]
      assert prompt_re.fullmatch(prompt), prompt
      start, steps, values = reference_chain(prompt)
      assert 0 <= start <= c.max_value
      assert all(0 <= v <= c.max_value for v in values), prompt
      assert all(c.mul_min <= n <= c.mul_max for op, n in steps if op == "*"), prompt
      assert all(n >= 1 for op, n in steps if op != "*"), prompt
      assert r.ground_truth == str(values[-1])
      lengths.add(len(steps))
  assert lengths == set(range(c.min_ops, c.max_ops + 1))
  ops = {op for r in splits["train"] for op, _ in reference_chain(prompts([r])[0])[1]}
  assert ops == {"+", "-", "*"}


def test_generation_is_deterministic_in_the_seed():
  c = task_config()
  assert TASK.make_splits(c, seed=3) == TASK.make_splits(c, seed=3)
  assert prompts(TASK.make_splits(c, seed=4)["eval"]) != prompts(TASK.make_splits(c, 3)["eval"])


def test_splits_are_disjoint_and_eval_is_distinct():
  c = task_config(min_ops=1, max_ops=2, max_value=9, num_train=3000, num_eval=100)
  splits = TASK.make_splits(c, seed=0)
  train, evals = prompts(splits["train"]), prompts(splits["eval"])
  assert (len(train), len(evals)) == (3000, 100)
  assert len(set(evals)) == 100
  assert not set(train) & set(evals)
  # The eval split does not depend on how much train data is drawn.
  c.num_train = 10
  assert prompts(TASK.make_splits(c, seed=0)["eval"]) == evals


def test_too_small_a_problem_space_is_a_clear_error():
  c = task_config(min_ops=1, max_ops=1, max_value=2, mul_min=2, mul_max=2, num_eval=50)
  with pytest.raises(ValueError, match="distinct arithmetic problems"):
    TASK.make_splits(c, seed=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(min_ops=3, max_ops=2), "min_ops"),
        (dict(max_value=1), "max_value"),
        (dict(mul_min=4, mul_max=3), "mul_min"),
        (dict(mistake_rate=1.5), "mistake_rate"),
    ],
)
def test_bad_knobs_are_named(bad, message):
  with pytest.raises(ValueError, match=message):
    TASK.make_splits(task_config(**bad), seed=0)


LINE = re.compile(r"(\d\d)([-+*])(\d\d)=(\d\d)")


@pytest.mark.parametrize("rate", [0.0, 0.2, 1.0])
def test_demonstration_mistakes_have_the_rate_size_and_consistency(rate):
  c = task_config(mistake_rate=rate)
  records = TASK.make_splits(c, seed=0)["train"]
  rng = np.random.default_rng(0)
  mistakes = steps_seen = wrong_answers = 0
  for r in records:
    response = TASK.demonstration(c, r, rng)
    *lines, boxed = response.split("\n")
    start, steps, _ = reference_chain(prompts([r])[0])
    assert len(lines) == len(steps)
    previous = start
    for (op, n), line in zip(steps, lines):
      # Each line restates the step on the value written above (so it continues any mistake).
      match = LINE.fullmatch(line)
      assert match, response
      assert (int(match[1]), match[2], int(match[3])) == (previous, op, n), response
      written = int(match[4])
      expected = {"+": previous + n, "-": previous - n, "*": previous * n}[op]
      assert 0 <= written <= c.max_value
      assert abs(written - expected) <= 3
      mistakes += written != expected
      steps_seen += 1
      previous = written
    assert boxed == f"\\boxed{{{previous:02d}}}"
    wrong_answers += str(previous) != r.ground_truth
  if rate == 0.0:
    assert mistakes == wrong_answers == 0
  elif rate == 1.0:
    assert mistakes / steps_seen > 0.95  # a mistake is skipped only where none stays in range
  else:
    assert abs(mistakes / steps_seen - rate) < 0.02  # ~6000 steps: 5 standard deviations
    assert 0.35 < wrong_answers / len(records) < 0.6


def test_demonstrations_are_deterministic_in_the_rng():
  c = task_config(mistake_rate=0.3)
  records = TASK.make_splits(c, seed=0)["train"][:50]
  run = lambda seed: [TASK.demonstration(c, r, np.random.default_rng(seed)) for r in records]
  assert run(1) == run(1)
  assert run(1) != run(2)


def test_score_response():
  assert ar.score_response("12\n24\n\\boxed{24}", "24") == 1.0
  assert ar.score_response("\\boxed{07}", "7") == 1.0  # zero padding is the same integer
  assert ar.score_response("\\boxed{08}", "7") == 0.0
  assert ar.score_response("12\n25\n\\boxed{25}", "24") == 0.0
  assert ar.score_response("12\n24\n24", "24") == 0.0  # no box
  assert ar.score_response("\\boxed{24} then \\boxed{25}", "24") == 0.0  # the last box counts
  assert ar.score_response("\\boxed{25}\n\\boxed{24}", "24") == 1.0
  assert ar.score_response("\\boxed{2x}", "2") == 0.0
  assert ar.score_response("\\boxed{24", "24") == 0.0  # unclosed
  assert ar.score_response("", "24") == 0.0


def test_grading_goes_through_the_verifier_registry():
  scores = verifiers.grade("arithmetic", ["1\n\\boxed{05}", "\\boxed{6}", "5"], ["5", "5", "5"])
  assert list(scores) == [1.0, 0.0, 0.0]


def test_tokenizer_round_trip_and_pieces(tmp_path):
  c = task_config()
  tok = load_tokenizer(TASK.train_tokenizer(c, tmp_path, seed=0))
  assert tok.vocab_size <= 32
  pieces = {tok.processor.id_to_piece(i) for i in range(tok.vocab_size)}
  assert set("0123456789") | {"\\boxed{"} <= pieces
  rng = np.random.default_rng(0)
  for r in TASK.make_splits(c, seed=1)["eval"][:50]:
    prompt, response = prompts([r])[0], TASK.demonstration(c, r, rng)
    prompt_ids = tok.encode_chat(r.chat())
    assert tok.decode(prompt_ids) == prompt + "\n"
    response_ids = tok.encode(response, add_special_tokens=False)
    assert tok.decode(response_ids) == response
    # Digits are single pieces: a response has one token per digit.
    assert sum(tok.processor.id_to_piece(i).isdigit() for i in response_ids) == sum(
        ch.isdigit() for ch in response
    )
    assert tok.processor.unk_id() not in prompt_ids + response_ids


def test_registry():
  assert "arithmetic" in task_names()
  assert get_task("arithmetic").ability == "arithmetic"
  with pytest.raises(KeyError, match="unknown task 'nope'.*arithmetic"):
    get_task("nope")


# --------------------------------------------------------------------------- free order, oracle


@pytest.mark.parametrize("knob", ["free_order", "step_labels"])
def test_format_knobs_are_validated_and_absent_means_off(knob):
  with pytest.raises(ValueError, match=knob):
    ar.ArithmeticSpec(**{knob: "yes"})
  c = task_config()
  del c[knob]  # a config written before the knob existed describes the same task
  assert not getattr(ar.ArithmeticSpec.from_config(c), knob)
  with pytest.raises(ValueError, match="only"):
    ar.format_response(ar.Problem(5, (("-", 2),)), [3], 2, swaps=[True])


def test_free_order_demonstrations_use_both_orders_and_grade_right():
  c = task_config(free_order=True, mistake_rate=0.0, min_ops=6, max_ops=8)
  records = TASK.make_splits(c, seed=0)["train"][:300]
  rng = np.random.default_rng(0)
  orders = {"+": set(), "*": set(), "-": set()}
  for r in records:
    response = TASK.demonstration(c, r, rng)
    *lines, _ = response.split("\n")
    start, steps, values = reference_chain(prompts([r])[0])
    previous = start
    for (op, n), line, value in zip(steps, lines, values):
      match = LINE.fullmatch(line)
      a, b = int(match[1]), int(match[3])
      assert (match[2], int(match[4])) == (op, value)
      orders[op].add("left first" if (a, b) == (previous, n) else "operand first")
      assert {(a, b), (b, a)} >= {(previous, n)}  # one of the two orders
      previous = value
    assert ar.score_response(response, r.ground_truth) == 1.0
    assert TASK.first_wrong_step(r, response) is None  # the oracle accepts both orders
  assert orders["+"] == orders["*"] == {"left first", "operand first"}
  assert orders["-"] == {"left first"}  # subtraction does not commute


def test_default_demonstrations_are_unchanged_by_the_knob():
  """free_order=False draws exactly what the task drew before it existed."""
  c = task_config(mistake_rate=0.3)
  records = TASK.make_splits(c, seed=0)["train"][:50]
  rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
  for r in records:
    problem = ar.parse_prompt(prompts([r])[0])
    spec = ar.ArithmeticSpec.from_config(c)
    expected = ar.format_response(problem, ar.demonstration_values(problem, spec, rng_b), 2)
    assert TASK.demonstration(c, r, rng_a) == expected


PROBLEM = ar.parse_prompt("a=07;+05;*02;-03=")  # 12, 24, 21
RIGHT = "07+05=12\n12*02=24\n24-03=21\n\\boxed{21}"


@pytest.mark.parametrize(
    "response, span",
    [
        (RIGHT, None),
        ("05+07=12\n02*12=24\n24-03=21\n\\boxed{21}", None),  # swapped commutative operands
        ("7+5=12\n12*2=24\n24-3=21\n\\boxed{021}", None),  # padding is not a mistake
        ("07+05=13\n13*02=26\n26-03=23\n\\boxed{23}", (0, 9)),  # wrong at step 1
        ("07+05=12\n12*02=25\n25-03=22\n\\boxed{22}", (9, 18)),  # wrong at step 2, continued
        ("07+05=12\n12*02=24\n24-03=20\n\\boxed{20}", (18, 27)),  # wrong at step 3
        ("07+05=12\n12*02=24\n03-24=21\n\\boxed{21}", (18, 27)),  # `-` operands swapped
        ("07+05=12\n12*03=36\n36-03=33\n\\boxed{21}", (9, 18)),  # wrong operand, right box
        ("07+05=12\n12+02=14\n14-03=11\n\\boxed{11}", (9, 18)),  # wrong operation
        ("07+05=12\n13*02=26\n26-03=23\n\\boxed{23}", (9, 18)),  # wrong left operand
        ("07+05=12\n12*02=24\n24-03=21\n\\boxed{22}", (27, 37)),  # right steps, wrong box
        ("07+05=12\n12*02=24\n24-03=21\n21", (27, 29)),  # no box
        ("07+05=12\n12*02=24\n24-03=21\n\\boxed{21}\n", (27, 38)),  # text after the box
        (
            "07+05=12\n12*02=24\n24-03=21\n24-01=23\n\\boxed{23}",
            (27, 46),
        ),  # an extra step: the rest
        ("07+05=12\n12*02==24\n24-03=21\n\\boxed{21}", (9, 19)),  # malformed line
        ("07+05=12\n12*02=24", (17, 17)),  # stops after a right step: the next one is missing
        ("07+05=12\n12*02=24\n", (18, 18)),
        ("07+05=12\n12*02=2", (9, 16)),  # stops inside a wrong step
        ("", (0, 0)),
    ],
)
def test_first_wrong_step(response, span):
  assert ar.first_wrong_step(PROBLEM, response) == span


def test_first_wrong_step_finds_the_demonstrators_first_mistake():
  c = task_config(mistake_rate=0.3, free_order=True)
  rng = np.random.default_rng(0)
  flagged = 0
  for r in TASK.make_splits(c, seed=0)["train"][:300]:
    response = TASK.demonstration(c, r, rng)
    _, _, values = reference_chain(prompts([r])[0])
    written = [int(line[-2:]) for line in response.split("\n")[:-1]]
    first = next((i for i, (w, v) in enumerate(zip(written, values)) if w != v), None)
    span = TASK.first_wrong_step(r, response)
    if first is None:
      assert span is None
    else:
      flagged += 1
      assert span == (9 * first, 9 * first + 9)  # its line: 9 characters with the newline
  assert flagged > 50


LABELLED_PROMPT = re.compile(r"a=(\d\d)((?:;[A-Z][-+*]\d\d)+)=")
LABELLED_LINE = re.compile(r"([A-Z])(\d\d)([-+*])(\d\d)=(\d\d)")


def test_step_labels_letter_the_prompt_and_each_line_in_order():
  c = task_config(step_labels=True, mistake_rate=0.0)
  records = TASK.make_splits(c, seed=0)["train"][:300]
  rng = np.random.default_rng(0)
  for r in records:
    prompt = prompts([r])[0]
    match = LABELLED_PROMPT.fullmatch(prompt)
    assert match, prompt
    letters = re.findall(r";([A-Z])", match[2])
    assert "".join(letters) == "ABCDEFGH"[: len(letters)]
    start, steps, values = reference_chain(re.sub(r";[A-Z]", ";", prompt))
    response = TASK.demonstration(c, r, rng)
    *lines, box = response.split("\n")
    assert len(lines) == len(steps) and box == f"\\boxed{{{values[-1]:02d}}}"
    previous = start
    for letter, (op, n), line, value in zip(letters, steps, lines, values):
      assert LABELLED_LINE.fullmatch(line).groups() == (
          letter,
          f"{previous:02d}",
          op,
          f"{n:02d}",
          f"{value:02d}",
      )
      previous = value
    assert ar.score_response(response, r.ground_truth) == 1.0
    assert TASK.first_wrong_step(r, response) is None
    # The oracle holds a lettered prompt's lines to their letters.
    unlettered = "\n".join(line[1:] for line in lines) + "\n" + box
    assert TASK.first_wrong_step(r, unlettered) == (0, 9)


LABELLED = "a=07;A+05;B*02;C-03="
LABELLED_RIGHT = "A07+05=12\nB12*02=24\nC24-03=21\n\\boxed{21}"


@pytest.mark.parametrize(
    "response, span",
    [
        (LABELLED_RIGHT, None),
        ("A05+07=12\nB02*12=24\nC24-03=21\n\\boxed{21}", None),  # swapped commutative operands
        ("A07+05=12\nC12*02=24\nC24-03=21\n\\boxed{21}", (10, 20)),  # wrong letter
        ("A07+05=12\n12*02=24\nC24-03=21\n\\boxed{21}", (10, 19)),  # missing letter
        ("A07+05=12\nB12*02=25\nC25-03=22\n\\boxed{22}", (10, 20)),  # wrong result
        ("A07+05=12\nB12*02=24\nC24-03=21\nD21+01=22\n\\boxed{22}", (30, 50)),  # extra step
    ],
)
def test_first_wrong_step_with_step_labels(response, span):
  problem = ar.parse_prompt(LABELLED)
  assert problem == PROBLEM  # the letters are format, not problem
  assert ar.first_wrong_step(problem, response, labels=True) == span
  record = ar._record(problem, ar.ArithmeticSpec(step_labels=True), "eval", 0)
  assert TASK.first_wrong_step(record, response) == span  # the prompt says lines are lettered


@pytest.mark.parametrize("prompt", ["a=07;B+05;A*02=", "a=07;A+05;*02=", "a=07;A+05;C*02="])
def test_prompt_letters_out_of_order_are_named(prompt):
  with pytest.raises(ValueError, match="letters its steps"):
    ar.parse_prompt(prompt)


def test_step_labels_mistake_pairs_and_the_letter_limit():
  spec = ar.ArithmeticSpec(step_labels=True)
  rng = np.random.default_rng(0)
  for _ in range(200):
    problem = ar.sample_problem(spec, rng)
    good, bad, step = ar.mistake_pair(problem, spec, rng)
    assert ar.first_wrong_step(problem, good, labels=True) is None
    lines = bad.split("\n")
    start = sum(len(line) + 1 for line in lines[:step])
    assert ar.first_wrong_step(problem, bad, labels=True)[0] == start
    first_diff = next(i for i, (a, b) in enumerate(zip(good, bad)) if a != b)
    assert start + 7 <= first_diff < start + 10  # the wrong step's result digits
  with pytest.raises(ValueError, match="max_ops <= 26"):
    ar.ArithmeticSpec(step_labels=True, min_ops=2, max_ops=27, max_value=99)


def test_step_labels_tokenizer_has_one_piece_per_letter(tmp_path):
  c = task_config(step_labels=True)
  tok = load_tokenizer(TASK.train_tokenizer(c, tmp_path, seed=0))
  text = "A07+05=12\nB12*02=24\n"
  assert len(tok.encode(text, add_special_tokens=False)) == len(text)
  assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
