r"""Per-device memory plan of a PRIME run from shapes alone: nothing is allocated, no device needed.

`plan(config, mesh_axes, hardware, model_config)` builds an abstract mesh of the slice's devices
(`jax.sharding.AbstractMesh`), takes the run's real shardings (`update_step_shardings` with the
config's rule table, the KV cache's `CACHE_AXES`) and the real optimiser states
(`create_train_state` with `policy_optimizer` / `prm_optimizer` under `jax.eval_shape`), and adds
up the bytes one device holds, item by item:

* resident for the whole run: policy params + AdamW moments, PRM params + AdamW moments (when the
  step runs the PRM), the frozen reference (when one is needed);
* update step (peak = resident + these): gradients (the micro-batch accumulator plus the
  micro-batch's own gradient), activations, the chunked log-prob logits, the FSDP-gathered
  weights, the step's inputs;
* sampling (peak = resident + these): the KV cache of `sample_batch_prompts x n_samples` rows and
  `max_prompt_len + max_new_tokens` slots, the prefill's transients, the decode logits.

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

import dataclasses
import functools
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import AbstractMesh, AxisType, NamedSharding

from prime_jax.models.config import DecoderConfig

GiB = 2**30

# ---------------------------------------------------------------------------------------------
# Hardware: per-device HBM and how a slice name counts devices.
# ---------------------------------------------------------------------------------------------

# TPU generation -> (HBM per chip in GiB, name units per chip). v4 / v5p names count TensorCores
# (2 per chip, one JAX device per chip: megacore), v5e / v6e names count chips (cloud.google.com
# /tpu/docs: "v5p-32 = 32 TensorCores, 16 chips"; v5p 95 GB, v4 32 GiB, v5e 16 GB, v6e 32 GB).
TPU_TYPES = {"v4": (32, 2), "v5p": (95, 2), "v5e": (16, 1), "v5litepod": (16, 1), "v6e": (32, 1)}
# GPU model -> HBM in GiB (what the device reports, approximately).
GPU_TYPES = {"H100": 80, "H200": 141, "A100-40G": 40, "A100-80G": 80}
# JAX on GPU preallocates this fraction of the memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION).
GPU_DEFAULT_MEM_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Hardware:
  """A slice: `num_devices` JAX devices of `hbm_bytes` each, of which `usable_fraction` is the
  allocator's (JAX on GPU preallocates 75 % unless XLA_PYTHON_CLIENT_MEM_FRACTION says else)."""

  name: str
  platform: str
  num_devices: int
  hbm_bytes: int
  usable_fraction: float = 1.0

  @property
  def usable_bytes(self) -> int:
    return int(self.hbm_bytes * self.usable_fraction)


def hardware_names() -> str:
  return (
      "TPU " + ", ".join(f"{k}-N" for k in TPU_TYPES) + " (v4/v5p: N TensorCores = N/2 "
      "chips; v5e/v6e: N chips); GPU Nx" + "|".join(GPU_TYPES) + "; cpu-N"
  )


def parse_hardware(name: str, *, mem_fraction: Optional[float] = None) -> Hardware:
  """'v5p-64' (32 chips), 'v4-32' (16 chips), 'v5e-256', 'v6e-8', '8xH100', '8xA100-80G',
  'H200' (one GPU), 'cpu-8' (simulated host devices, host memory split between them)."""
  text = name.strip()
  m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text, re.IGNORECASE)
  if m:
    kind, count = m.group(1).lower(), int(m.group(2))
    hbm, per_chip = TPU_TYPES[kind]
    if count % per_chip or count == 0:
      raise ValueError(
          f"{name}: a {kind} slice name counts TensorCores ({per_chip} per chip); "
          f"{count} is not a whole number of chips"
      )
    return Hardware(
        text, "tpu", count // per_chip, hbm * GiB, 1.0 if mem_fraction is None else mem_fraction
    )
  m = re.fullmatch(r"(?:(\d+)\s*x\s*)?([A-Za-z0-9-]+)", text)
  if m and m.group(2).upper() in GPU_TYPES:
    count = int(m.group(1) or 1)
    frac = GPU_DEFAULT_MEM_FRACTION if mem_fraction is None else mem_fraction
    return Hardware(text, "gpu", count, GPU_TYPES[m.group(2).upper()] * GiB, frac)
  if m and m.group(2).upper() == "A100":
    raise ValueError(f"{name}: say A100-40G or A100-80G")
  m = re.fullmatch(r"cpu-(\d+)", text, re.IGNORECASE)
  if m:
    count = int(m.group(1))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Hardware(
        text, "cpu", count, total // count, 1.0 if mem_fraction is None else mem_fraction
    )
  raise ValueError(f"unknown hardware {name!r}; known: " + hardware_names())


# ---------------------------------------------------------------------------------------------
# Model shapes: presets of known HF configs, a checkpoint's config.json, or config.policy.init.
# ---------------------------------------------------------------------------------------------

# Qwen2.5-Math-7B's config.json (Eurus-2-7B-SFT / -PRIME are fine-tunes of it, same shapes):
# Qwen2ForCausalLM, hidden 3584, 28 layers, 28 heads / 4 kv heads (head_dim 128), intermediate
# 18944, vocab 152064, untied embeddings, q/k/v biases, rope_theta 10000, a 4096-token context.
MODEL_PRESETS = {
    "qwen2.5-math-7b": DecoderConfig(
        vocab_size=152064,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        intermediate_size=18944,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        qkv_bias=True,
        tie_embeddings=False,
        max_position_embeddings=4096,
        model_type="qwen2",
    ),
}
MODEL_ALIASES = {
    "eurus-2-7b-sft": "qwen2.5-math-7b",
    "eurus-2-7b-prime": "qwen2.5-math-7b",
    "qwen2.5-math-7b-instruct": "qwen2.5-math-7b",
}


def _preset(name: str) -> Optional[DecoderConfig]:
  key = name.strip().lower()
  return MODEL_PRESETS.get(MODEL_ALIASES.get(key, key))


def resolve_model_config(config, model: Optional[str] = None) -> tuple[DecoderConfig, str]:
  """(DecoderConfig with the run's dtype / remat / value head, where its shapes came from).

  Order: the `model` preset; config.json of `config.policy.checkpoint` when that directory exists;
  a preset named like the checkpoint directory (a placeholder path such as /path/to/Eurus-2-7B-SFT);
  `config.policy.init` (its vocab_size must be set: 0 means "the tokenizer's").
  """
  overrides = dict(
      dtype=config.policy.dtype, remat=config.policy.remat, value_head=config.rl.estimator == "ppo"
  )
  if model:
    preset = _preset(model)
    if preset is None:
      raise ValueError(
          f"unknown --model {model!r}; known: "
          + ", ".join(sorted(MODEL_PRESETS) + sorted(MODEL_ALIASES))
      )
    return preset.replace(**overrides), f"preset {model}"
  checkpoint = config.policy.checkpoint
  if checkpoint and os.path.isfile(os.path.join(checkpoint, "config.json")):
    from prime_jax.models import read_hf_config

    return read_hf_config(checkpoint, **overrides), f"{checkpoint}/config.json"
  if checkpoint:
    preset = _preset(os.path.basename(os.path.normpath(checkpoint)))
    if preset is not None:
      return preset.replace(**overrides), (
          f"preset for {os.path.basename(checkpoint)} " f"({checkpoint} not found)"
      )
    raise ValueError(
        f"config.policy.checkpoint={checkpoint!r} has no config.json here; give "
        f"--model (one of {', '.join(sorted(MODEL_PRESETS))})"
    )
  init = dict(config.policy.init)
  if not init.get("vocab_size"):
    raise ValueError(
        "config.policy.init.vocab_size is 0 (the tokenizer's size, unknown to the "
        "planner): set --config.policy.init.vocab_size=N or give --model"
    )
  return DecoderConfig(**init, **overrides), "config.policy.init"


# ---------------------------------------------------------------------------------------------
# Meshes and shard sizes.
# ---------------------------------------------------------------------------------------------


def abstract_mesh(sizes: Mapping[str, int]) -> AbstractMesh:
  return AbstractMesh(tuple(sizes.values()), tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))


def shard_bytes(shape: Sequence[int], dtype, sharding: NamedSharding) -> int:
  """Bytes of one device's shard (after `fit_to_shape`: undivided dims are replicated)."""
  from prime_jax.sharding import fit_to_shape

  local = fit_to_shape(sharding, shape).shard_shape(tuple(shape))
  return math.prod(local) * jnp.dtype(dtype).itemsize


def tree_shard_bytes(abstract_tree, sharding_tree) -> int:
  leaves = jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(
          lambda a, s: shard_bytes(a.shape, a.dtype, s), abstract_tree, sharding_tree
      )
  )
  return int(sum(leaves))


def _rules(config, field: str = "sharding_rules"):
  """The rule tuple of `config.sharding_rules` (() = DEFAULT_RULES), or of `config.sampler_rules`
  (() = the training rules) for field="sampler_rules"."""
  from prime_jax.sharding import DEFAULT_RULES

  fix = lambda axes: tuple(axes) if isinstance(axes, (list, tuple)) else axes
  rules = tuple((str(logical), fix(axes)) for logical, axes in (config.get(field) or ()))
  if rules:
    return rules
  return _rules(config) if field != "sharding_rules" else DEFAULT_RULES


def axis_ways(rules, mesh_sizes: Mapping[str, int], logical: str) -> int:
  """How many ways the rule table splits the logical axis `logical` on this mesh."""
  for name, axes in rules:
    if name == logical:
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      return math.prod(mesh_sizes.get(a, 1) for a in names)
  return 1


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


# ---------------------------------------------------------------------------------------------
# Exact items: states, reference, KV cache.
# ---------------------------------------------------------------------------------------------


def _ref_options(config) -> tuple[Optional[str], bool]:
  """(`config.ref.param_dtype`, or None for a config without that field; `config.ref.offload`)."""
  ref = config.get("ref")
  if ref is None:
    return None, False
  return ref.get("param_dtype"), bool(ref.get("offload", False))


def _ref_dtype(config, model_config: DecoderConfig) -> tuple[str, bool]:
  """(dtype the frozen reference's params are held in, whether the config has a field for it)."""
  dtype, _ = _ref_options(config)
  return (str(dtype), True) if dtype else (model_config.param_dtype, False)


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
        _ref_dtype(config, model_config)[0],
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
  from prime_jax.algo.update_step import (policy_optimizer, prm_optimizer, update_step_shardings)
  from prime_jax.models.decoder import init_params
  from prime_jax.train_state import create_train_state

  mesh = abstract_mesh(dict(mesh_items))
  if _ref_options(config)[1]:  # host-memory shardings need real devices; same shard shapes
    config = _with(config, **{"ref.offload": False})
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
    ref_dtype, _ = _ref_dtype(config, model_config)
    abstract = jax.eval_shape(params)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, ref_dtype), abstract)
    out["ref"] = tree_shard_bytes(abstract, shardings["ref"])
  return out


def _states(config, model_config, mesh_sizes, rules):
  return _state_bytes(
      _StateKey(config, model_config), model_config, tuple(mesh_sizes.items()), rules
  )


def cache_shape(model_config: DecoderConfig, rows: int, slots: int) -> tuple[int, ...]:
  """Shape of each layer's k and v arrays (`prime_jax.models.decoder.init_cache`)."""
  from prime_jax.models.decoder import init_cache

  one_layer = model_config.replace(num_layers=1)
  k, _ = jax.eval_shape(lambda: init_cache(one_layer, rows, slots))[0]
  return k.shape


def cache_bytes(
    model_config: DecoderConfig, rows: int, slots: int, mesh: AbstractMesh, rules
) -> int:
  """Per-device bytes of the sampler's KV cache (k + v of every layer), sharded as
  `prime_jax.sampling` does."""
  from prime_jax.models.decoder import CACHE_AXES
  from prime_jax.sharding import logical_sharding

  shape = cache_shape(model_config, rows, slots)
  per_array = shard_bytes(shape, model_config.dtype, logical_sharding(mesh, CACHE_AXES, rules))
  return 2 * model_config.num_layers * per_array


# ---------------------------------------------------------------------------------------------
# Activation estimate: saved residuals of the scoring path, measured by JAX at local shapes.
# ---------------------------------------------------------------------------------------------


def _local_model(model_config: DecoderConfig, heads: int, mlp: int, vocab: int) -> DecoderConfig:
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
  from prime_jax.models.decoder import init_params
  from prime_jax.scoring import token_logprobs

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
  local = _local_model(model_config, heads_ways, mlp_ways, vocab_ways)
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


def _gathered_weights(
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
  local = _local_model(model_config, heads_ways, mlp_ways, vocab_ways)
  compute = jnp.dtype(model_config.dtype).itemsize
  grad = 0 if forward_only else jnp.dtype(model_config.param_dtype).itemsize
  h, d = local.hidden_size, local.head_dim
  layer = h * d * (2 * local.num_heads + 2 * local.num_kv_heads) + 3 * h * local.intermediate_size
  head = h * local.vocab_size
  return int(layer * (2 * compute + grad) + head * (compute + grad))


# ---------------------------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------------------------

PHASES = {"update": "update step", "ref_forward": "reference forward", "sampling": "sampling"}


@dataclasses.dataclass
class Item:
  key: str
  label: str
  bytes: int
  phase: str  # "resident", or one of PHASES (on top of resident, one phase at a time)
  exact: bool
  note: str = ""


@dataclasses.dataclass
class Plan:
  """Per-device bytes of each item, each phase's peak and the verdict against the hardware."""

  hardware: Hardware
  mesh: dict
  model_config: DecoderConfig
  model_source: str
  items: list
  notes: list
  suggestions: list = dataclasses.field(default_factory=list)

  def bytes(self, key: str) -> int:
    for item in self.items:
      if item.key == key:
        return item.bytes
    raise KeyError(f"no item {key!r}; items: {[i.key for i in self.items]}")

  def has(self, key: str) -> bool:
    return any(item.key == key for item in self.items)

  def total(self, phase: str) -> int:
    return sum(i.bytes for i in self.items if i.phase == phase)

  @property
  def resident(self) -> int:
    return self.total("resident")

  def phase_peak(self, phase: str) -> int:
    return self.resident + self.total(phase)

  @property
  def phases(self) -> list:
    return [ph for ph in PHASES if any(i.phase == ph for i in self.items)]

  @property
  def update_peak(self) -> int:
    return self.phase_peak("update")

  @property
  def sampling_peak(self) -> int:
    return self.phase_peak("sampling")

  @property
  def peak(self) -> int:
    return max(self.phase_peak(ph) for ph in self.phases)

  @property
  def binding_phase(self) -> str:
    return PHASES[max(self.phases, key=self.phase_peak)]

  @property
  def usable(self) -> int:
    return self.hardware.usable_bytes

  @property
  def fits(self) -> bool:
    return self.peak <= self.usable

  @property
  def headroom(self) -> int:
    return self.usable - self.peak

  def verdict(self) -> str:
    pct = 100 * self.headroom / self.usable
    if self.fits:
      tight = " (tight: keep ~10 % for XLA's own buffers)" if pct < 10 else ""
      return (
          f"fits: peak {_gib(self.peak)} ({self.binding_phase}) of {_gib(self.usable)} "
          f"usable per device, headroom {_gib(self.headroom)} ({pct:.0f} %){tight}"
      )
    return (
        f"does not fit: peak {_gib(self.peak)} ({self.binding_phase}) exceeds "
        f"{_gib(self.usable)} usable per device by {_gib(-self.headroom)}"
    )

  def to_markdown(self) -> str:
    hw, mc = self.hardware, self.model_config
    mesh = ",".join(f"{k}={v}" for k, v in self.mesh.items())
    frac = (
        f" x {hw.usable_fraction:g} usable = {_gib(hw.usable_bytes)}"
        if hw.usable_fraction != 1
        else ""
    )
    lines = [
        f"**{hw.name}**: {hw.num_devices} devices x {_gib(hw.hbm_bytes)} HBM{frac}; mesh {mesh}; "
        f"model {self.model_source} ({mc.num_params / 1e9:.2f} B params, {mc.num_layers} layers, "
        f"param {mc.param_dtype}, compute {mc.dtype}, remat {mc.remat})",
        "",
        "| item | per device | |",
        "|---|---:|---|",
    ]
    for phase in ["resident"] + self.phases:
      for item in (i for i in self.items if i.phase == phase):
        kind = "" if item.exact else " ~"
        lines.append(f"| {item.label} | {_gib(item.bytes)}{kind} | {item.note} |")
      if phase == "resident":
        lines.append(f"| **resident (whole run): total** | **{_gib(self.resident)}** | |")
      else:
        lines.append(
            f"| **{PHASES[phase]} (on top of resident): peak** | "
            f"**{_gib(self.phase_peak(phase))}** | |"
        )
    lines += ["", f"**{self.verdict()}**", ""]
    if self.suggestions:
      lines += ["To make it fit:" if not self.fits else "To gain headroom:"]
      lines += [f"- {s}" for s in self.suggestions] + [""]
    if self.notes:
      lines += ["Notes:"] + [f"- {n}" for n in self.notes] + [""]
    lines.append(
        "`~` = estimate (see `prime_jax/memory_plan.py` for the formula); the rest are "
        "exact shard sizes of the run's shardings."
    )
    return "\n".join(lines)


def _gib(n: float) -> str:
  return f"{n / GiB:.2f} GiB" if abs(n) >= GiB / 100 or n == 0 else f"{n / 2 ** 20:.2f} MiB"


def _hardware(hardware, mem_fraction=None) -> Hardware:
  return (
      hardware
      if isinstance(hardware, Hardware)
      else parse_hardware(hardware, mem_fraction=mem_fraction)
  )


def plan(
    config,
    mesh_axes: Optional[Mapping[str, int]] = None,
    hardware: Any = "v5p-64",
    model_config: Optional[DecoderConfig] = None,
    *,
    model_source: str = "",
    suggest: bool = True,
    mem_fraction: Optional[float] = None,
) -> Plan:
  """The per-device memory plan of `config` on `hardware` (a name or a `Hardware`).

  `mesh_axes` defaults to `config.mesh` (one axis may be -1); `model_config` defaults to
  `resolve_model_config(config)`. With `suggest`, a plan that does not fit (or has under 10 %
  headroom) lists the config flags that would make it fit, each checked by planning again.
  """
  hw = _hardware(hardware, mem_fraction)
  if model_config is None:
    model_config, model_source = resolve_model_config(config)
  model_source = model_source or "given DecoderConfig"
  from prime_jax.algo.update_step import check_rl_config

  rl = config.rl
  check_rl_config(rl)
  from prime_jax.sharding import mesh_sizes as sizes_on

  mesh_sizes = sizes_on(dict(config.mesh) if mesh_axes is None else dict(mesh_axes), hw.num_devices)
  mesh = abstract_mesh(mesh_sizes)
  rules = _rules(config)
  ways = lambda logical: axis_ways(rules, mesh_sizes, logical)
  batch_ways = ways("batch")
  notes = []

  # Resident states (exact).
  states = _states(config, model_config, mesh_sizes, rules)
  pdt = model_config.param_dtype
  items = [
      Item("policy_params", f"policy params ({pdt})", states["policy_params"], "resident", True),
      Item("policy_opt", "policy AdamW state (mu, nu)", states["policy_opt"], "resident", True),
  ]
  if states["prm_params"] is not None:
    items += [
        Item("prm_params", f"PRM params ({pdt})", states["prm_params"], "resident", True),
        Item("prm_opt", "PRM AdamW state (mu, nu)", states["prm_opt"], "resident", True),
    ]
  else:
    notes.append("no PRM state: this config never runs the implicit PRM (outcome-only)")
  ref_dtype, has_ref_field = _ref_dtype(config, model_config)
  offload = _ref_options(config)[1] and states["ref"] is not None
  if states["ref"] is not None and not offload:
    note = (
        ""
        if has_ref_field
        else ("config has no reference-dtype field: counted at the " "policy's param dtype")
    )
    items.append(
        Item("ref", f"frozen reference ({ref_dtype})", states["ref"], "resident", True, note)
    )

  # Update step.
  num_rows = rl.batch_prompts * rl.n_samples
  mini = min(rl.mini_batch, num_rows)
  micro = min(rl.micro_batch, mini)
  rows = _ceil_div(micro, batch_ways)
  if micro % batch_ways:
    notes.append(
        f"micro_batch={micro} does not split evenly over the {batch_ways} batch-parallel "
        f"devices: each holds {rows} row(s) (padded)"
    )
  p_len, t_len = rl.max_prompt_len, rl.max_new_tokens
  seq = p_len + t_len
  if seq > model_config.max_position_embeddings:
    notes.append(
        f"max_prompt_len + max_new_tokens = {seq} exceeds the model's context of "
        f"{model_config.max_position_embeddings}: the sampler will refuse it"
    )
  tp = dict(heads_ways=ways("heads"), mlp_ways=ways("mlp"), vocab_ways=ways("vocab"))
  act = activation_estimate(
      model_config,
      rows=rows,
      prompt_len=p_len,
      response_len=t_len,
      chunk=rl.score_chunk,
      embed_ways=ways("embed"),
      **tp,
  )
  grads = 2 * states["policy_params"]
  items += [
      Item(
          "grads",
          "gradients: accumulator + micro-batch grad",
          grads,
          "update",
          False,
          "one model at a time (PRM phase, then policy phase)",
      ),
      Item(
          "activations",
          f"activations saved for backward (remat={model_config.remat})",
          act["saved"],
          "update",
          False,
          f"{rows} row(s)/device x {seq} tokens, {model_config.num_layers} layers",
      ),
      Item(
          "backward_working",
          "backward working set of one layer",
          act["working"],
          "update",
          False,
          {
              "none": "its gradient temporaries",
              "full": "the layer recomputed, then its " "gradient temporaries",
              "dots": "the unsaved part recomputed + temporaries",
          }[model_config.remat]
          + " (~ one layer's remat=none residuals)",
      ),
      Item(
          "logits",
          f"log-prob logits chunk (score_chunk={min(rl.score_chunk, t_len)})",
          act["logits"],
          "update",
          False,
          f"{rows} x {min(rl.score_chunk, t_len)} x {act['local'].vocab_size} x f32 x 4",
      ),
  ]
  gathered = _gathered_weights(model_config, embed_ways=ways("embed"), **tp)
  if gathered:
    items.append(
        Item(
            "fsdp_gather",
            "FSDP-gathered weights",
            gathered,
            "update",
            False,
            "2 layers + lm_head in compute dtype, their f32 grads before reduce-scatter",
        )
    )
  step_inputs = (num_rows * seq * 4 * 2 + num_rows * t_len * 4 * 12) // batch_ways
  items.append(
      Item(
          "step_inputs",
          "step inputs + per-token arrays",
          step_inputs,
          "update",
          False,
          f"{num_rows} rows: tokens, masks, ~12 [N, T] f32 (log-probs, rewards, ...)",
      )
  )

  if offload:  # held in host memory, copied to the devices for the reference forward only
    items.append(
        Item(
            "ref",
            f"frozen reference ({ref_dtype}) on the devices",
            states["ref"],
            "ref_forward",
            True,
            "config.ref.offload: copied in from host memory",
        )
    )
    items.append(
        Item(
            "ref_forward",
            "reference forward transients",
            act["working"] + act["logits"] // 2,
            "ref_forward",
            False,
            "one layer's activations + one logits chunk (no gradients)",
        )
    )
    notes.append(
        f"config.ref.offload: the reference takes {_gib(states['ref'])} of pinned host "
        "memory per device instead of device memory"
    )

  # Sampling, in the sampler's layout (`config.sampler_rules`, default the training rules).
  s_rules = _rules(config, "sampler_rules")
  s_ways = lambda logical: axis_ways(s_rules, mesh_sizes, logical)
  s_batch = s_ways("batch")
  s_tp = dict(heads_ways=s_ways("heads"), mlp_ways=s_ways("mlp"), vocab_ways=s_ways("vocab"))
  if s_rules != rules:
    from prime_jax.models.decoder import init_params
    from prime_jax.sharding import param_shardings

    abstract = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))
    items.append(
        Item(
            "sampler_params",
            "policy params in the sampler's layout",
            tree_shard_bytes(abstract, param_shardings(model_config, mesh, s_rules)),
            "sampling",
            True,
            "config.sampler_rules differ from sharding_rules: a " "resharded copy",
        )
    )
  prompts = rl.sample_batch_prompts or rl.batch_prompts
  cache_rows = prompts * rl.n_samples
  kv = cache_bytes(model_config, cache_rows, seq, mesh, s_rules)
  items.append(
      Item(
          "kv_cache",
          f"KV cache ({model_config.dtype})",
          kv,
          "sampling",
          True,
          f"{prompts} prompts x {rl.n_samples} samples, {seq} slots",
      )
  )
  items.append(
      Item(
          "kv_copy",
          "one k/v-sized cache temporary",
          kv // 2,
          "sampling",
          False,
          "XLA keeps one copy of the k or v array (seen in its compiled buffers)",
      )
  )
  local = _local_model(model_config, s_tp["heads_ways"], s_tp["mlp_ways"], s_tp["vocab_ways"])
  compute = jnp.dtype(model_config.dtype).itemsize
  b_prefill = _ceil_div(prompts, s_batch)  # prompt rows over the batch axes, as the cache's
  prefill = (
      cache_bytes(model_config, prompts, p_len, mesh, s_rules)  # prefill's own cache
      + cache_bytes(model_config, cache_rows, p_len, mesh, s_rules)  # repeated n times
      + b_prefill
      * p_len
      * (
          local.num_heads * p_len * (8 + compute)  # one layer's scores
          + 3 * local.intermediate_size * compute  # its MLP
          + 3 * local.hidden_size * 4
      )
  )
  items.append(
      Item(
          "prefill",
          "prefill transients",
          prefill,
          "sampling",
          False,
          f"prompt cache + its n-fold copy + one layer of {b_prefill} prompt(s)/device "
          f"([{p_len}, {p_len}] attention, MLP)",
      )
  )
  gathered_fwd = _gathered_weights(
      model_config, embed_ways=s_ways("embed"), forward_only=True, **s_tp
  )
  if gathered_fwd:
    items.append(
        Item(
            "fsdp_gather_sampling",
            "FSDP-gathered weights",
            gathered_fwd,
            "sampling",
            False,
            "2 layers + lm_head in compute dtype",
        )
    )
  decode = 3 * _ceil_div(cache_rows, s_batch) * local.vocab_size * 4
  items.append(
      Item(
          "decode_logits",
          "decode logits",
          decode,
          "sampling",
          False,
          f"[{cache_rows} rows, vocab] f32 x 3 (logits, scaled, sampled)",
      )
  )
  if hw.platform == "gpu":
    notes.append(
        f"GPU: JAX preallocates {hw.usable_fraction:g} of the memory; set "
        "XLA_PYTHON_CLIENT_MEM_FRACTION (and --mem_fraction here) to use more"
    )
  if (
      states["ref"] is not None
      and not offload
      and ref_dtype == "float32"
      and (states["ref"] > 0.005 * hw.usable_bytes)
  ):
    notes.append(
        f"the reference in bf16 would save {_gib(states['ref'] / 2)} per device"
        + (
            " (--config.ref.param_dtype=bfloat16)"
            if has_ref_field
            else ", but this config has no reference-dtype field"
        )
    )

  result = Plan(hw, mesh_sizes, model_config, model_source, items, notes)
  if suggest and (not result.fits or result.headroom < 0.1 * result.usable):
    result.suggestions = suggestions(config, result)
  return result


# ---------------------------------------------------------------------------------------------
# Knobs: which config flag to turn, each checked by planning again.
# ---------------------------------------------------------------------------------------------


def _with(config, **changes):
  """A copy of `config` with dotted fields changed ({"rl.micro_batch": 4})."""
  new = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in changes.items():
    section, _, field = dotted.rpartition(".")
    target = new
    for part in filter(None, section.split(".")):
      target = target[part]
    target[field] = value
  return new


def _knobs(config, p: Plan):
  """(flag text, config changes, mesh axes or None) candidates, one turn each."""
  rl, mc, n = config.rl, p.model_config, p.hardware.num_devices
  out = []
  if p.mesh.get("fsdp", 1) < n:
    out.append(
        (
            "raise fsdp: --mesh=data=1,fsdp=-1,tensor=1 (--config.mesh.data=1 "
            f"--config.mesh.fsdp=-1 --config.mesh.tensor=1)",
            {},
            {"data": 1, "fsdp": -1, "tensor": 1},
        )
    )
  for t in (2, 4, 8):
    if (
        t != p.mesh.get("tensor", 1)
        and n % t == 0
        and mc.num_heads % t == 0
        and mc.num_kv_heads % t == 0
    ):
      out.append(
          (
              f"tensor parallelism: --mesh=data=1,fsdp=-1,tensor={t} (--config.mesh.tensor={t}"
              f" --config.mesh.fsdp=-1 --config.mesh.data=1)",
              {},
              {"data": 1, "fsdp": -1, "tensor": t},
          )
      )
  if mc.remat == "none":
    out.append(("turn on remat: --config.policy.remat=full", {"policy.remat": "full"}, None))
    out.append(("turn on remat: --config.policy.remat=dots", {"policy.remat": "dots"}, None))
  if mc.dtype == "float32":
    out.append(
        (
            "bf16 compute (halves activations and the KV cache): " "--config.policy.dtype=bfloat16",
            {"policy.dtype": "bfloat16"},
            None,
        )
    )
  num_rows = rl.batch_prompts * rl.n_samples
  micro = min(rl.micro_batch, rl.mini_batch, num_rows)
  batch_ways = axis_ways(_rules(config), p.mesh, "batch")
  tiles = lambda m: all(min(mini, num_rows) % m == 0 for mini in (rl.mini_batch, rl.prm_mini_batch))
  for m in sorted({max(1, batch_ways, micro // 2), max(1, batch_ways)}, reverse=True):
    if m < micro and tiles(m):
      out.append((f"lower micro_batch: --config.rl.micro_batch={m}", {"rl.micro_batch": m}, None))
  prompts = rl.sample_batch_prompts or rl.batch_prompts
  for s in (prompts // 2, prompts // 4, prompts // 8):
    if s >= 1:
      out.append(
          (
              f"lower sample_batch_prompts: --config.rl.sample_batch_prompts={s}",
              {"rl.sample_batch_prompts": s},
              None,
          )
      )
  if rl.score_chunk > 128:
    out.append(
        (
            f"lower score_chunk: --config.rl.score_chunk={rl.score_chunk // 4}",
            {"rl.score_chunk": rl.score_chunk // 4},
            None,
        )
    )
  ref_dtype, offload = _ref_options(config)
  if p.has("ref") and ref_dtype not in (None, "bfloat16"):
    out.append(
        ("bf16 reference: --config.ref.param_dtype=bfloat16", {"ref.param_dtype": "bfloat16"}, None)
    )
  if p.has("ref") and "ref" in config and not offload and p.hardware.platform in ("tpu", "gpu"):
    out.append(("reference in host memory: --config.ref.offload=True", {"ref.offload": True}, None))
  return out


def suggestions(config, p: Plan, max_steps: int = 5) -> list[str]:
  """Single knobs that make `p` fit; else a greedy combination (biggest saving first)."""
  base_mesh = dict(p.mesh)
  replan = lambda cfg, mesh: plan(
      cfg,
      mesh,
      p.hardware,
      p.model_config.replace(dtype=cfg.policy.dtype, remat=cfg.policy.remat),
      model_source=p.model_source,
      suggest=False,
  )
  singles, kinds = [], set()
  for text, changes, mesh in _knobs(config, p):
    try:
      alt = replan(_with(config, **changes), mesh or base_mesh)
    except ValueError:
      continue
    kind = text.split(":")[0]
    if alt.fits and alt.headroom >= 0.1 * alt.usable and kind not in kinds:
      kinds.add(kind)  # the gentlest turn of each knob that fits (e.g. the largest batch)
      singles.append(f"{text} -> peak {_gib(alt.peak)}, headroom {_gib(alt.headroom)}")
  if singles:
    return singles
  # Greedy: apply the best knob, re-plan, repeat.
  cfg, mesh, chosen, current = config, base_mesh, [], p
  for _ in range(max_steps):
    best = None
    for text, changes, knob_mesh in _knobs(cfg, current):
      try:
        alt = replan(_with(cfg, **changes), knob_mesh or mesh)
      except ValueError:
        continue
      if alt.peak < current.peak and (best is None or alt.peak < best[0].peak):
        best = (alt, text, changes, knob_mesh)
    if best is None:
      break
    current, text, changes, knob_mesh = best
    cfg, mesh = _with(cfg, **changes), knob_mesh or mesh
    chosen.append(text)
    if current.fits and current.headroom >= 0.1 * current.usable:
      break
  if not chosen:
    return ["no config knob helps: use more devices or devices with more memory"]
  verdict = (
      f"fits with headroom {_gib(current.headroom)}"
      if current.fits
      else f"still {_gib(-current.headroom)} over: use more devices or devices with more memory"
  )
  return [f"together: {' + '.join(chosen)} -> peak {_gib(current.peak)}, {verdict}"]
