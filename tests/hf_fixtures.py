"""Tiny random Hugging Face checkpoints built with transformers + torch, saved as real safetensors."""

from __future__ import annotations

import os

TINY_VOCAB = 97

TINY_MODELS = {
    # name: (model_type, extra config fields)
    "qwen2": ("qwen2", dict(tie_word_embeddings=False, rope_theta=10000.0)),
    "qwen2_tied": ("qwen2", dict(tie_word_embeddings=True, rope_theta=1000000.0)),
    "llama_scaled": (
        "llama",
        dict(
            tie_word_embeddings=False,
            attention_bias=False,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "llama_tied": ("llama", dict(tie_word_embeddings=True, attention_bias=False)),
}


def make_tiny_hf_model(
    directory: str,
    name: str = "qwen2",
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 96,
    vocab: int = TINY_VOCAB,
):
  """Creates, saves and returns a tiny random HF causal LM (float32, eval mode)."""
  import torch
  import transformers

  model_type, extra = TINY_MODELS[name]
  cfg_cls = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[model_type]
  config = cfg_cls(
      vocab_size=vocab,
      hidden_size=hidden,
      intermediate_size=intermediate,
      num_hidden_layers=layers,
      num_attention_heads=heads,
      num_key_value_heads=kv_heads,
      max_position_embeddings=256,
      rms_norm_eps=1e-6,
      initializer_range=0.1,
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
      **extra,
  )
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  with torch.no_grad():  # HF inits biases/norms to 0/1; randomise them so the test sees them
    for n, p in model.named_parameters():
      if n.endswith("bias") or "norm" in n:
        p.copy_(p + 0.1 * torch.randn_like(p))
  model.eval()
  os.makedirs(directory, exist_ok=True)
  model.save_pretrained(directory, safe_serialization=True)
  return model


def with_word_level_tokenizer(source: str, directory, chat_template: str) -> str:
  """Copies the checkpoint at `source` into `directory` and adds a word-level tokenizer over the
  tiny vocab ("w{i}" is id i; <pad> <s> </s> <unk> are 0-3) with `chat_template`."""
  import json
  import shutil

  import tokenizers

  for name in os.listdir(source):
    shutil.copy(os.path.join(source, name), directory)
  vocab = {
      "<pad>": 0,
      "<s>": 1,
      "</s>": 2,
      "<unk>": 3,
      **{f"w{i}": i for i in range(4, TINY_VOCAB)},
  }
  backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.add_special_tokens(["<pad>", "<s>", "</s>", "<unk>"])
  backend.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(
        {
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "bos_token": "<s>",
            "chat_template": chat_template,
        },
        f,
    )
  return str(directory)
