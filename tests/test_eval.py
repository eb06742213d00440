"""The evaluation harness (prime_jax.evaluation / python -m prime_jax.eval) on the fixtures of
tests/fixtures/eval and a tiny random checkpoint."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hf_fixtures import with_word_level_tokenizer
from prime_jax import evaluation as ev
from prime_jax.data import EURUS_SYSTEM_PROMPT, USER_SUFFIXES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "eval")
COLUMNS = [
    "Model",
    "AIME24",
    "AMC",
    "MATH-500",
    "Minerva",
    "OlympiadB",
    "LeetCode",
    "LCB v2",
    "avg",
]

# Right answers for the fixtures' code problems, by problem id.
SOLUTIONS = {
    "add-two": "class Solution:\n    def addTwo(self, a, b):\n        return a + b\n",
    "reverse-list": "class Solution:\n    def reverse(self, nums):\n        return nums[::-1]\n",
    "abc001_a": "a, b = map(int, input().split())\nprint(a + b)\n",
    "abc001_b": "n = int(input())\nfor i in range(1, n + 1):\n    print(i * i)\n",
}


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def right_answer(record):
  if record.ability == "math":
    return f"[OUTPUT]\n\nSo the answer is $\\boxed{{{record.ground_truth}}}$."
  return f"Here it is:\n```python\n{SOLUTIONS[record.id]}```"


def wrong_answer(record):
  return "\\boxed{-12345}" if record.ability == "math" else "```python\nprint('nope')\n```"


@pytest.fixture(scope="module")
def checkpoint(tiny_hf, tmp_path_factory):
  """The tiny qwen2 checkpoint (context 256) with a word-level tokenizer and a chat template."""
  return with_word_level_tokenizer(
      tiny_hf("qwen2")[0],
      tmp_path_factory.mktemp("eval_ckpt"),
      "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
      "{% if add_generation_prompt %}assistant: {% endif %}",
  )


# ----------------------------------------------------------------------------- pure parts


def test_plan_generation_sorts_batches_and_cuts_budgets_to_the_context():
  lengths = [50, 10, 240, 30, 20, 256, 200, 100]
  groups, skipped = ev.plan_generation(lengths, batch_size=2, max_new_tokens=100, context=256)
  assert skipped == [5]  # fills the context alone
  # Sorted by length; the batches (1,4) and (3,0) keep the budget and share a group; 256-200=56
  # and 256-240=16 are under one BUDGET_STEP, so they stay exact.
  assert [(g.indices, g.max_new_tokens) for g in groups] == [
      ((1, 4, 3, 0), 100),
      ((7, 6), 56),
      ((2,), 16),
  ]
  groups, _ = ev.plan_generation([10, 100], batch_size=1, max_new_tokens=4096, context=4096)
  assert [(g.indices, g.max_new_tokens) for g in groups] == [((0,), 4032), ((1,), 3968)]
  groups, _ = ev.plan_generation([10, 11, 12], batch_size=1, max_new_tokens=8, context=4096)
  assert [(g.indices, g.max_new_tokens) for g in groups] == [((0, 1, 2), 8)]  # one group


def test_benchmark_names_modes_and_per_benchmark_flags():
  assert [b.name for b in ev.resolve_benchmarks("math500, aime,lcb")] == [
      "aime24",
      "math500",
      "livecodebench",
  ]  # Table 1 order, aliases
  assert len(ev.resolve_benchmarks("all")) == 7
  with pytest.raises(ev.EvalError, match="unknown benchmark 'gsm8k'"):
    ev.resolve_benchmarks("math500,gsm8k")
  assert ev.parse_mode("greedy") == ev.EvalMode(1, 0.0, 1.0)
  assert ev.parse_mode("avg@16") == ev.EvalMode(16, 0.3, 0.95)
  assert ev.parse_mode("avg@4", temperature=1.0, top_p=1.0).name == "avg@4"
  for bad in ("avg@0", "avg@x", "best@4"):
    with pytest.raises(ValueError):
      ev.parse_mode(bad)
  parse = ev.positive_int
  assert ev.parse_per_benchmark("4096", parse, "m") == (4096, {})
  assert ev.parse_per_benchmark("1024,aime=2048,math500=8192", parse, "m") == (
      1024,
      {"aime24": 2048, "math500": 8192},
  )
  assert ev.parse_per_benchmark(None, parse, "m") == (None, {})
  assert ev.parse_per_benchmark(512, parse, "m") == (512, {})
  for bad, message in (
      ("1,2", "more than one default"),
      ("foo=3", "unknown benchmark"),
      ("amc=-1", "must be >= 1"),
  ):
    with pytest.raises(ev.EvalError, match=message):
      ev.parse_per_benchmark(bad, parse, "m")
  assert [(b.name, b.max_new_tokens) for b in ev.BENCHMARKS.values()] == [
      ("aime24", 4096),
      ("amc", 4096),
      ("math500", 8192),
      ("minerva", 4096),
      ("olympiadbench", 4096),
      ("leetcode", 8192),
      ("livecodebench", 8192),
  ]


def test_fixture_layouts_load_as_records(tmp_path):
  got = {}
  for b in ev.resolve_benchmarks("all"):
    path = ev.find_benchmark_file(FIXTURES, b)
    got[b.name] = (os.path.relpath(path, FIXTURES), ev.load_benchmark(path, b))
  assert got["aime24"][0] == os.path.join("aime24", "test.jsonl")  # DIR/<name>/test.jsonl
  assert got["math500"][0] == "math500.jsonl"  # DIR/<name>.jsonl
  truths = {n: [r.ground_truth for r in recs] for n, (_, recs) in got.items()}
  assert truths["math500"] == ["2", "\\frac{1}{2}", "(3,-1)"]
  assert truths["aime24"] == ["24", "6", "56"]  # integer answers
  assert truths["minerva"] == ["60", "1024"]  # last \boxed of solution
  assert truths["olympiadbench"] == ["$7$", "$\\frac{3}{2}$"]  # final_answer list
  assert [r.id for r in got["math500"][1]][0] == "test/prealgebra/1.json"
  for name in ("leetcode", "livecodebench"):
    for record in got[name][1]:
      assert record.ability == "code" and json.loads(record.ground_truth)["inputs"]
  assert json.loads(got["leetcode"][1][0].ground_truth)["fn_name"] == "addTwo"
  assert "class Solution" in got["leetcode"][1][0].chat()[0]["content"]  # starter code
  b = ev.BENCHMARKS["math500"]
  assert len(ev.load_benchmark(ev.find_benchmark_file(FIXTURES, b), b, limit=2)) == 2

  (tmp_path / "amc.jsonl").write_text('{"question": "q", "answer": 1}\n{"question": "q2"}\n')
  with pytest.raises(ev.EvalError, match=r"amc.jsonl:2: missing field 'answer'"):
    ev.load_benchmark(tmp_path / "amc.jsonl", ev.BENCHMARKS["amc"])
  with pytest.raises(ev.EvalError, match="tried minerva.jsonl, minerva.parquet"):
    ev.find_benchmark_file(tmp_path, ev.BENCHMARKS["minerva"])

  # The released run's prompt: Eurus system prompt + the ability's suffix, through the chat template.
  class ChatTokenizer:

    def apply_chat_template(self, chat, add_generation_prompt):
      return json.dumps(chat)

    def encode(self, text, add_special_tokens):
      return [1] * len(text)

  [prompt] = ev.encode_prompts(got["amc"][1][:1], ChatTokenizer(), ev.prompt_format())
  assert json.loads(prompt.text) == [
      {"role": "system", "content": EURUS_SYSTEM_PROMPT},
      {"role": "user", "content": "What is $100+42$?" + USER_SUFFIXES["math"]},
  ]


def test_hand_written_right_answers_score_one_through_the_harness_grader():
  for name in ("math500", "aime24", "amc", "minerva", "olympiadbench", "leetcode", "livecodebench"):
    b = ev.BENCHMARKS[name]
    records = ev.load_benchmark(ev.find_benchmark_file(FIXTURES, b), b)
    responses = [[right_answer(r), wrong_answer(r), "no answer at all"] for r in records]
    graded = ev.score_items(b.ability, responses, [r.ground_truth for r in records])
    np.testing.assert_array_equal(graded.scores, [[1, 0, 0]] * len(records), err_msg=name)
  assert ev.extract("math", "x \\boxed{\\frac{1}{2}} y") == "\\frac{1}{2}"
  assert ev.extract("code", "```python\na=1\n```\ntext\n```python\nb=2\n```") == "\nb=2\n"
  # A program that passes some tests but not all is a failed pass@1 (fraction kept as raw).
  records = ev.load_benchmark(
      ev.find_benchmark_file(FIXTURES, ev.BENCHMARKS["livecodebench"]),
      ev.BENCHMARKS["livecodebench"],
  )
  half = "```python\na, b = map(int, input().split())\nprint(3)\n```"
  graded = ev.score_items("code", [[half]], [records[0].ground_truth])
  assert graded.scores.tolist() == [[0.0]] and graded.raw.tolist() == [[0.5]]


def test_math_grader_mode_grades_and_is_named_in_the_results():
  # 2500 for 25: only the released grader accepts it (x100 with no % sign).
  responses, truths = [["\\boxed{2500}", "\\boxed{25}"]], ["25"]
  strict = ev.score_items("math", responses, truths)
  released = ev.score_items("math", responses, truths, math_grader="released")
  assert strict.scores.tolist() == [[0.0, 1.0]] and released.scores.tolist() == [[1.0, 1.0]]
  assert ev.extract("math", "\\boxed{f(2)=5}", "released") == "5"
  result = dict(
      column="MATH-500",
      score=0.5,
      mode="greedy",
      num_items=2,
      max_new_tokens=8,
      max_new_tokens_used=[8, 8],
      num_prompt_too_long=0,
      math_grader="released",
  )
  text = ev.results_markdown("run", {"math500": result})
  assert "Math answers graded by the released grader" in text
  with pytest.raises(ev.EvalError, match="math_grader"):
    ev.run_evaluation("ckpt", "math500", FIXTURES, "out", math_grader="lenient")


def test_table_has_the_paper_columns_and_dashes_for_benchmarks_not_run():
  table = ev.render_table({"Eurus-2-7B-PRIME": {"math500": 0.792, "aime24": 0.267}, "nothing": {}})
  lines = table.splitlines()
  assert [c.strip() for c in lines[0].strip("|").split("|")] == COLUMNS
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  assert cells == ["Eurus-2-7B-PRIME", "26.7", "–", "79.2", "–", "–", "–", "–", "53.0"]
  assert [c.strip() for c in lines[3].strip("|").split("|")] == ["nothing"] + ["–"] * 8


# ----------------------------------------------------------------------------- end to end


def test_tiny_model_end_to_end_greedy_and_avg_at_k(checkpoint, tmp_path):
  out = tmp_path / "out"
  summary = ev.run_evaluation(
      checkpoint,
      "math500,aime24,livecodebench",
      FIXTURES,
      out,
      mode="greedy,aime24=avg@3",
      max_new_tokens="6,math500=4096",
      limit=2,
      batch_size=2,
      dtype="float32",
      label="tiny",
      log=lambda line: None,
  )
  assert set(summary["benchmarks"]) == {"math500", "aime24", "livecodebench"}
  for name, k in (("math500", 1), ("aime24", 3), ("livecodebench", 1)):
    rows = read_jsonl(out / f"{name}.jsonl")
    assert [r["index"] for r in rows] == [0, 1]
    for row in rows:
      assert len(row["responses"]) == len(row["scores"]) == len(row["extracted"]) == k
      assert all(isinstance(t, str) for t in row["responses"])
      assert all(0.0 <= s <= 1.0 for s in row["scores"])
      assert row["score"] == pytest.approx(np.mean(row["scores"]))
      assert row["prompt"].startswith("system: " + EURUS_SYSTEM_PROMPT)
      assert row["prompt"].rstrip().endswith("assistant:")
      assert not row["prompt_too_long"]
    result = summary["benchmarks"][name]
    assert result["k"] == k and result["num_items"] == 2
    assert result["score"] == pytest.approx(np.mean([r["score"] for r in rows]))
  assert "test_pass_fraction" in read_jsonl(out / "livecodebench.jsonl")[0]
  # avg@3 samples at temperature 0.3 / top-p 0.95; the 4096 budget is cut to the 256 context.
  aime = summary["benchmarks"]["aime24"]
  assert (aime["mode"], aime["temperature"], aime["top_p"]) == ("avg@3", 0.3, 0.95)
  math500 = summary["benchmarks"]["math500"]
  lo, hi = math500["max_new_tokens_used"]
  assert math500["max_new_tokens"] == 4096 and 0 < lo <= hi < 256 and hi % 64 == 0
  assert [r["max_new_tokens"] for r in read_jsonl(out / "math500.jsonl")] == [hi, hi]
  assert summary["benchmarks"]["livecodebench"]["max_new_tokens_used"] == [6, 6]

  assert json.loads((out / "results.json").read_text()) == summary
  assert summary["table_columns"] == COLUMNS
  lines = (out / "results.md").read_text().splitlines()
  assert [c.strip() for c in lines[0].strip("|").split("|")] == COLUMNS
  cells = dict(zip(COLUMNS, (c.strip() for c in lines[2].strip("|").split("|"))))
  assert cells["Model"] == "tiny"
  assert [cells[c] for c in ("AMC", "Minerva", "OlympiadB", "LeetCode")] == ["–"] * 4
  scores = [summary["benchmarks"][n]["score"] for n in ("aime24", "math500", "livecodebench")]
  assert cells["avg"] == f"{100 * np.mean(scores):.1f}" and summary["avg"] == pytest.approx(
      np.mean(scores)
  )


def test_right_answers_from_the_generator_score_one_and_avg_is_the_sample_mean(
    checkpoint, tmp_path, monkeypatch
):
  """The generator replaced by one that answers right on samples 0 and 2 of 4: every path after
  generation (extraction, grading, per-item mean, table) is the harness's own."""
  calls = []

  def fake_generate(model, prompts, *, max_new_tokens, mode, batch_size, key):
    calls.append((len(prompts), max_new_tokens, mode))
    responses = [
        [right_answer(p.record) if j % 2 == 0 else wrong_answer(p.record) for j in range(mode.k)]
        for p in prompts
    ]
    return responses, [max_new_tokens] * len(prompts)

  # Patched where `evaluate_benchmark` looks it up (the harness module of prime_jax.evaluation).
  monkeypatch.setattr(ev.harness, "generate_responses", fake_generate)
  from prime_jax.models import read_hf_config
  from prime_jax.tokenizer import load_tokenizer

  model = ev.LoadedModel(checkpoint, read_hf_config(checkpoint), None, load_tokenizer(checkpoint))
  summary = ev.run_evaluation(
      checkpoint, "all", FIXTURES, tmp_path, mode="avg@4", model=model, log=lambda line: None
  )
  assert [c[0] for c in calls] == [3, 2, 3, 2, 2, 2, 2]  # Table 1 order, all fixture rows
  assert [c[1] for c in calls] == [4096, 4096, 8192, 4096, 4096, 8192, 8192]
  for name in ev.TABLE_ORDER:
    rows = read_jsonl(tmp_path / f"{name}.jsonl")
    for row in rows:
      assert row["scores"] == [1.0, 0.0, 1.0, 0.0], (name, row["id"])
      assert row["score"] == 0.5
      assert len(row["responses"]) == 4 and row["extracted"][0] is not None
    assert summary["benchmarks"][name]["score"] == 0.5
  assert read_jsonl(tmp_path / "aime24.jsonl")[0]["extracted"][0] == "24"
  assert "return a + b" in read_jsonl(tmp_path / "leetcode.jsonl")[0]["extracted"][0]
  assert summary["avg"] == 0.5
  assert (
      (tmp_path / "results.md")
      .read_text()
      .splitlines()[2]
      .endswith("| 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 |")
  )


def test_cli_on_a_trainer_workdir(checkpoint, tmp_path):
  workdir = tmp_path / "run1"
  shutil.copytree(checkpoint, workdir / "export" / "policy")
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "prime_jax.eval",
          "--checkpoint",
          str(workdir),
          "--benchmarks",
          "minerva,leetcode",
          "--data_dir",
          FIXTURES,
          "--limit",
          "1",
          "--max_new_tokens",
          "4",
          "--batch_size",
          "1",
          "--dtype",
          "float32",
          "--out",
          str(tmp_path / "out"),
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  assert "| run1 | – | – | – |" in proc.stdout  # the workdir names the row
  for name in ("minerva", "leetcode"):
    [row] = read_jsonl(tmp_path / "out" / f"{name}.jsonl")
    assert row["max_new_tokens"] == 4 and 0.0 <= row["score"] <= 1.0
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  assert results["model_dir"] == str(workdir / "export" / "policy")
  assert set(results["benchmarks"]) == {"minerva", "leetcode"}

  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "prime_jax.eval",
          "--checkpoint",
          str(workdir),
          "--benchmarks",
          "math500,gsm8k",
          "--data_dir",
          FIXTURES,
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 1 and "error: unknown benchmark 'gsm8k'" in proc.stderr
