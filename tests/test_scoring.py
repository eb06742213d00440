"""Chunked per-token log-probs against transformers, an unchunked jax reference, and memory use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prime_jax.models import Decoder, DecoderConfig, init_params, load_hf_checkpoint
from prime_jax.models import positions_from_mask
from prime_jax.scoring import pad_sequences, token_logprobs

PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22]]
RESPONSES = [[30, 31, 32, 33, 34, 35, 36], [40, 41, 2], [50]]


def batch():
  prompts, prompt_valid = pad_sequences(PROMPTS, left=True)
  responses, response_mask = pad_sequences(RESPONSES, left=False)
  return prompts, prompt_valid, responses, response_mask


def torch_reference(torch_model, prompt, response):
  """(log-probs, entropies) of each response token, one unpadded row at a time (float64)."""
  with torch.no_grad():
    logits = torch_model(torch.tensor([prompt + response])).logits[0].double()
  log_p = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
  picked = log_p[torch.arange(len(response)), torch.tensor(response)]
  entropy = -(log_p.exp() * log_p).sum(-1)
  return picked.numpy(), entropy.numpy()


@pytest.mark.parametrize("name,chunk_size", [("qwen2", 3), ("llama_tied", 64)])
def test_logprobs_and_entropy_match_transformers(tiny_hf, name, chunk_size):
  directory, torch_model = tiny_hf(name)
  config, params = load_hf_checkpoint(directory)
  logprobs, entropy = token_logprobs(
      params, *batch(), config=config, chunk_size=chunk_size, with_entropy=True
  )
  assert logprobs.shape == entropy.shape == (3, 7)
  for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
    want_lp, want_ent = torch_reference(torch_model, prompt, response)
    np.testing.assert_allclose(logprobs[i, : len(response)], want_lp, atol=1e-5)
    np.testing.assert_allclose(entropy[i, : len(response)], want_ent, atol=1e-5)
    np.testing.assert_array_equal(logprobs[i, len(response) :], 0.0)
    np.testing.assert_array_equal(entropy[i, len(response) :], 0.0)
  only_logprobs = token_logprobs(params, *batch(), config=config, chunk_size=chunk_size)
  np.testing.assert_array_equal(only_logprobs, logprobs)


def unchunked_logprobs(params, config, prompts, prompt_valid, responses, response_mask):
  """Reference: full [N, P+T, V] logits, log-softmax, gather (what scoring must not materialise)."""
  seq = jnp.concatenate([prompts, responses], axis=1)
  valid = jnp.concatenate([prompt_valid, response_mask], axis=1)
  logits = Decoder(config).apply(
      {"params": params}, seq, positions_from_mask(valid), valid, method=Decoder.forward_logits
  )
  log_p = jax.nn.log_softmax(logits[:, prompts.shape[1] - 1 : -1], axis=-1)
  picked = jnp.take_along_axis(log_p, responses[..., None], axis=-1)[..., 0]
  return jnp.where(response_mask, picked, 0.0)


def test_gradient_wrt_params_matches_unchunked_reference_under_jit(tiny_hf):
  config, params = load_hf_checkpoint(tiny_hf("qwen2")[0])
  inputs = batch()
  weights = jnp.asarray(np.random.default_rng(0).normal(size=inputs[2].shape), jnp.float32)

  @jax.jit
  def grads(params, weights, *inputs):
    chunked = lambda p: jnp.sum(weights * token_logprobs(p, *inputs, config=config, chunk_size=3))
    reference = lambda p: jnp.sum(weights * unchunked_logprobs(p, config, *inputs))
    return jax.grad(chunked)(params), jax.grad(reference)(params)

  got, want = grads(params, weights, *inputs)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.abs(w).max() > 0
    np.testing.assert_allclose(g, w, atol=1e-5 * np.abs(w).max())


def test_forward_and_backward_never_hold_the_full_logits():
  # A large vocab and a short sequence, so logits dominate every other buffer (attention, params).
  config = DecoderConfig(
      vocab_size=32768,
      hidden_size=16,
      num_layers=1,
      num_heads=2,
      num_kv_heads=1,
      head_dim=8,
      intermediate_size=32,
  )
  params = init_params(config, jax.random.key(0))
  n, p, t = 2, 8, 512
  full_logits_bytes = n * t * config.vocab_size * 4  # 128 MiB
  args = (
      jnp.ones((n, p), jnp.int32),
      jnp.ones((n, p), bool),
      jnp.ones((n, t), jnp.int32),
      jnp.ones((n, t), bool),
  )

  def temp_bytes(chunk_size):  # scratch memory of a forward + backward pass
    loss = lambda params, *args: token_logprobs(
        params, *args, config=config, chunk_size=chunk_size
    ).sum()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, *args).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(t) > full_logits_bytes  # one chunk = the whole sequence: the check can fail
  # A few chunk-sized buffers of 1/64 of the full logits each, plus param-sized gradients.
  assert temp_bytes(8) < full_logits_bytes / 4


def test_pad_sequences():
  tokens, valid = pad_sequences([[1, 2], [3]], length=3, pad_id=9, left=True)
  np.testing.assert_array_equal(tokens, [[9, 1, 2], [9, 9, 3]])
  np.testing.assert_array_equal(valid, [[False, True, True], [False, False, True]])
  tokens, valid = pad_sequences([[1, 2], [3]], pad_id=9, left=False)
  np.testing.assert_array_equal(tokens, [[1, 2], [3, 9]])
  np.testing.assert_array_equal(valid, [[True, True], [True, False]])
  with pytest.raises(ValueError, match="does not fit"):
    pad_sequences([[1, 2, 3]], length=2, left=True)


def test_mismatched_batch_shapes_raise(tiny_hf):
  config, params = load_hf_checkpoint(tiny_hf("qwen2")[0])
  prompts, prompt_valid, responses, response_mask = batch()
  with pytest.raises(ValueError, match="differ in batch size"):
    token_logprobs(params, prompts[:2], prompt_valid[:2], responses, response_mask, config=config)
