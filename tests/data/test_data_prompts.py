"""Prompt rendering: system prompt, user suffixes, chat template / plain text, length dropping."""

import json
from pathlib import Path

import ml_collections
import pytest
import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from prime_jax.data import (
    EURUS_SYSTEM_PROMPT,
    USER_SUFFIXES,
    PromptEncoder,
    PromptFormat,
    PromptIterator,
    Record,
    build_chat,
)
from prime_jax.tokenizer import load_tokenizer, train_sentencepiece

QWEN_MATH_TEMPLATE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "tokenizer" / "chat_templates.json").read_text()
)["qwen2.5-math"]
EURUS = PromptFormat(system_prompt=EURUS_SYSTEM_PROMPT, user_suffix=True)
MATH_SUFFIX = "\n\nPresent the answer in LaTex format: \\boxed{Your answer}"
CODE_SUFFIX = (
    "\n\nWrite Python code to solve the problem. Present the code in \n```python\n"
    "Your code\n```\nat the end."
)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  """A tiny byte-level BPE tokenizer laid out like Qwen2.5-Math, with its real chat template."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(
      ["Find x if 2x = 4. Present the answer in LaTex format."] * 4,
      trainers.BpeTrainer(
          vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
      ),
  )
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  directory = tmp_path_factory.mktemp("qwen")
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(
      json.dumps(
          {
              "chat_template": QWEN_MATH_TEMPLATE,
              "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>",
              "bos_token": None,
          }
      )
  )
  return load_tokenizer(directory)


def _record(messages, ability="math"):
  truth = json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]}) if ability == "code" else "2"
  return Record.from_chat(
      id="r", data_source="s", ability=ability, messages=messages, ground_truth=truth
  ).validate()


def test_constants_are_the_released_text():
  # The system message as printed in the PRIME-RL/Eurus-2-RL-Data dataset card's math example.
  card = (
      "\nWhen tackling complex reasoning tasks, you have access to the following actions. Use "
      "them as needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]"
      "\n\n[VERIFY]\n\n[SIMPLIFY]\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should "
      "strictly follow the format below:\n\n[ACTION NAME]\n\n# Your action step 1\n\n# "
      "Your action step 2\n\n# Your action step 3\n\n...\n\nNext action: [NEXT ACTION "
      "NAME]\n\n"
  )
  assert EURUS_SYSTEM_PROMPT == card
  assert USER_SUFFIXES == {"math": MATH_SUFFIX, "code": CODE_SUFFIX}


def test_system_prompt_and_suffix_are_added_when_missing():
  chat = build_chat([{"role": "user", "content": "Find x."}], "math", EURUS)
  assert chat == [
      {"role": "system", "content": EURUS_SYSTEM_PROMPT},
      {"role": "user", "content": "Find x." + MATH_SUFFIX},
  ]
  code = build_chat([{"role": "user", "content": "Sum."}], "code", EURUS)
  assert code[1]["content"] == "Sum." + CODE_SUFFIX


def test_nothing_is_duplicated():
  messages = [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Find x." + MATH_SUFFIX},
  ]
  assert build_chat(messages, "math", EURUS) == messages
  # The spec writes the code suffix on one line; the data has newlines: both count as present.
  one_line = (
      "Sum. Write Python code to solve the problem. Present the code in ```python Your "
      "code ``` at the end."
  )
  chat = build_chat([{"role": "user", "content": one_line}], "code", EURUS)
  assert chat[1]["content"] == one_line


def test_suffix_goes_on_the_last_user_message_and_the_input_is_not_changed():
  messages = [
      {"role": "user", "content": "a"},
      {"role": "assistant", "content": "b"},
      {"role": "user", "content": "c"},
  ]
  chat = build_chat(messages, "math", EURUS)
  assert [m["content"] for m in chat[1:]] == ["a", "b", "c" + MATH_SUFFIX]
  assert messages[2]["content"] == "c"


def test_options_off_and_abilities_without_a_suffix():
  messages = [{"role": "user", "content": "a=07;+05"}]
  assert build_chat(messages, "math", PromptFormat()) == messages
  assert build_chat(messages, "arithmetic", EURUS)[1:] == messages


def test_chat_template_rendering_matches_qwen_format(qwen):
  encoder = PromptEncoder(qwen, EURUS, max_prompt_len=4096)
  prompt = encoder.encode(_record([{"role": "user", "content": "Find x if 2x = 4."}]))
  assert prompt.text == (
      f"<|im_start|>system\n{EURUS_SYSTEM_PROMPT}<|im_end|>\n"
      f"<|im_start|>user\nFind x if 2x = 4.{MATH_SUFFIX}<|im_end|>\n<|im_start|>assistant\n"
  )
  assert list(prompt.token_ids) == qwen.encode(prompt.text, add_special_tokens=False)
  assert prompt.token_ids[0] == qwen.backend.token_to_id("<|im_start|>")
  # Without a system prompt the template's own default system message appears, not ours.
  bare = PromptEncoder(qwen, PromptFormat(), 4096).render(
      _record([{"role": "user", "content": "Hi"}])
  )
  assert EURUS_SYSTEM_PROMPT not in bare and bare.endswith(
      "<|im_start|>user\nHi<|im_end|>\n" "<|im_start|>assistant\n"
  )


def test_plain_concatenation_adds_bos(tmp_path):
  sp = load_tokenizer(
      train_sentencepiece(
          ["a=07;+05;*02", "sys line", "hello"] * 20,
          tmp_path / "sp",
          vocab_size=40,
          hard_vocab_limit=False,
      )
  )
  fmt = PromptFormat(system_prompt="sys line", apply_chat_template=False)
  prompt = PromptEncoder(sp, fmt, 64).encode(
      _record([{"role": "user", "content": "a=07;+05"}], "arithmetic")
  )
  assert prompt.text == "sys line\n\na=07;+05"
  assert list(prompt.token_ids) == [sp.bos_id] + sp.encode(prompt.text, add_special_tokens=False)


def _sized_records(sizes):
  return [
      Record.from_chat(
          id=f"r{i}",
          data_source="s",
          ability="math",
          messages=[{"role": "user", "content": "x " * size}],
          ground_truth="1",
      )
      for i, size in enumerate(sizes)
  ]


def test_long_prompts_are_dropped_and_counted(qwen):
  plain = PromptFormat(apply_chat_template=False)
  records = _sized_records([3, 40, 5, 50, 2])
  lengths = [len(PromptEncoder(qwen, plain, 10**6).encode(r).token_ids) for r in records]
  limit = max(lengths[0], lengths[2], lengths[4])
  assert limit < min(lengths[1], lengths[3])
  encoder = PromptEncoder(qwen, plain, limit)
  kept, dropped = encoder.encode_all(records)
  assert ([p.record.id for p in kept], dropped) == (["r0", "r2", "r4"], 2)

  iterator = PromptIterator(records, seed=0, shuffle=False)
  kept, dropped = encoder.draw(iterator, 4)
  assert ([p.record.id for p in kept], dropped) == (["r0", "r2", "r4", "r0"], 2)
  assert iterator.state()["position"] == 1 and iterator.state()["epoch"] == 1


def test_draw_fails_clearly_when_nothing_fits(qwen):
  encoder = PromptEncoder(qwen, PromptFormat(apply_chat_template=False), 1)
  with pytest.raises(ValueError, match="found only 0 of 2 prompts within max_prompt_len=1"):
    encoder.draw(PromptIterator(_sized_records([5, 6]), seed=0), 2)


def test_format_from_config():
  task = ml_collections.ConfigDict(
      dict(system_prompt="eurus", user_suffix=True, apply_chat_template=True)
  )
  assert PromptFormat.from_config(task) == EURUS
  task.system_prompt = "none"
  assert PromptFormat.from_config(task).system_prompt is None
  task.system_prompt = "qwen"
  with pytest.raises(ValueError, match="system_prompt='qwen'; expected one of"):
    PromptFormat.from_config(task)
  with pytest.raises(KeyError, match="missing \\['user_suffix'\\]"):
    PromptFormat.from_config(
        ml_collections.ConfigDict(dict(system_prompt="none", apply_chat_template=False))
    )
