"""Tokenizers: the Hugging Face backend checked against transformers, the sentencepiece backend
against sentencepiece itself, and the errors for bad input.

The Hugging Face tokenizers are small byte-level BPEs trained here with Qwen2.5's and Llama-3's
pre-tokenisation and special tokens, saved with the models' real chat templates
(fixtures/tokenizer/chat_templates.json) and config files laid out as on the Hub.
"""

import json
import random
import shutil
from pathlib import Path

import pytest
import tokenizers
import transformers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

from prime_jax.tokenizer import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplateError,
    HFTokenizer,
    SentencePieceTokenizer,
    TokenizerError,
    load_tokenizer,
    train_sentencepiece,
)

TEMPLATES = json.loads(
    (Path(__file__).parent / "fixtures" / "tokenizer" / "chat_templates.json").read_text(
        encoding="utf-8"
    )
)

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
LLAMA_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
_LETTERS_AND_PUNCT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"""
_REST = r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN_PRETOKENIZE = _LETTERS_AND_PUNCT + r"\p{N}" + _REST  # single digits
LLAMA_PRETOKENIZE = _LETTERS_AND_PUNCT + r"\p{N}{1,3}" + _REST  # up to three digits

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is $\\boxed{72}$.",
    "def add(a, b):\n    return a + b\n\nprint(add(12, 7))  # 19\n",
    "Let x = 3.14159; then 2x = 6.28318, and x^2 ≈ 9.8696.",
    "Über die Brücke gehen wir zusammen, naïve café owners! ¿Qué tal? 你好，世界。",
    "They're sure it's fine; we've checked and I'm done, you'll see, he'd agree.",
    "Tabs\tand  double  spaces,\r\nwindows newlines and emoji 🙂🚀 too.",
]

TEXTS = [
    "What is 12 + 7?",
    "  leading and trailing spaces  ",
    "Über naïve café 🙂 — 你好 ¿Qué?",
    "line one\nline two\r\n\tindented 1234567 digits",
    "special tokens inline: <|im_start|>user\nhi<|im_end|><|endoftext|>",
    "llama markers <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhey<|eot_id|>",
    "spacing , before . punctuation ? and don 't",
    "",
]

SYSTEM = {"role": "system", "content": "You are a careful mathematician."}
USER = {"role": "user", "content": "What is 12 + 7?"}
ASSISTANT = {"role": "assistant", "content": "12 + 7 = 19.\nSo the answer is $\\boxed{19}$.  "}
FOLLOW_UP = {"role": "user", "content": "  And 19 × 3? Ünïcödé 🙂\n\n"}
CONVERSATIONS = {
    "user": [USER],
    "system_user": [SYSTEM, USER],
    "multi_turn": [SYSTEM, USER, ASSISTANT, FOLLOW_UP],
    "multi_turn_no_system": [USER, ASSISTANT, FOLLOW_UP],
    "none_valued_key": [USER, {**ASSISTANT, "tool_calls": None}],
}

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two numbers — exactly (no “rounding”).",
        "parameters": {
            "type": "object",
            "required": ["a", "b"],
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        },
    },
}
TOOL_CONVERSATION = [
    SYSTEM,
    USER,
    {
        "role": "assistant",
        "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": {"a": 12, "b": 7}}}
        ],
    },
    {"role": "tool", "content": "19"},
]


# --------------------------------------------------------------------------- fixtures


def _byte_level_bpe(pretokenize_regex: str, specials, *, nfc: bool) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE())
  if nfc:
    tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [
          pre_tokenizers.Split(Regex(pretokenize_regex), behavior="isolated", invert=False),
          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
  )
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=600, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
  )
  tok.train_from_iterator(CORPUS * 4, trainer)
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  return tok


def _added_tokens_decoder(tok: tokenizers.Tokenizer, specials) -> dict:
  return {
      str(tok.token_to_id(s)): {
          "content": s,
          "lstrip": False,
          "normalized": False,
          "rstrip": False,
          "single_word": False,
          "special": True,
      }
      for s in specials
  }


def _write_json(path: Path, value) -> None:
  path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")


def _qwen_dir(path: Path, chat_template) -> Path:
  """Laid out like Qwen/Qwen2.5-7B-Instruct."""
  tok = _byte_level_bpe(QWEN_PRETOKENIZE, QWEN_SPECIALS, nfc=True)
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  path.mkdir()
  tok.save(str(path / "tokenizer.json"))
  eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
  _write_json(
      path / "tokenizer_config.json",
      {
          "add_prefix_space": False,
          "added_tokens_decoder": _added_tokens_decoder(tok, QWEN_SPECIALS),
          "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
          "bos_token": None,
          "chat_template": chat_template,
          "clean_up_tokenization_spaces": False,
          "eos_token": "<|im_end|>",
          "errors": "replace",
          "model_max_length": 131072,
          "pad_token": "<|endoftext|>",
          "split_special_tokens": False,
          "tokenizer_class": "Qwen2Tokenizer",
          "unk_token": None,
      },
  )
  _write_json(
      path / "generation_config.json",
      {"bos_token_id": eot, "eos_token_id": [im_end, eot], "pad_token_id": eot},
  )
  _write_json(
      path / "config.json", {"model_type": "qwen2", "bos_token_id": eot, "eos_token_id": im_end}
  )
  return path


def _llama_dir(path: Path, *, template_file: bool, legacy_special_tokens: bool) -> Path:
  """Laid out like meta-llama/Llama-3.1-8B-Instruct. `template_file` writes the Llama-3 template
  to chat_template.jinja (newer transformers) instead of Llama-3.1's into tokenizer_config.json;
  `legacy_special_tokens` names BOS/EOS only in special_tokens_map.json."""
  tok = _byte_level_bpe(LLAMA_PRETOKENIZE, LLAMA_SPECIALS, nfc=False)
  bos = tok.token_to_id("<|begin_of_text|>")
  tok.post_processor = processors.Sequence(
      [
          processors.ByteLevel(trim_offsets=False),
          processors.TemplateProcessing(
              single="<|begin_of_text|> $A:0",
              pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
              special_tokens=[("<|begin_of_text|>", bos)],
          ),
      ]
  )
  path.mkdir()
  tok.save(str(path / "tokenizer.json"))
  specials = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
  config = {
      "clean_up_tokenization_spaces": True,
      "model_max_length": 131072,
      "model_input_names": ["input_ids", "attention_mask"],
      "tokenizer_class": "PreTrainedTokenizerFast",
  }
  if template_file:
    (path / "chat_template.jinja").write_text(TEMPLATES["llama-3"], encoding="utf-8")
  else:
    config["chat_template"] = TEMPLATES["llama-3.1"]
  if legacy_special_tokens:
    _write_json(path / "special_tokens_map.json", specials)
  else:
    config.update(specials, added_tokens_decoder=_added_tokens_decoder(tok, LLAMA_SPECIALS))
  _write_json(path / "tokenizer_config.json", config)
  eos = [tok.token_to_id(s) for s in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
  _write_json(path / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos})
  _write_json(
      path / "config.json", {"model_type": "llama", "bos_token_id": bos, "eos_token_id": eos}
  )
  return path


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf_tokenizers")
  return {
      "qwen2.5": _qwen_dir(root / "qwen2.5", TEMPLATES["qwen2.5"]),
      # The list-of-named-templates form; "tool_use" is picked when tools are given.
      "qwen2.5-math+tool_use": _qwen_dir(
          root / "qwen2.5-math",
          [
              {"name": "default", "template": TEMPLATES["qwen2.5-math"]},
              {"name": "tool_use", "template": TEMPLATES["qwen2.5"]},
          ],
      ),
      "llama-3.1": _llama_dir(root / "llama-3.1", template_file=False, legacy_special_tokens=False),
      "llama-3-jinja-file": _llama_dir(
          root / "llama-3", template_file=True, legacy_special_tokens=True
      ),
  }


@pytest.fixture(scope="module")
def loaded(hf_dirs):
  """name -> (ours, transformers')."""
  return {
      name: (load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(d))
      for name, d in hf_dirs.items()
  }


# --------------------------------------------------------------------------- Hugging Face


def test_fixture_templates_are_the_published_ones():
  # Spot checks that the stored text is the models' template, not a paraphrase.
  assert "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." in (
      TEMPLATES["qwen2.5"]
  )
  assert "within \\\\boxed{}." in TEMPLATES["qwen2.5-math"]
  assert TEMPLATES["qwen2.5-math"].replace(
      "Please reason step by step, and put your final answer within \\\\boxed{}.",
      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
  ) == (TEMPLATES["qwen2.5"])
  assert '{%- set date_string = "26 Jul 2024" %}' in TEMPLATES["llama-3.1"]
  assert TEMPLATES["llama-3"].startswith("{% set loop_messages = messages %}")


@pytest.mark.parametrize("name", ["qwen2.5", "llama-3.1", "llama-3-jinja-file"])
def test_encode_decode_match_transformers(loaded, name):
  ours, theirs = loaded[name]
  assert isinstance(ours, HFTokenizer)
  assert ours.vocab_size == len(theirs)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == theirs.encode(text), text
    assert ours.encode(text, add_special_tokens=False) == theirs.encode(
        text, add_special_tokens=False
    )
    for skip in (True, False):
      assert ours.decode(ids, skip) == theirs.decode(ids, skip_special_tokens=skip), text
  assert ours.encode_batch(TEXTS) == [theirs.encode(t) for t in TEXTS]
  batch = [theirs.encode(t) for t in TEXTS]
  assert ours.decode_batch(batch, False) == [theirs.decode(ids) for ids in batch]


def test_qwen_round_trip_and_special_ids(loaded):
  ours, theirs = loaded["qwen2.5"]
  for text in TEXTS:
    assert ours.decode(ours.encode(text), skip_special_tokens=False) == text
  im_end, eot = ours.encode("<|im_end|><|endoftext|>")
  assert ours.eos_ids == (im_end, eot)  # tokenizer EOS first, then generation_config's others
  assert ours.pad_id == eot == theirs.pad_token_id
  assert ours.bos_id is None and theirs.bos_token_id is None
  response = ours.encode("19") + [im_end, eot]
  assert ours.decode(response) == theirs.decode(response, skip_special_tokens=True) == "19"


@pytest.mark.parametrize("name", ["llama-3.1", "llama-3-jinja-file"])
def test_llama_special_ids(loaded, name):
  ours, theirs = loaded[name]
  ids = {s: ours.encode(s, add_special_tokens=False)[0] for s in LLAMA_SPECIALS}
  assert ours.bos_id == theirs.bos_token_id == ids["<|begin_of_text|>"]
  assert ours.eos_ids == (ids["<|eot_id|>"], ids["<|end_of_text|>"], ids["<|eom_id|>"])
  assert ours.eos_ids[0] == theirs.eos_token_id
  assert ours.pad_id == ids["<|eot_id|>"]  # no pad token: padding reuses the first EOS
  assert ours.encode("hi")[0] == ours.bos_id


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize(
    "name", ["qwen2.5", "qwen2.5-math+tool_use", "llama-3.1", "llama-3-jinja-file"]
)
def test_chat_template_matches_transformers(loaded, name, conversation, generation_prompt):
  ours, theirs = loaded[name]
  messages = CONVERSATIONS[conversation]
  text = ours.apply_chat_template(messages, add_generation_prompt=generation_prompt)
  assert text == theirs.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=generation_prompt
  )
  assert ours.encode_chat(messages, add_generation_prompt=generation_prompt) == (
      theirs.apply_chat_template(
          messages, tokenize=True, return_dict=False, add_generation_prompt=generation_prompt
      )
  )


def test_qwen_chat_template_renders_the_known_prompt(loaded):
  ours, _ = loaded["qwen2.5"]
  assert ours.apply_chat_template([USER]) == (
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
      "<|im_end|>\n<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
  )
  math, _ = loaded["qwen2.5-math+tool_use"]
  assert math.apply_chat_template([USER], add_generation_prompt=False) == (
      "<|im_start|>system\nPlease reason step by step, and put your final answer within "
      "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n"
  )


@pytest.mark.parametrize("name", ["qwen2.5", "qwen2.5-math+tool_use", "llama-3.1"])
def test_chat_template_with_tools_matches_transformers(loaded, name):
  ours, theirs = loaded[name]
  messages = TOOL_CONVERSATION if name != "llama-3.1" else TOOL_CONVERSATION[:2]
  text = ours.apply_chat_template(messages, tools=[ADD_TOOL])
  assert text == theirs.apply_chat_template(
      messages, tools=[ADD_TOOL], tokenize=False, add_generation_prompt=True
  )
  assert "“rounding”" in text  # tojson keeps non-ASCII as transformers' filter does


def test_template_variables_and_helpers_match_transformers(loaded):
  ours, theirs = loaded["llama-3.1"]
  assert ours.apply_chat_template([SYSTEM, USER], date_string="01 Jan 2025") == (
      theirs.apply_chat_template(
          [SYSTEM, USER], date_string="01 Jan 2025", tokenize=False, add_generation_prompt=True
      )
  )
  # Indented block tags on their own lines: what trim_blocks and lstrip_blocks remove.
  template = (
      "{% generation %}{{ messages[0]['content'] | tojson(indent=2) }}{% endgeneration %}\n"
      "  {% for m in messages %}\n"
      "    {% if loop.index > 1 %}{% break %}{% endif %}\n"
      "{{ strftime_now('%Y') }}\n"
      "  {% endfor %}\n"
      "{{ eos_token }}"
  )
  ours = load_tokenizer(ours.source, chat_template=template)
  assert ours.apply_chat_template([{"role": "user", "content": {"a": "é"}}, USER]) == (
      theirs.apply_chat_template(
          [{"role": "user", "content": {"a": "é"}}, USER],
          chat_template=template,
          tokenize=False,
          add_generation_prompt=True,
      )
  )


def test_raise_exception_in_template_is_a_chat_template_error(loaded):
  ours, theirs = loaded["llama-3.1"]
  message = "Cannot put tools in the first user message"
  with pytest.raises(Exception, match=message):  # transformers' reference behaviour
    theirs.apply_chat_template([SYSTEM], tools=[ADD_TOOL], tokenize=False)
  with pytest.raises(ChatTemplateError, match=message):
    ours.apply_chat_template([SYSTEM], tools=[ADD_TOOL])


def test_template_selection_by_name(loaded):
  ours, _ = loaded["qwen2.5-math+tool_use"]
  assert ours.apply_chat_template([USER], template_name="tool_use") == (
      loaded["qwen2.5"][0].apply_chat_template([USER])
  )
  with pytest.raises(ChatTemplateError, match=r"no chat template 'chatml'.*default.*tool_use"):
    ours.apply_chat_template([USER], template_name="chatml")


# --------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_tokenizer(tmp_path / "nowhere")


def test_directory_without_tokenizer_files(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*tokenizer\.model.*config\.json"):
    load_tokenizer(tmp_path)


def test_unrecognised_file(tmp_path):
  (tmp_path / "vocab.txt").write_text("a\n")
  with pytest.raises(TokenizerError, match="neither a sentencepiece"):
    load_tokenizer(tmp_path / "vocab.txt")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer.model"])
def test_unreadable_tokenizer_file(tmp_path, name):
  (tmp_path / name).write_text("{}")
  with pytest.raises(TokenizerError, match=f"cannot read .*{name}"):
    load_tokenizer(tmp_path)


def test_malformed_json_names_the_file(hf_dirs, tmp_path):
  broken = shutil.copytree(hf_dirs["qwen2.5"], tmp_path / "broken")
  (broken / "generation_config.json").write_text("{not json")
  with pytest.raises(TokenizerError, match=r"generation_config\.json is not valid JSON"):
    load_tokenizer(broken)


def test_special_token_missing_from_vocabulary(hf_dirs, tmp_path):
  broken = shutil.copytree(hf_dirs["qwen2.5"], tmp_path / "broken")
  config = json.loads((broken / "tokenizer_config.json").read_text())
  _write_json(broken / "tokenizer_config.json", {**config, "eos_token": "<|nope|>"})
  with pytest.raises(TokenizerError, match=r"eos_token '<\|nope\|>' is not in the vocabulary"):
    load_tokenizer(broken)


def test_template_with_syntax_error_fails_at_load(hf_dirs):
  with pytest.raises(ChatTemplateError, match="does not compile"):
    load_tokenizer(hf_dirs["qwen2.5"], chat_template="{% for m in messages %}{{ m }}")


def test_no_chat_template(hf_dirs, tmp_path):
  bare = shutil.copytree(hf_dirs["qwen2.5"], tmp_path / "bare")
  config = json.loads((bare / "tokenizer_config.json").read_text())
  del config["chat_template"]
  _write_json(bare / "tokenizer_config.json", config)
  tok = load_tokenizer(bare)
  assert tok.encode("hi") == load_tokenizer(hf_dirs["qwen2.5"]).encode("hi")
  with pytest.raises(ChatTemplateError, match="has no chat template"):
    tok.apply_chat_template([USER])


def test_empty_and_malformed_conversations(loaded):
  ours, _ = loaded["qwen2.5"]
  with pytest.raises(ChatTemplateError, match="empty conversation"):
    ours.apply_chat_template([])
  with pytest.raises(ChatTemplateError, match="message 1 is a str"):
    ours.apply_chat_template([USER, "hello"])


# --------------------------------------------------------------------------- sentencepiece


def _arithmetic_texts(n=400, seed=0):
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    a, b = rng.randint(0, 9999), rng.randint(0, 9999)
    texts.append(f"<q>{a} + {b} =\n<a>{a + b} is the sum of {a} and {b}.")
  return texts


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  return train_sentencepiece(
      _arithmetic_texts(),
      tmp_path_factory.mktemp("sp") / "arith",
      vocab_size=48,
      user_defined_symbols=["<q>", "<a>"],
  )


def test_sentencepiece_round_trip_and_special_ids(sp_model):
  tok = load_tokenizer(sp_model)
  assert isinstance(tok, SentencePieceTokenizer)
  pieces = [tok.processor.id_to_piece(i) for i in range(tok.vocab_size)]
  assert pieces[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
  assert (tok.pad_id, tok.bos_id, tok.eos_ids, tok.vocab_size) == (0, 2, (3,), 48)
  for text in [
      "<q>12 + 345 =\n<a>357 is the sum of 12 and 345.",
      "  the  sum\n\nof is ",
      "9876543210",
      "",
  ]:
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id
    assert tok.encode(text, add_special_tokens=False) == ids[1:]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False) == "<s>" + text


def test_sentencepiece_digits_and_markers_are_single_pieces(sp_model):
  tok = load_tokenizer(sp_model)
  ids = tok.encode("<q>1234 + 56 =\n<a>1290", add_special_tokens=False)
  pieces = [tok.processor.id_to_piece(i) for i in ids]
  assert pieces[0] == "<q>" and "<a>" in pieces
  digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
  assert "".join(digit_pieces) == "1234561290"
  assert all(len(p) == 1 for p in digit_pieces), pieces


def test_sentencepiece_control_pieces_in_text_and_default_template(sp_model):
  tok = load_tokenizer(sp_model)
  eos = tok.eos_ids[0]
  assert tok.encode("12</s>3", add_special_tokens=False) == (
      tok.encode("12", add_special_tokens=False) + [eos] + tok.encode("3", add_special_tokens=False)
  )
  messages = [{"role": "user", "content": "<q>12 + 7 ="}, {"role": "assistant", "content": "19"}]
  assert tok.chat_templates == {"default": DEFAULT_CHAT_TEMPLATE}
  assert tok.apply_chat_template(messages[:1]) == "<q>12 + 7 =\n"
  ids = tok.encode_chat(messages)
  assert ids[-1] == eos and tok.bos_id not in ids
  assert tok.decode(ids) == "<q>12 + 7 =\n19"
  assert tok.decode(ids, skip_special_tokens=False) == "<q>12 + 7 =\n19</s>"
  assert tok.decode_batch([ids, ids[:3]]) == [tok.decode(ids), tok.decode(ids[:3])]


def test_sentencepiece_directory_with_template(sp_model, tmp_path):
  shutil.copy(sp_model, tmp_path / "tokenizer.model")
  (tmp_path / "chat_template.jinja").write_text(
      "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
  )
  tok = load_tokenizer(tmp_path)
  assert isinstance(tok, SentencePieceTokenizer)
  assert tok.apply_chat_template([{"role": "user", "content": "1+1"}]) == "[user] 1+1\n"
  custom = load_tokenizer(tmp_path, chat_template="{{ messages[-1]['content'] }}=")
  assert custom.apply_chat_template([{"role": "user", "content": "1+1"}]) == "1+1="


def test_sentencepiece_byte_fallback_covers_unseen_characters(tmp_path):
  path = train_sentencepiece(
      _arithmetic_texts(100), tmp_path / "bytes", vocab_size=300, byte_fallback=True
  )
  tok = load_tokenizer(path)
  text = "Ünïcödé 🙂 never seen"
  assert tok.decode(tok.encode(text)) == text
  assert tok.processor.unk_id() not in tok.encode(text)


def test_sentencepiece_training_is_deterministic(tmp_path):
  texts = _arithmetic_texts(200, seed=1)

  def pieces_and_scores(prefix):
    tok = load_tokenizer(
        train_sentencepiece(
            texts, prefix, vocab_size=48, model_type="unigram", hard_vocab_limit=False
        )
    )
    return [
        (tok.processor.id_to_piece(i), tok.processor.get_score(i)) for i in range(tok.vocab_size)
    ]

  # The .model files differ only in the recorded model_prefix.
  assert pieces_and_scores(tmp_path / "a") == pieces_and_scores(tmp_path / "b")


def test_train_sentencepiece_rejects_no_texts(tmp_path):
  with pytest.raises(ValueError, match="at least one text"):
    train_sentencepiece([], tmp_path / "empty", vocab_size=32)
