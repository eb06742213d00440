r"""Per-device bytes of each item of a memory plan (`prime_jax.memory_plan`).

The exact items (params, optimiser states, reference, KV cache) are shard shapes of the real
shardings, with `fit_to_shape` semantics (a dimension its mesh axes do not divide is replicated).
The other items (marked `~` in the table) are ESTIMATES, by these formulas:

Update step, for one micro-batch of b rows per device (micro_batch over the `batch` ways, rounded
up) of s = max_prompt_len + max_new_tokens tokens, L layers:

  gradients = 2 * params              the scan's accumulator + the micro-batch's own gradient
  saved     = L * R_layer(remat) + R_rest          what the backward pass keeps
  working   = R_layer(none)                        one layer at a time: its gradient temporaries
                                                   (none) or the layer recomputed (full, dots)
  logits    = 4 * b * score_chunk * vocab/tensor * 4 B   (f32 logits, exp, softmax * logits for
                                                   the entropy, d logits: one chunk at a time)
  gathered  = (2 * layer weights + lm_head) * (compute bytes) + (layer + lm_head) * 4 B
                                                   FSDP all-gathers (current + prefetched layer)
                                                   and their f32 grads before reduce-scatter

R_layer / R_rest are measured, not hand-counted: JAX's own `saved_residuals` of
`prime_jax.scoring.token_logprobs` (the step's scoring path: the decoder under `nn.scan` with the
configured remat, then the `jax.checkpoint`ed log-prob chunks) traced at per-device shapes (heads,
kv heads, MLP width and vocab divided by the ways the rules give them) for (layers, rows) =
(2, 1), (3, 1), (2, 2); the differences give the per-layer / rest and per-row / weight-sized
(compute-dtype weight copies, divided by the `embed` ways) parts. For Qwen2.5-7B at s=4096 in
bfloat16 one layer saves ~4.3 GiB per row without remat (three [heads, s, s] attention arrays:
this decoder has no flash attention) and 28 MiB with remat=full.

Sampling, in the sampler's layout (`config.sampler_rules`; a resharded params copy when they
differ from the training rules): the KV cache (exact) and one k/v-sized temporary XLA keeps, the
prefill's transients (its own [B, P] cache, the n-fold copy, one layer's [B/ways, heads, P, P]
attention and MLP), FSDP-gathered weights (2 layers + lm_head, compute dtype) and [rows, vocab]
f32 decode logits. With `config.ref.offload` the reference leaves the resident set and appears,
copied to the devices, in a "reference forward" phase of its own.

Accuracy, checked against XLA's compiled `memory_analysis()` (temp bytes per device) on
simulated host devices, float32 compute, the full Eurus-2-7B config on 32 devices: update step
within -4 % .. +8 % (fsdp=32, fsdp=8 x tensor=4, data=2 x fsdp=16; remat none / full / dots; 1 and
2 rows per device), sampling +12 % .. +16 % over (sample_batch_prompts 256 / 128 / 64; fsdp=32,
fsdp=8 x tensor=4, data=2 x fsdp=4 x tensor=4); a 4-layer model on 8 devices within 11 % for the
update step; resident states exact. bfloat16 compute cannot be checked on CPU (XLA:CPU runs bf16
matmuls through f32 copies: its buffers came out ~1.4x our bf16 numbers); on TPU / GPU the bf16
estimate is unverified. Full-scale compiles (`plan --compile`, experiments/results/
full_scale_compile.md: 7B, bf16, 8 devices): update step temporaries -21 % of XLA:CPU's, sampling
-54 % (bf16, XLA:CPU's f32 copies) and +56 % (f32). Not modelled: the runtime's reserved memory, collective buffers and
fragmentation: keep ~10 % headroom.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import AbstractMesh, AxisType, NamedSharding

from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer, update_step_shardings
from prime_jax.config_checks import ref_options
from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import CACHE_AXES, init_cache, init_params
from prime_jax.scoring import token_logprobs
from prime_jax.sharding import DEFAULT_RULES, fit_to_shape, logical_sharding
from prime_jax.train_state import create_train_state

# ---------------------------------------------------------------------------------------------
# Meshes and shard sizes.
# ---------------------------------------------------------------------------------------------


def abstract_mesh(sizes: Mapping[str, int]) -> AbstractMesh:
  return AbstractMesh(tuple(sizes.values()), tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))


def shard_bytes(shape: Sequence[int], dtype, sharding: NamedSharding) -> int:
  """Bytes of one device's shard (after `fit_to_shape`: undivided dims are replicated)."""
  local = fit_to_shape(sharding, shape).shard_shape(tuple(shape))
  return math.prod(local) * jnp.dtype(dtype).itemsize


def tree_shard_bytes(abstract_tree, sharding_tree) -> int:
  leaves = jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(
          lambda a, s: shard_bytes(a.shape, a.dtype, s), abstract_tree, sharding_tree
      )
  )
  return int(sum(leaves))


def rule_table(config, field: str = "sharding_rules"):
  """The rule tuple of `config.sharding_rules` (() = DEFAULT_RULES), or of `config.sampler_rules`
  (() = the training rules) for field="sampler_rules"."""
  fix = lambda axes: tuple(axes) if isinstance(axes, (list, tuple)) else axes
  rules = tuple((str(logical), fix(axes)) for logical, axes in (config.get(field) or ()))
  if rules:
    return rules
  return rule_table(config) if field != "sharding_rules" else DEFAULT_RULES


def axis_ways(rules, mesh_sizes: Mapping[str, int], logical: str) -> int:
  """How many ways the rule table splits the logical axis `logical` on this mesh."""
  for name, axes in rules:
    if name == logical:
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      return math.prod(mesh_sizes.get(a, 1) for a in names)
  return 1


def ceil_div(a: int, b: int) -> int:
  """a / b rounded up (rows per device when b devices split a rows, padded)."""
  return -(-a // b)


# ---------------------------------------------------------------------------------------------
# Exact items: states, reference, KV cache.
# ---------------------------------------------------------------------------------------------


def reference_dtype(config) -> tuple[str, bool]:
  """(dtype the trainer holds the frozen reference's params in: `config_checks.ref_options`, float32
  for a config without a `ref` section; whether the config has that section)."""
  return str(ref_options(config).param_dtype), config.get("ref") is not None


class _StateKey:
  """A config, hashed by the fields that decide which states exist and their dtypes (the
  optimisers' hyperparameters do not change their shapes), so `_state_bytes` can be cached."""

  def __init__(self, config, model_config: DecoderConfig):
    rl = config.rl
    self.config = config
    self.key = (
        rl.process_reward,
        rl.estimator,
        rl.coef_proc,
        rl.kl_coef,
        rl.ref_type,
        reference_dtype(config)[0],
    )

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, _StateKey) and self.key == other.key


@functools.lru_cache(maxsize=64)
def _state_bytes(
    state_key: _StateKey, model_config: DecoderConfig, mesh_items: tuple, rules: tuple
):
  """{policy_params, policy_opt, prm_params, prm_opt, ref} per-device bytes (None = absent)."""
  config = state_key.config

  mesh = abstract_mesh(dict(mesh_items))
  if ref_options(config).offload:  # host-memory shardings need real devices; same shard shapes
    config = with_changes(config, **{"ref.offload": False})
  shardings = update_step_shardings(config, mesh, model_config, rules=rules)
  params = lambda: init_params(model_config, jax.random.key(0))
  out = {}
  for name, opt, sh in (
      ("policy", policy_optimizer(config.rl), shardings["policy"]),
      ("prm", prm_optimizer(config.rl), shardings["prm"]),
  ):
    if sh is None:
      out[f"{name}_params"] = out[f"{name}_opt"] = None
      continue
    state = jax.eval_shape(lambda opt=opt: create_train_state(params(), opt))
    out[f"{name}_params"] = tree_shard_bytes(state.params, sh.params)
    out[f"{name}_opt"] = tree_shard_bytes(state.opt_state, sh.opt_state) + tree_shard_bytes(
        state.step, sh.step
    )
  out["ref"] = None
  if shardings["ref"] is not None:
    ref_dtype, _ = reference_dtype(config)
    abstract = jax.eval_shape(params)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, ref_dtype), abstract)
    out["ref"] = tree_shard_bytes(abstract, shardings["ref"])
  return out


def with_changes(config, **changes):
  """A copy of `config` with dotted fields changed ({"rl.micro_batch": 4})."""
  new = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in changes.items():
    section, _, field = dotted.rpartition(".")
    target = new
    for part in filter(None, section.split(".")):
      target = target[part]
    target[field] = value
  return new


def resident_state_bytes(config, model_config, mesh_sizes, rules):
  """{policy_params, policy_opt, prm_params, prm_opt, ref} per-device bytes (None = absent) of
  `config`'s run on a mesh of `mesh_sizes` under `rules`; cached by what decides them."""
  return _state_bytes(
      _StateKey(config, model_config), model_config, tuple(mesh_sizes.items()), rules
  )


def cache_shape(model_config: DecoderConfig, rows: int, slots: int) -> tuple[int, ...]:
  """Shape of each layer's values, [rows, kv_heads, slots, head_dim] (`CACHE_AXES`; the keys hold
  as many elements, in the decode attention's order: `prime_jax.models.decoder.init_cache`)."""
  one_layer = model_config.replace(num_layers=1)
  _, v = jax.eval_shape(lambda: init_cache(one_layer, rows, slots))[0]
  return v.shape


def cache_bytes(
    model_config: DecoderConfig, rows: int, slots: int, mesh: AbstractMesh, rules
) -> int:
  """Per-device bytes of the sampler's KV cache (k + v of every layer), sharded as
  `prime_jax.sampling` does."""
  shape = cache_shape(model_config, rows, slots)
  per_array = shard_bytes(shape, model_config.dtype, logical_sharding(mesh, CACHE_AXES, rules))
  return 2 * model_config.num_layers * per_array


# ---------------------------------------------------------------------------------------------
# Activation estimate: saved residuals of the scoring path, measured by JAX at local shapes.
# ---------------------------------------------------------------------------------------------


def local_model(model_config: DecoderConfig, heads: int, mlp: int, vocab: int) -> DecoderConfig:
  """The per-device slice of the model under tensor parallelism (undivided dims replicated)."""
  c = model_config
  div = lambda n, w: n // w if w > 1 and n % w == 0 else n
  nh, nkv = div(c.num_heads, heads), div(c.num_kv_heads, heads)
  if nh % nkv:  # q heads split but kv heads replicated: XLA would not split attention cleanly
    nh, nkv = c.num_heads, c.num_kv_heads
  return c.replace(
      num_heads=nh,
      num_kv_heads=nkv,
      intermediate_size=div(c.intermediate_size, mlp),
      vocab_size=div(c.vocab_size, vocab),
      value_head=False,
  )


@functools.lru_cache(maxsize=64)
def residual_profile(
    local: DecoderConfig, prompt_len: int, response_len: int, chunk: int, with_entropy: bool
) -> dict:
  """Bytes JAX saves for the backward pass of `token_logprobs` on the (local) model, split as
  {layer_row, layer_fixed, rest_row, rest_fixed}: saved = L * (layer_row * b + layer_fixed)
  + rest_row * b + rest_fixed for b rows. Arguments (params, tokens) are not counted."""
  from jax._src.ad_checkpoint import saved_residuals  # what print_saved_residuals prints

  def total(layers: int, rows: int) -> int:
    cfg = local.replace(num_layers=layers)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
    args = (
        spec((rows, prompt_len), jnp.int32),
        spec((rows, prompt_len), jnp.bool_),
        spec((rows, response_len), jnp.int32),
        spec((rows, response_len), jnp.bool_),
    )
    fn = lambda p, *a: token_logprobs(
        p, *a, config=cfg, chunk_size=chunk, with_entropy=with_entropy
    )
    return sum(
        aval.size * aval.dtype.itemsize
        for aval, src in saved_residuals(fn, params, *args)
        if not src.startswith("from the argument")
    )

  # saved(L, b) = L * (layer_row * b + layer_fixed) + rest_row * b (+ a few scalars, ignored).
  r21, r31, r22 = total(2, 1), total(3, 1), total(2, 2)
  layer_fixed = (r21 - (r22 - r21)) // 2
  layer_row = (r31 - r21) - layer_fixed
  rest_row = (r22 - r21) - 2 * layer_row
  rest_fixed = 0
  return dict(
      layer_row=layer_row, layer_fixed=layer_fixed, rest_row=rest_row, rest_fixed=rest_fixed
  )


def activation_estimate(
    model_config: DecoderConfig,
    *,
    rows: int,
    prompt_len: int,
    response_len: int,
    chunk: int,
    heads_ways: int,
    mlp_ways: int,
    vocab_ways: int,
    embed_ways: int,
) -> dict:
  """{saved, working, logits} bytes per device for one micro-batch of `rows` rows (see module
  docstring for the formula)."""
  local = local_model(model_config, heads_ways, mlp_ways, vocab_ways)
  chunk = min(chunk, response_len)
  profile = lambda remat: residual_profile(
      local.replace(remat=remat), prompt_len, response_len, chunk, True
  )

  def layer(p):
    return p["layer_row"] * rows + p["layer_fixed"] / embed_ways

  prof = profile(model_config.remat)
  none = prof if model_config.remat == "none" else profile("none")
  saved = (
      model_config.num_layers * layer(prof)
      + prof["rest_row"] * rows
      + prof["rest_fixed"] / embed_ways
  )
  working = layer(none)  # see the module docstring: calibrated against XLA's own buffer sizes
  logits = 4 * rows * chunk * local.vocab_size * 4
  return dict(saved=int(saved), working=int(working), logits=int(logits), local=local)


def gathered_weights(
    model_config: DecoderConfig,
    heads_ways: int,
    mlp_ways: int,
    vocab_ways: int,
    embed_ways: int,
    forward_only: bool = False,
) -> int:
  """FSDP transients: two layers' weights all-gathered in the compute dtype (the one in use and
  the next, prefetched), one layer's f32 gradient before its reduce-scatter, and the same for the
  output projection the log-prob chunks use (`forward_only`: no gradients, as in sampling). Zero
  without FSDP (`embed` unsplit)."""
  if embed_ways <= 1:
    return 0
  local = local_model(model_config, heads_ways, mlp_ways, vocab_ways)
  compute = jnp.dtype(model_config.dtype).itemsize
  grad = 0 if forward_only else jnp.dtype(model_config.param_dtype).itemsize
  h, d = local.hidden_size, local.head_dim
  layer = h * d * (2 * local.num_heads + 2 * local.num_kv_heads) + 3 * h * local.intermediate_size
  head = h * local.vocab_size
  return int(layer * (2 * compute + grad) + head * (compute + grad))
