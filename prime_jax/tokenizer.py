"""Tokenizers: one small interface over Hugging Face `tokenizer.json` and sentencepiece models.

`load_tokenizer(path)` picks the backend:
  * a directory holding `tokenizer.json` (or that file itself) -> `HFTokenizer`, through the
    `tokenizers` library. Special tokens come from `tokenizer_config.json` (and, as transformers
    does, from `special_tokens_map.json` only when the config has no `added_tokens_decoder`); stop
    ids also from `generation_config.json` / `config.json` `eos_token_id`. The chat template is
    read the way transformers reads it: `chat_template.jinja` and `additional_chat_templates/*.jinja`
    when present, else `tokenizer_config.json`'s `chat_template` (a string or a list of
    `{"name", "template"}`).
  * a `.model` file, or a directory with `tokenizer.model` and no `tokenizer.json`
    -> `SentencePieceTokenizer`, with `DEFAULT_CHAT_TEMPLATE` unless the directory or the caller
    supplies one.

Chat templates render exactly as in `transformers` (`PreTrainedTokenizerBase.apply_chat_template`
with `tokenize=False`): a sandboxed immutable jinja2 environment with `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, the `{% generation %}` tag, transformers' `tojson`
filter and `raise_exception` / `strftime_now` globals, and the named special tokens
(`bos_token`, `eos_token`, ...) as template variables. Not supported: `continue_final_message`,
assistant-token masks, and tools given as Python callables (pass JSON schemas).

`train_sentencepiece` trains the small deterministic models our synthetic tasks use.
"""

from __future__ import annotations

import abc
import datetime
import functools
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import sentencepiece as spm
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

HF_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
_TOKENIZER_CONFIG = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP = "special_tokens_map.json"
_CHAT_TEMPLATE_FILE = "chat_template.jinja"
_CHAT_TEMPLATE_DIR = "additional_chat_templates"
# Model configs whose `eos_token_id` (an int or a list) adds stop ids, in priority order.
EOS_CONFIG_FILES = ("generation_config.json", "config.json")
# The special tokens transformers passes to chat templates (`special_tokens_map`).
_NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

# Sentencepiece chat template for our own small tasks: every message's content on its own line,
# except that an assistant message ends with the EOS token. The generation prompt adds nothing,
# so the model continues right after the last user line, e.g. "12+7=\n" -> "19</s>".
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}"
    "{{ eos_token if message['role'] == 'assistant' else '\\n' }}{% endfor %}"
)


class TokenizerError(ValueError):
  """Tokenizer files that exist but cannot be used (malformed JSON, unknown special token...)."""


class ChatTemplateError(TokenizerError):
  """A missing chat template, one that does not compile, or one that raised while rendering."""


# --------------------------------------------------------------------------- chat templates


class _GenerationTag(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' assistant
  masks; rendering leaves its body unchanged, which is all we need from it."""

  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # transformers replaces jinja's filter, which HTML-escapes and sorts keys, with plain json.dumps.
  return json.dumps(
      x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
  )


def _strftime_now(format):
  return datetime.datetime.now().strftime(format)


@functools.lru_cache(maxsize=None)
def _compile_chat_template(template: str) -> jinja2.Template:
  env = ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
  )
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(template)


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool,
    tools: Optional[list[dict]] = None,
    documents: Optional[list[dict]] = None,
    **variables,
) -> str:
  """Renders one conversation with a jinja chat template, as transformers does.

  `messages` are dicts such as {"role": "user", "content": "..."}; keys whose value is None are
  dropped first (transformers does this because many templates mishandle None). `variables`
  (special tokens, `date_string`, ...) are passed to the template as they are.
  """
  if not messages:
    raise ChatTemplateError("cannot apply a chat template to an empty conversation")
  plain = []
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping):
      raise ChatTemplateError(f"message {i} is a {type(message).__name__}, expected a dict")
    plain.append({k: v for k, v in message.items() if v is not None})
  try:
    return _compile_chat_template(template).render(
        messages=plain,
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )
  except Exception as e:  # raise_exception(), undefined names, type errors inside the template
    raise ChatTemplateError(f"the chat template raised {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------- interface


class Tokenizer(abc.ABC):
  """Text <-> token ids, stop/pad ids and chat formatting for one model.

  Attributes:
    eos_ids: every id that ends a response (e.g. Qwen2.5-Instruct: <|im_end|>, <|endoftext|>);
      the tokenizer's own EOS token comes first.
    pad_id: id used to pad batches; the first EOS id when the tokenizer names no pad token
      (padding is masked out, so sharing an id with EOS is harmless).
    bos_id: the beginning-of-sequence id, or None when the tokenizer has none.
    vocab_size: number of ids the tokenizer can produce (the model's embedding table may be
      larger, e.g. padded to a multiple of 128).
    special_tokens: named special token strings ({"eos_token": "<|im_end|>", ...}), passed to
      chat templates.
    chat_templates: template name -> jinja source; a single template is named "default".
  """

  def __init__(
      self,
      *,
      eos_ids: Sequence[int],
      pad_id: Optional[int],
      bos_id: Optional[int],
      vocab_size: int,
      special_tokens: Mapping[str, str],
      chat_templates: Mapping[str, str],
      source: str,
  ):
    if not eos_ids:
      raise TokenizerError(f"{source}: no EOS token defined; sampling needs one to stop")
    for token_id in (*eos_ids, pad_id, bos_id):
      if token_id is not None and not 0 <= token_id < vocab_size:
        raise TokenizerError(
            f"{source}: special token id {token_id} is outside the vocabulary "
            f"of {vocab_size} tokens"
        )
    self.eos_ids = tuple(eos_ids)
    self.pad_id = self.eos_ids[0] if pad_id is None else pad_id
    self.bos_id = bos_id
    self.vocab_size = vocab_size
    self.special_tokens = dict(special_tokens)
    self.chat_templates = dict(chat_templates)
    self.source = source
    for name, template in self.chat_templates.items():
      try:
        _compile_chat_template(template)
      except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"{source}: chat template {name!r} does not compile " f"(line {e.lineno}): {e.message}"
        ) from e

  @abc.abstractmethod
  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """Token ids of `text`. `add_special_tokens` adds what the tokenizer adds around a sequence
    (e.g. Llama-3's <|begin_of_text|>; nothing for Qwen2.5), as transformers' `encode` does."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`; special tokens (EOS, padding, chat markers) are dropped unless asked for."""

  def encode_batch(
      self, texts: Sequence[str], *, add_special_tokens: bool = True
  ) -> list[list[int]]:
    return [self.encode(text, add_special_tokens=add_special_tokens) for text in texts]

  def decode_batch(
      self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True
  ) -> list[str]:
    return [self.decode(ids, skip_special_tokens) for ids in batch]

  def apply_chat_template(
      self,
      messages: Sequence[Mapping[str, Any]],
      *,
      add_generation_prompt: bool = True,
      tools: Optional[list[dict]] = None,
      template_name: Optional[str] = None,
      **variables,
  ) -> str:
    """The conversation as the model's prompt text; equals transformers'
    `apply_chat_template(messages, tokenize=False, ...)`. With several templates, `template_name`
    picks one; otherwise "tool_use" when `tools` are given and present, else "default"."""
    template = self._select_template(template_name, tools)
    return render_chat_template(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        tools=tools,
        **{**self.special_tokens, **variables},
    )

  def encode_chat(
      self,
      messages: Sequence[Mapping[str, Any]],
      *,
      add_generation_prompt: bool = True,
      tools: Optional[list[dict]] = None,
      template_name: Optional[str] = None,
      **variables,
  ) -> list[int]:
    """Token ids of `apply_chat_template(...)`; the template writes any BOS itself, so none is
    added (as transformers' `apply_chat_template(tokenize=True)`)."""
    text = self.apply_chat_template(
        messages,
        add_generation_prompt=add_generation_prompt,
        tools=tools,
        template_name=template_name,
        **variables,
    )
    return self.encode(text, add_special_tokens=False)

  def _select_template(self, name: Optional[str], tools: Optional[list[dict]]) -> str:
    if not self.chat_templates:
      raise ChatTemplateError(
          f"{self.source} has no chat template; pass one with "
          "load_tokenizer(path, chat_template=...)"
      )
    if name is None:
      name = "tool_use" if tools is not None and "tool_use" in self.chat_templates else "default"
    if name not in self.chat_templates:
      raise ChatTemplateError(
          f"{self.source} has no chat template {name!r}; it has "
          f"{sorted(self.chat_templates)} (choose with template_name=...)"
      )
    return self.chat_templates[name]


# --------------------------------------------------------------------------- Hugging Face


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` through the `tokenizers` library.

  `info` holds `Tokenizer`'s keyword arguments other than `vocab_size`, which the backend sets.
  """

  def __init__(
      self, backend: tokenizers.Tokenizer, *, clean_up_tokenization_spaces: bool = False, **info
  ):
    super().__init__(vocab_size=backend.get_vocab_size(with_added_tokens=True), **info)
    self.backend = backend
    # transformers skips this clean-up for BPE models, where it would corrupt the text.
    self._clean_up = clean_up_tokenization_spaces and type(backend.model).__name__ != "BPE"

  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_batch(
      self, texts: Sequence[str], *, add_special_tokens: bool = True
  ) -> list[list[int]]:
    encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [e.ids for e in encodings]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
    return _clean_up_tokenization(text) if self._clean_up else text

  def decode_batch(
      self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True
  ) -> list[str]:
    texts = self.backend.decode_batch(
        [[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special_tokens
    )
    return [_clean_up_tokenization(t) for t in texts] if self._clean_up else texts


def _clean_up_tokenization(text: str) -> str:
  for spaced, joined in (
      (" .", "."),
      (" ?", "?"),
      (" !", "!"),
      (" ,", ","),
      (" ' ", "'"),
      (" n't", "n't"),
      (" 'm", "'m"),
      (" 's", "'s"),
      (" 've", "'ve"),
      (" 're", "'re"),
  ):
    text = text.replace(spaced, joined)
  return text


def _read_json(path: Path) -> dict:
  if not path.is_file():
    return {}
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise TokenizerError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(value, dict):
    raise TokenizerError(f"{path} should hold a JSON object, found {type(value).__name__}")
  return value


def _token_text(value: Any) -> Optional[str]:
  # tokenizer_config.json stores a special token as a string or an AddedToken dict.
  return value.get("content") if isinstance(value, dict) else value


def _read_chat_templates(directory: Path, tokenizer_config: dict) -> dict[str, str]:
  """Template files take priority over tokenizer_config.json, as in transformers."""
  templates = {}
  if (directory / _CHAT_TEMPLATE_FILE).is_file():
    templates["default"] = (directory / _CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
  for path in sorted((directory / _CHAT_TEMPLATE_DIR).glob("*.jinja")):
    templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
  if templates:
    return templates
  value = tokenizer_config.get("chat_template")
  if value is None:
    return {}
  if isinstance(value, str):
    return {"default": value}
  if isinstance(value, list) and all(
      isinstance(t, dict) and {"name", "template"} <= t.keys() for t in value
  ):
    return {t["name"]: t["template"] for t in value}
  raise ChatTemplateError(
      f"{directory / _TOKENIZER_CONFIG}: chat_template must be a string or a "
      'list of {"name": ..., "template": ...} objects'
  )


def _config_ids(value: Any, origin: Path) -> list[int]:
  ids = [] if value is None else [value] if isinstance(value, int) else value
  if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
    raise TokenizerError(f"{origin}: expected an int or a list of ints, found {value!r}")
  return ids


def _load_hf(tokenizer_file: Path, chat_template: Optional[str]) -> HFTokenizer:
  directory = tokenizer_file.parent
  try:
    backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
  except Exception as e:  # the Rust loader raises a bare Exception
    raise TokenizerError(f"cannot read {tokenizer_file}: {e}") from e
  config = _read_json(directory / _TOKENIZER_CONFIG)
  named = {k: config[k] for k in _NAMED_SPECIAL_TOKENS if k in config}
  if (
      "added_tokens_decoder" not in config
  ):  # transformers' legacy path reads the map and lets it win
    special_map = _read_json(directory / _SPECIAL_TOKENS_MAP)
    named.update({k: special_map[k] for k in _NAMED_SPECIAL_TOKENS if k in special_map})
  special_tokens = {k: _token_text(v) for k, v in named.items() if _token_text(v)}
  if "pad_token" not in special_tokens and backend.padding:
    special_tokens["pad_token"] = backend.padding["pad_token"]

  def token_id(name: str) -> Optional[int]:
    if name not in special_tokens:
      return None
    found = backend.token_to_id(special_tokens[name])
    if found is None:
      raise TokenizerError(
          f"{directory}: {name} {special_tokens[name]!r} is not in the vocabulary "
          f"of {tokenizer_file}"
      )
    return found

  eos_id = token_id("eos_token")
  eos_ids = [] if eos_id is None else [eos_id]
  pad_id = token_id("pad_token")
  for name in EOS_CONFIG_FILES:
    model_config = _read_json(directory / name)
    eos_ids += _config_ids(model_config.get("eos_token_id"), directory / name)
    if pad_id is None and isinstance(model_config.get("pad_token_id"), int):
      pad_id = model_config["pad_token_id"]
  templates = (
      {"default": chat_template}
      if chat_template is not None
      else (_read_chat_templates(directory, config))
  )
  return HFTokenizer(
      backend,
      clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
      eos_ids=tuple(dict.fromkeys(eos_ids)),
      pad_id=pad_id,
      bos_id=token_id("bos_token"),
      special_tokens=special_tokens,
      chat_templates=templates,
      source=str(directory),
  )


# --------------------------------------------------------------------------- sentencepiece


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece model. Its control pieces (<s>, </s>, <pad>) written in the text, as chat
  templates write EOS, encode to their ids, like added tokens in a Hugging Face tokenizer."""

  def __init__(
      self, processor: spm.SentencePieceProcessor, *, chat_templates: Mapping[str, str], source: str
  ):
    self.processor = processor
    size = processor.get_piece_size()
    self._control = {processor.id_to_piece(i): i for i in range(size) if processor.is_control(i)}
    # Longest first, so that no piece matches inside a longer one.
    pieces = sorted(self._control, key=len, reverse=True)
    self._control_split = (
        re.compile("(" + "|".join(map(re.escape, pieces)) + ")") if pieces else None
    )
    ids = {name: getattr(processor, f"{name}_id")() for name in ("bos", "eos", "pad", "unk")}
    ids = {name: i if i >= 0 else None for name, i in ids.items()}
    super().__init__(
        eos_ids=() if ids["eos"] is None else (ids["eos"],),
        pad_id=ids["pad"],
        bos_id=ids["bos"],
        vocab_size=size,
        chat_templates=chat_templates,
        source=source,
        special_tokens={
            f"{name}_token": processor.id_to_piece(i) for name, i in ids.items() if i is not None
        },
    )

  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    segments = self._control_split.split(text) if self._control_split else [text]
    ids = [self.bos_id] if add_special_tokens and self.bos_id is not None else []
    for i, segment in enumerate(segments):  # odd positions are the control pieces split out
      ids.extend([self._control[segment]] if i % 2 else self.processor.encode(segment))
    return ids

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    ids = [int(i) for i in ids]
    if skip_special_tokens:
      return self.processor.decode([i for i in ids if not self.processor.is_control(i)])
    # sentencepiece drops control ids when decoding, so write their pieces between the runs.
    runs = itertools.groupby(ids, key=self.processor.is_control)
    return "".join(
        "".join(map(self.processor.id_to_piece, run))
        if control
        else self.processor.decode(list(run))
        for control, run in runs
    )


def _load_sentencepiece(model_file: Path, chat_template: Optional[str]) -> SentencePieceTokenizer:
  try:
    processor = spm.SentencePieceProcessor(model_file=str(model_file))
  except (OSError, RuntimeError) as e:
    raise TokenizerError(f"cannot read sentencepiece model {model_file}: {e}") from e
  if chat_template is not None:
    templates = {"default": chat_template}
  elif model_file.name == SENTENCEPIECE_FILE:  # a model directory may carry its own template
    directory = model_file.parent
    templates = _read_chat_templates(directory, _read_json(directory / _TOKENIZER_CONFIG))
  else:
    templates = {}
  templates = templates or {"default": DEFAULT_CHAT_TEMPLATE}
  return SentencePieceTokenizer(processor, chat_templates=templates, source=str(model_file))


def train_sentencepiece(
    texts: Iterable[str],
    out_prefix: str | os.PathLike,
    *,
    vocab_size: int,
    model_type: str = "bpe",
    user_defined_symbols: Sequence[str] = (),
    byte_fallback: bool = False,
    character_coverage: float = 1.0,
    seed: int = 0,
    **trainer_options,
) -> Path:
  """Trains a sentencepiece model on `texts`; writes `{out_prefix}.model` and `.vocab` and returns
  the `.model` path (load it with `load_tokenizer`).

  Made for small synthetic tasks:
    * ids: <pad> 0, <unk> 1, <s> 2, </s> 3;
    * every digit is a piece of its own, so numbers are read and written digit by digit;
    * `user_defined_symbols` (task markers) are always single pieces;
    * identity normalisation, no dummy prefix and no whitespace collapsing, so
      decode(encode(t)) == t for text made of characters seen in training (all of them with the
      default `character_coverage=1.0`), or of any characters with `byte_fallback=True`;
    * deterministic: one thread, input in the given order, sentencepiece's RNG seeded by `seed`.
  `trainer_options` go to `SentencePieceTrainer.train` as they are (e.g. hard_vocab_limit=False).
  """
  if isinstance(texts, str):
    raise TypeError("train_sentencepiece takes an iterable of texts, not one string")
  texts = list(texts)
  if not texts:
    raise ValueError("train_sentencepiece needs at least one text")
  out_prefix = Path(out_prefix)
  out_prefix.parent.mkdir(parents=True, exist_ok=True)
  spm.set_random_generator_seed(seed)
  options = dict(
      model_prefix=str(out_prefix),
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      byte_fallback=byte_fallback,
      split_digits=True,
      user_defined_symbols=list(user_defined_symbols),
      pad_id=0,
      unk_id=1,
      bos_id=2,
      eos_id=3,
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      num_threads=1,
      shuffle_input_sentence=False,
      minloglevel=2,
  )
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), **{**options, **trainer_options})
  return out_prefix.with_name(out_prefix.name + ".model")


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: str | os.PathLike, *, chat_template: Optional[str] = None) -> Tokenizer:
  """The tokenizer at `path` (see the module docstring for what each layout loads as).

  `chat_template` (jinja source) replaces the one found with the tokenizer.
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"tokenizer path {path} does not exist")
  if path.is_file():
    if path.suffix == ".model":
      return _load_sentencepiece(path, chat_template)
    if path.name == HF_TOKENIZER_FILE:
      return _load_hf(path, chat_template)
    raise TokenizerError(f"{path} is neither a sentencepiece .model file nor {HF_TOKENIZER_FILE}")
  if (path / HF_TOKENIZER_FILE).is_file():
    return _load_hf(path / HF_TOKENIZER_FILE, chat_template)
  if (path / SENTENCEPIECE_FILE).is_file():
    return _load_sentencepiece(path / SENTENCEPIECE_FILE, chat_template)
  present = sorted(p.name for p in path.iterdir())
  raise FileNotFoundError(
      f"no tokenizer in {path}: expected {HF_TOKENIZER_FILE} (Hugging Face) or "
      f"{SENTENCEPIECE_FILE} (sentencepiece); the directory holds {present or 'nothing'}"
  )
