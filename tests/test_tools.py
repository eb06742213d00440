"""The generate and score command-line tools, end to end on tiny checkpoints."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_fixtures import with_word_level_tokenizer
from prime_jax.tools._cli import InputError
from prime_jax.tools.generate import generate_file
from prime_jax.tools.score import score_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS, PAD = 2, 0  # the tiny checkpoints' config.json eos_token_id / pad_token_id
PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23]]


def write_jsonl(path, rows):
  with open(path, "w") as f:
    f.writelines(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows)
  return str(path)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def run_tool(tool, *args):
  return subprocess.run(
      [sys.executable, "-m", f"prime_jax.tools.{tool}", *map(str, args)],
      cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO),
      capture_output=True,
      text=True,
      timeout=600,
  )


@pytest.fixture(scope="module")
def checkpoint_with_tokenizer(tiny_hf, tmp_path_factory):
  """The tiny qwen2 checkpoint plus a word-level tokenizer: "w{i}" is id i, specials 0-3."""
  return with_word_level_tokenizer(
      tiny_hf("qwen2")[0],
      tmp_path_factory.mktemp("with_tokenizer"),
      "{% for m in messages %}{{ m['content'] }} {% endfor %}",
  )


@pytest.mark.slow
def test_generate_and_score_cli_greedy_match_transformers(tiny_hf, tmp_path):
  directory, torch_model = tiny_hf("qwen2")
  prompts = write_jsonl(
      tmp_path / "prompts.jsonl", [{"prompt_ids": p, "id": i} for i, p in enumerate(PROMPTS)]
  )
  proc = run_tool(
      "generate",
      "--checkpoint",
      directory,
      "--prompts",
      prompts,
      "--max_new_tokens",
      24,
      "--temperature",
      0,
      "--batch_size",
      2,
      "--out",
      tmp_path / "out.jsonl",
  )
  assert proc.returncode == 0, proc.stderr
  rows = read_jsonl(tmp_path / "out.jsonl")
  assert [(r["id"], r["prompt_ids"], r["sample_index"]) for r in rows] == [
      (i, p, 0) for i, p in enumerate(PROMPTS)
  ]
  for row, prompt in zip(rows, PROMPTS):
    with torch.no_grad():
      expected = torch_model.generate(
          torch.tensor([prompt]),
          max_new_tokens=24,
          do_sample=False,
          eos_token_id=EOS,
          pad_token_id=PAD,
      )[0, len(prompt) :].tolist()
    assert row["response_ids"] == expected
    assert len(row["response_logprobs"]) == len(expected)
    assert "response_text" not in row  # no tokenizer in this checkpoint

  proc = run_tool(
      "score",
      "--checkpoint",
      directory,
      "--inputs",
      tmp_path / "out.jsonl",
      "--out",
      tmp_path / "scored.jsonl",
  )
  assert proc.returncode == 0, proc.stderr
  scored = read_jsonl(tmp_path / "scored.jsonl")
  assert [{k: v for k, v in r.items() if k != "response_logprobs"} for r in scored] == [
      {k: v for k, v in r.items() if k != "response_logprobs"} for r in rows
  ]
  for s, r in zip(scored, rows):
    np.testing.assert_allclose(s["response_logprobs"], r["response_logprobs"], atol=1e-5)


def test_sampled_rows_group_samples_are_reproducible_and_score_consistently(tiny_hf, tmp_path):
  directory, _ = tiny_hf("qwen2")
  prompts = write_jsonl(
      tmp_path / "p.jsonl", [{"prompt_ids": p, "tag": i} for i, p in enumerate(PROMPTS)]
  )
  settings = dict(max_new_tokens=16, n_samples=2, seed=5, batch_size=2)
  rows = generate_file(directory, prompts, str(tmp_path / "a.jsonl"), **settings)
  assert rows == read_jsonl(tmp_path / "a.jsonl")
  assert [(r["tag"], r["sample_index"]) for r in rows] == [(i, s) for i in range(3) for s in (0, 1)]
  for r in rows:
    ids = r["response_ids"]
    assert 1 <= len(ids) <= 16 and len(r["response_logprobs"]) == len(ids)
    assert EOS not in ids[:-1] and (ids[-1] == EOS or len(ids) == 16)
  assert rows == generate_file(directory, prompts, str(tmp_path / "b.jsonl"), **settings)
  other_seed = generate_file(
      directory, prompts, str(tmp_path / "c.jsonl"), **{**settings, "seed": 6}
  )
  assert [r["response_ids"] for r in other_seed] != [r["response_ids"] for r in rows]

  scored = score_file(directory, str(tmp_path / "a.jsonl"), str(tmp_path / "s.jsonl"), batch_size=4)
  for s, r in zip(scored, rows):
    np.testing.assert_allclose(s["response_logprobs"], r["response_logprobs"], atol=1e-5)


def test_text_and_chat_prompts_use_the_checkpoint_tokenizer(checkpoint_with_tokenizer, tmp_path):
  prompts = write_jsonl(
      tmp_path / "p.jsonl",
      [
          {"prompt": "w5 w6 w7"},
          {"prompt": [{"role": "user", "content": "w9 w10"}]},
          {"prompt_ids": [5, 6, 7]},
      ],
  )
  rows = generate_file(
      checkpoint_with_tokenizer,
      prompts,
      str(tmp_path / "o.jsonl"),
      max_new_tokens=12,
      temperature=0.0,
  )
  assert [r["prompt_ids"] for r in rows] == [[5, 6, 7], [9, 10], [5, 6, 7]]
  assert rows[0]["response_ids"] == rows[2]["response_ids"]
  for r in rows:
    words = [f"w{i}" for i in r["response_ids"] if i >= 4]  # ids 0-3 are special, skipped
    assert r["response_text"] == " ".join(words)


def test_input_errors_name_the_problem(tiny_hf, checkpoint_with_tokenizer, tmp_path):
  directory, _ = tiny_hf("qwen2")
  cases = [
      ('{"prompt_ids": [1, 2]}\n[1, 2]\n', "p.jsonl:2: expected a JSON object"),
      (
          '{"prompt_ids": [1, 2]}\n\n{"prompt_ids": "1 2"}\n',
          "p.jsonl:3: `prompt_ids` must be a list",
      ),
      ('{"prompt_ids": [1, 500]}\n', "p.jsonl:1: `prompt_ids` has ids outside the vocabulary"),
      ('{"text": "hi"}\n', "p.jsonl:1: the row has neither `prompt_ids` nor `prompt`"),
      ('{"prompt": "w5 w6"}\n', "p.jsonl:1: a text `prompt` needs a tokenizer"),
      ('{"prompt_ids": []}\n', "p.jsonl:1: the prompt is empty"),
  ]
  for text, message in cases:
    with pytest.raises(InputError, match=message):
      generate_file(
          directory,
          write_jsonl(tmp_path / "p.jsonl", [text]),
          str(tmp_path / "o.jsonl"),
          max_new_tokens=4,
      )
  with pytest.raises(InputError, match="top_p must be in"):
    generate_file(
        directory,
        write_jsonl(tmp_path / "p.jsonl", ['{"prompt_ids": [1]}\n']),
        str(tmp_path / "o.jsonl"),
        max_new_tokens=4,
        top_p=0.0,
    )
  with pytest.raises(InputError, match="input file .* does not exist"):
    generate_file(
        directory, str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl"), max_new_tokens=4
    )
  scoring_cases = [
      (
          '{"prompt_ids": [1], "response_ids": [2]}\n{"prompt_ids": [1]}\n',
          "s.jsonl:2: `response_ids` must be a list",
      ),
      ('{"prompt_ids": [], "response_ids": [2]}\n', "s.jsonl:1: `prompt_ids` is empty"),
      (
          json.dumps({"prompt_ids": [1] * 200, "response_ids": [2] * 60}) + "\n",
          r"s.jsonl:1: prompt \(200 tokens\) \+ response \(60 tokens\) exceeds the model's context "
          "of 256 tokens",
      ),
  ]
  for text, message in scoring_cases:
    with pytest.raises(InputError, match=message):
      score_file(directory, write_jsonl(tmp_path / "s.jsonl", [text]), str(tmp_path / "o.jsonl"))


@pytest.mark.slow
def test_cli_errors_exit_nonzero_with_one_line_and_no_traceback(tiny_hf, tmp_path):
  directory, _ = tiny_hf("qwen2")
  prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_ids": [1, 2]}, {"prompt_ids": [3] * 250}])
  out = tmp_path / "o.jsonl"
  cases = [
      (
          (
              "generate",
              "--checkpoint",
              tmp_path / "nope",
              "--prompts",
              prompts,
              "--max_new_tokens",
              8,
              "--out",
              out,
          ),
          "checkpoint directory .*nope' does not exist",
      ),
      (
          (
              "generate",
              "--checkpoint",
              directory,
              "--prompts",
              prompts,
              "--max_new_tokens",
              8,
              "--out",
              out,
          ),
          "p.jsonl:2: the prompt has 250 tokens; with max_new_tokens=8 that exceeds "
          "the model's context of 256 tokens",
      ),
      (
          (
              "score",
              "--checkpoint",
              directory,
              "--inputs",
              write_jsonl(
                  tmp_path / "s.jsonl", ['{"prompt_ids": [1], "response_ids": [2]}\n', "{oops\n"]
              ),
              "--out",
              out,
          ),
          "s.jsonl:2: not valid JSON",
      ),
  ]
  for args, message in cases:
    proc = run_tool(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
  assert not out.exists()
