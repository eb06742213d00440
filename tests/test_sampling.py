"""The jitted sampler against transformers `generate`, a full forward pass and numpy references."""

import json

import jax
import numpy as np
import pytest
import torch
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from multidevice import run_with_devices

from prime_jax.models import Decoder, load_hf_checkpoint, positions_from_mask
from prime_jax.sampling import (
    SamplingConfig,
    bucket_length,
    cache_length,
    choose_tokens,
    draw_indices,
    greedy_tokens,
    sample,
    sample_jit,
    state_shapes,
    state_shardings,
)
from prime_jax.scoring import pad_sequences, token_logprobs

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23]]  # left-padded to 6
NEW_TOKENS = 40
PAD = 0


@pytest.fixture(scope="module")
def model(tiny_hf):
  """name -> (config, params, torch model)."""
  cache = {}

  def get(name="qwen2"):
    if name not in cache:
      directory, torch_model = tiny_hf(name)
      cache[name] = (*load_hf_checkpoint(directory), torch_model)
    return cache[name]

  return get


def run(params, config, prompts=PROMPTS, *, key=0, **settings):
  tokens, valid = pad_sequences(prompts, pad_id=PAD, left=True)
  settings = {"max_new_tokens": NEW_TOKENS, "pad_id": PAD, **settings}
  out = sample(
      params,
      tokens,
      valid,
      jax.random.key(key),
      model_config=config,
      config=SamplingConfig(**settings),
  )
  return jax.device_get(out)


def full_forward_logprobs(params, config, prompts, tokens, mask):
  """[N, T, V] log-softmax of an uncached forward pass over prompt + response (numpy)."""
  p_tok, p_valid = pad_sequences(prompts, pad_id=PAD, left=True)
  seq = np.concatenate([p_tok, tokens], axis=1)
  valid = np.concatenate([p_valid, mask], axis=1)
  logits = Decoder(config).apply(
      {"params": params}, seq, positions_from_mask(valid), valid, method=Decoder.forward_logits
  )
  logits = np.asarray(logits, np.float64)[:, p_tok.shape[1] - 1 : -1]
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", ["qwen2", "llama_scaled"])
def test_greedy_matches_transformers_generate_on_left_padded_batch(model, name):
  config, params, torch_model = model(name)
  out = run(params, config, temperature=0.0)
  tokens, valid = pad_sequences(PROMPTS, pad_id=PAD, left=True)
  torch_model.generation_config.eos_token_id = None  # run the full budget on both sides
  with torch.no_grad():
    expected = torch_model.generate(
        torch.tensor(tokens, dtype=torch.long),
        attention_mask=torch.tensor(valid, dtype=torch.long),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=PAD,
    )
  np.testing.assert_array_equal(out.tokens, expected[:, tokens.shape[1] :].numpy())
  np.testing.assert_array_equal(out.lengths, NEW_TOKENS)
  assert out.mask.all()


def test_kv_cache_decoding_equals_full_forward(model):
  config, params, _ = model("qwen2")
  out = run(params, config, temperature=0.0)
  logprobs = full_forward_logprobs(params, config, PROMPTS, out.tokens, out.mask)
  np.testing.assert_array_equal(out.tokens, logprobs.argmax(-1))
  np.testing.assert_allclose(out.logprobs, logprobs.max(-1), atol=1e-5)


def test_sampled_logprobs_equal_scoring_logprobs(model):
  config, params, _ = model("qwen2")
  out = run(params, config, n_samples=2, eos_ids=(3, 7, 11, 40), key=1)
  assert out.lengths.min() < NEW_TOKENS  # some rows stopped early, so padding is exercised
  prompts = [p for p in PROMPTS for _ in range(2)]
  p_tok, p_valid = pad_sequences(prompts, pad_id=PAD, left=True)
  scored = token_logprobs(
      params, p_tok, p_valid, out.tokens, out.mask, config=config, chunk_size=16
  )
  np.testing.assert_allclose(out.logprobs, scored, atol=1e-5)
  reference = full_forward_logprobs(params, config, prompts, out.tokens, out.mask)
  picked = np.take_along_axis(reference, out.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(out.logprobs, np.where(out.mask, picked, 0), atol=1e-5)


def test_rows_stop_at_any_eos_id_and_are_padded_after(model):
  config, params, _ = model("qwen2")
  free = run(params, config, temperature=0.0).tokens
  # Stop ids: a token greedy decoding first emits mid-way through row 0, and another for row 1.
  first_new = lambda row, skip: next(
      t for i, t in enumerate(row) if i >= 3 and t not in row[:i] and t not in skip
  )
  eos_a = first_new(list(free[0]), ())
  eos_b = first_new(list(free[1]), (eos_a,))
  out = run(params, config, temperature=0.0, eos_ids=(eos_a, eos_b))
  for r, row in enumerate(free):
    hits = [i for i, t in enumerate(row) if t in (eos_a, eos_b)]
    length = hits[0] + 1 if hits else NEW_TOKENS
    assert out.lengths[r] == length
    np.testing.assert_array_equal(out.tokens[r, :length], row[:length])
    np.testing.assert_array_equal(out.tokens[r, length:], PAD)
    np.testing.assert_array_equal(out.mask[r], np.arange(NEW_TOKENS) < length)
    np.testing.assert_array_equal(out.logprobs[r, length:], 0.0)
  assert out.lengths[0] < NEW_TOKENS and out.lengths[1] < NEW_TOKENS


def test_n_samples_prefill_once_equals_sampling_repeated_prompts(model):
  config, params, _ = model("qwen2")
  grouped = run(params, config, n_samples=3, eos_ids=(3,), key=7)
  repeated = run(
      params, config, [p for p in PROMPTS for _ in range(3)], n_samples=1, eos_ids=(3,), key=7
  )
  np.testing.assert_array_equal(grouped.tokens, repeated.tokens)
  np.testing.assert_array_equal(grouped.lengths, repeated.lengths)
  np.testing.assert_allclose(grouped.logprobs, repeated.logprobs, atol=1e-5)
  # The samples of one prompt are independent draws, not copies.
  assert not np.array_equal(grouped.tokens[0], grouped.tokens[1])


@pytest.mark.parametrize("settings", [dict(top_k=1), dict(top_p=1e-4)])
def test_degenerate_filters_equal_greedy(model, settings):
  config, params, _ = model("qwen2")
  greedy = run(params, config, temperature=0.0)
  filtered = run(params, config, temperature=1.0, key=3, **settings)
  np.testing.assert_array_equal(filtered.tokens, greedy.tokens)
  np.testing.assert_allclose(filtered.logprobs, greedy.logprobs, atol=1e-6)


def test_same_key_same_tokens_different_key_different_tokens(model):
  config, params, _ = model("qwen2")
  a, b, c = (run(params, config, n_samples=3, eos_ids=(3,), key=k) for k in (11, 11, 12))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)


def test_a_raw_key_draws_as_its_typed_key_and_a_batch_of_keys_is_named(model):
  config, params, _ = model("qwen2")
  tokens, valid = pad_sequences(PROMPTS, pad_id=PAD, left=True)
  settings = SamplingConfig(max_new_tokens=NEW_TOKENS, pad_id=PAD, n_samples=2, eos_ids=(3,))

  def draw(key):
    out = sample(params, tokens, valid, key, model_config=config, config=settings)
    return jax.device_get(out).tokens

  np.testing.assert_array_equal(draw(jax.random.PRNGKey(11)), draw(jax.random.key(11)))
  with pytest.raises(ValueError, match=r"one PRNG key .* shape \(2,\)"):
    draw(jax.random.split(jax.random.key(11)))
  with pytest.raises(ValueError, match="one PRNG key .* float32"):
    draw(np.zeros(2, np.float32))


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 3, 1.0), (1.5, 0, 0.8), (1.0, 4, 0.7)]
)
def test_choose_tokens_draws_from_the_filtered_distribution(temperature, top_k, top_p):
  logits = np.array([2.0, 1.5, 0.3, 0.0, -1.0, -3.0], np.float32)
  # numpy reference: temperature, then top-k, then the smallest top set reaching mass top_p.
  probs = np.exp(logits / temperature)
  order = np.argsort(-probs)
  kept = order[: top_k or len(logits)]
  p_kept = probs[kept] / probs[kept].sum()
  kept = kept[np.cumsum(p_kept) - p_kept < top_p]
  expected = np.zeros(len(logits))
  expected[kept] = probs[kept] / probs[kept].sum()

  rows = 40000
  config = SamplingConfig(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p)
  tokens, logprobs = jax.jit(choose_tokens, static_argnums=2)(
      np.tile(logits, (rows, 1)), jax.random.split(jax.random.key(0), rows), config
  )
  freq = np.bincount(np.asarray(tokens), minlength=len(logits)) / rows
  np.testing.assert_allclose(freq, expected, atol=0.012)  # > 5 sigma of a 40k-draw frequency
  log_softmax = logits - np.log(np.exp(logits).sum())
  np.testing.assert_allclose(logprobs, log_softmax[np.asarray(tokens)], atol=1e-6)


def test_greedy_tokens_match_numpy_argmax_and_log_softmax():
  """The first maximal index on ties (as `np.argmax`), rows of -inf entries, a row of equal
  logits, the maximum in the last column; log-probs against a float64 log-softmax."""
  rng = np.random.default_rng(3)
  logits = rng.standard_normal((6, 1000)).astype(np.float32)
  logits[0, [17, 400, 999]] = 9.0  # a three-way tie: the first wins
  logits[1, :500] = -np.inf
  logits[2] = 0.25
  logits[3, 999] = 7.0
  tokens, logprobs = jax.jit(greedy_tokens)(logits)
  np.testing.assert_array_equal(tokens, logits.argmax(-1))
  assert list(np.asarray(tokens)[:4]) == [17, int(logits[1].argmax()), 0, 999]
  wide = logits.astype(np.float64)
  log_softmax = wide - wide.max(-1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
  np.testing.assert_allclose(logprobs, log_softmax[np.arange(6), logits.argmax(-1)], atol=1e-6)


def test_draw_follows_softmax_across_chunks_and_never_picks_masked_entries():
  """The inverse-CDF draw over 300 entries (3 chunks of 128, the last padded), one whole chunk
  and scattered entries at -inf: frequencies of 200k draws match softmax within 5 sigma."""
  rng = np.random.default_rng(0)
  logits = (2 * rng.standard_normal(300)).astype(np.float32)
  logits[128:256] = -np.inf
  logits[rng.choice(300, 20, replace=False)] = -np.inf
  probs = np.exp(logits - logits[np.isfinite(logits)].max())
  probs /= probs.sum()
  rows = 200_000
  tokens = np.asarray(
      jax.jit(draw_indices)(jax.random.split(jax.random.key(1), rows), np.tile(logits, (rows, 1)))
  )
  freq = np.bincount(tokens, minlength=300) / rows
  assert freq[~np.isfinite(logits)].sum() == 0
  np.testing.assert_allclose(freq, probs, atol=5 * np.sqrt(probs.max() / rows))


def test_prompt_widths_in_one_bucket_share_one_program(model):
  config, params, _ = model("qwen2")
  short = run(params, config, [[5, 6, 7]], max_new_tokens=8, temperature=0.0)
  programs = sample_jit._cache_size()
  # The same prompt with extra left padding inside the bucket: same program, same tokens.
  tokens, valid = pad_sequences([[5, 6, 7]], length=12, pad_id=PAD, left=True)
  wide = sample(
      params,
      tokens,
      valid,
      jax.random.key(0),
      model_config=config,
      config=SamplingConfig(max_new_tokens=8, temperature=0.0, pad_id=PAD),
  )
  assert sample_jit._cache_size() == programs
  np.testing.assert_array_equal(short.tokens, wide.tokens)


def test_bucket_length():
  assert [bucket_length(n) for n in (1, 16, 17, 100, 1024)] == [16, 16, 32, 128, 1024]
  assert [bucket_length(n, (64, 32)) for n in (1, 33, 64, 65, 130)] == [32, 64, 64, 128, 192]


def test_bad_prompts_and_settings_raise(model):
  config, params, _ = model("qwen2")
  key = jax.random.key(0)
  right_padded = (np.array([[5, 6, 0]]), np.array([[True, True, False]]))
  with pytest.raises(ValueError, match="left-padded"):
    sample(params, *right_padded, key, model_config=config, config=SamplingConfig(max_new_tokens=4))
  with pytest.raises(ValueError, match=r"must be one \[B, P\] shape"):
    sample(
        params,
        np.ones((1, 3), int),
        np.ones((1, 4), bool),
        key,
        model_config=config,
        config=SamplingConfig(max_new_tokens=4),
    )
  tokens, valid = pad_sequences([[5] * 250], left=True)
  with pytest.raises(ValueError, match="exceeds the model's context of 256"):
    sample(params, tokens, valid, key, model_config=config, config=SamplingConfig(max_new_tokens=8))
  for bad in (
      dict(temperature=-1),
      dict(top_p=0),
      dict(top_k=-1),
      dict(n_samples=0),
      dict(max_new_tokens=0),
      dict(attention="pallas_gpu", attention_block=96),
  ):
    with pytest.raises(ValueError):
      SamplingConfig(**{"max_new_tokens": 4, **bad})


@pytest.mark.parametrize("attention", ["pallas_gpu", "pallas_interpret"])
def test_the_pallas_kernel_gets_a_cache_of_whole_blocks(attention):
  """The Triton kernel lowers only power-of-two [block, d] loads: a cache shorter than one block
  is a whole block for it (64 + 128 = 192 slots failed on an H200), where XLA keeps 192."""
  for width, budget, xla_slots, kernel_slots in ((64, 128, 192, 256), (64, 256, 512, 512)):
    assert cache_length(width, SamplingConfig(max_new_tokens=budget)) == xla_slots
    kernel = SamplingConfig(max_new_tokens=budget, attention=attention)
    assert cache_length(width, kernel) == kernel_slots


def test_state_shardings_follow_each_cache_arrays_layout(model):
  """Keys cached transposed for "xla" ([rows, kv_heads, head_dim, slots]) put a rule on "length"
  on their last dim, the values (and the Pallas kernels' keys) on their third: checked on an
  abstract 2-device mesh with a rule that shards the slots."""
  config = model()[0]
  mesh = AbstractMesh((2,), ("data",))
  rules = (("batch", None), ("length", "data"))
  n, d = config.num_kv_heads, config.head_dim
  for impl, slots in (("xla", 32), ("pallas_interpret", 256)):
    settings = SamplingConfig(max_new_tokens=16, attention=impl)
    state = state_shapes(config, settings, 4, 16)
    shardings = state_shardings(mesh, state, rules, settings).cache
    assert len(shardings) == config.num_layers
    for (k, v), (k_shape, v_shape) in zip(shardings, state.cache):
      assert v.spec == P(None, None, "data", None) and v_shape.shape == (4, n, slots, d)
      if impl == "xla":
        assert k.spec == P(None, None, None, "data") and k_shape.shape == (4, n, d, slots)
      else:
        assert k.spec == v.spec and k_shape.shape == v_shape.shape


# ----------------------------------------------------------------------------- 8 simulated devices

_SHARDED_CHECK = """
import json
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from prime_jax.models import load_hf_checkpoint
from prime_jax.sampling import (SamplingConfig, init_cache_like, sample_args, sample_jit,
                                static_args)
from prime_jax.scoring import pad_sequences
from prime_jax.sharding import (DECODE_RULES, DEFAULT_RULES, make_mesh, param_shardings,
                                reshard_params)

assert jax.device_count() == 8
directory = DIRECTORY
config, params = load_hf_checkpoint(directory)
tokens, valid = pad_sequences([[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21], [30, 31, 32, 33]],
                              left=True)
settings = {"greedy": SamplingConfig(max_new_tokens=16, temperature=0.0, n_samples=2),
            "sampled": SamplingConfig(max_new_tokens=16, temperature=1.0, top_k=20, n_samples=2,
                                      eos_ids=(3, 7, 11, 40))}


def run(p, rules, setting):
    # What `sample` runs, lowered here so the compiled program's shardings can be checked.
    args, static = sample_args(p, tokens, valid, jax.random.key(3), model_config=config,
                                config=settings[setting], rules=rules)
    compiled = sample_jit.lower(*args, **static).compile()
    (params_in, _, _, _, state_in), _ = compiled.input_shardings
    out_s, state_out = compiled.output_shardings
    cache = args[-1].cache[0][0].sharding  # read before the call donates it
    out, _ = compiled(*args)
    return jax.device_get(out), dict(
        cache=cache, cache_in=state_in.cache[0][0], cache_out=state_out.cache[0][0],
        tokens_out=out_s.tokens, logprobs_out=out_s.logprobs, mask_out=out_s.mask,
        tokens=out.tokens.sharding, q_in=params_in["layers"]["self_attn"]["q_proj"]["kernel"])


reference = {s: run(params, DEFAULT_RULES, s)[0] for s in settings}
checked, lm_head = [], None
for axes, rules in [({"data": 8}, DEFAULT_RULES), ({"fsdp": 4, "tensor": 2}, DEFAULT_RULES),
                    ({"data": 2, "fsdp": 4}, DEFAULT_RULES), ({"fsdp": 4, "tensor": 2}, DECODE_RULES)]:
    mesh = make_mesh(axes)
    _, trained = load_hf_checkpoint(directory, shardings=param_shardings(config, mesh))
    p = reshard_params(trained, config, mesh, rules)  # the sampler's layout (a no-op if the same)
    has = lambda *names: tuple(a for a in names if a in mesh.axis_names)
    one = lambda names: None if not names else names[0] if len(names) == 1 else names
    # The rules written out: params embed over fsdp (not with DECODE_RULES), heads over tensor;
    # each layer's cache [batch, kv_heads, slots, head_dim] and output rows: batch over data x fsdp.
    fsdp = None if rules is DECODE_RULES else one(has("fsdp"))
    want_q = NamedSharding(mesh, P(None, fsdp, one(has("tensor")), None))
    want_cache = NamedSharding(mesh, P(one(has("data", "fsdp")), one(has("tensor")), None, None))
    want_rows = NamedSharding(mesh, P(one(has("data", "fsdp")), None))
    q = p["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.is_equivalent_to(want_q, 4), (axes, q.sharding)
    if rules is DEFAULT_RULES and "tensor" in mesh.axis_names:
        lm_head = tuple(p["lm_head"]["kernel"].sharding.spec)
    assert init_cache_like(p, config, 8, 32, rules=rules)[0][0].sharding.is_equivalent_to(want_cache, 4)
    for s in settings:
        out, sh = run(p, rules, s)
        assert sh["q_in"].is_equivalent_to(want_q, 4), (axes, sh["q_in"])
        for key in ("cache", "cache_in", "cache_out"):
            assert sh[key].is_equivalent_to(want_cache, 4), (axes, key, sh[key])
        for key in ("tokens_out", "logprobs_out", "mask_out", "tokens"):
            assert sh[key].is_equivalent_to(want_rows, 2), (axes, key, sh[key])
        np.testing.assert_array_equal(out.tokens, reference[s].tokens)
        np.testing.assert_array_equal(out.lengths, reference[s].lengths)
        np.testing.assert_allclose(out.logprobs, reference[s].logprobs, atol=1e-5)
        checked.append([axes, rules is DECODE_RULES, s])
    try:  # the Pallas kernel is not sharding-aware: refused on a mesh of several devices
        static_args(config, SamplingConfig(max_new_tokens=4, attention="pallas_gpu"), mesh, rules)
        raise AssertionError("pallas attention accepted on a sharded mesh")
    except ValueError as e:
        assert "runs on one device" in str(e)
print(json.dumps(dict(checked=checked, lm_head=lm_head,
                      sampled_lengths=reference["sampled"].lengths.tolist())))
"""


@pytest.mark.slow
def test_meshes_and_sampler_layout_match_single_device(tmp_path):
  """Greedy and temperature-sampled tokens and log-probs on 8 devices under pure data, fsdp x
  tensor and data x fsdp meshes, and in a decode layout resharded from the training one
  (DECODE_RULES), equal one device's; the compiled sampler's params, KV cache and outputs are
  sharded as the rules say."""
  from hf_fixtures import make_tiny_hf_model

  make_tiny_hf_model(str(tmp_path), "qwen2", vocab=128)  # vocab divisible by the tensor axis
  result = json.loads(
      run_with_devices(_SHARDED_CHECK.replace("DIRECTORY", repr(str(tmp_path))))
      .strip()
      .splitlines()[-1]
  )
  assert len(result["checked"]) == 8, result["checked"]
  assert {c[1] for c in result["checked"]} == {True, False}  # training and decode layouts
  assert result["lm_head"] == ["fsdp", "tensor"]
  lengths = result["sampled_lengths"]
  assert min(lengths) < 16 and len(set(lengths)) > 1  # rows stopped at EOS at different steps
