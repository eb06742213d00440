"""The memory plan itself: `plan(config, mesh_axes, hardware, model_config)` adds up the items
of `prime_jax.memory_plan.estimates` per phase into a `Plan` (phase peaks, the verdict against the
hardware, a markdown table)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from prime_jax.config_checks import check_rl_config, ref_options
from prime_jax.memory_plan.estimates import (
    abstract_mesh,
    activation_estimate,
    axis_ways,
    cache_bytes,
    ceil_div,
    gathered_weights,
    local_model,
    reference_dtype,
    resident_state_bytes,
    rule_table,
    tree_shard_bytes,
)
from prime_jax.memory_plan.inputs import GiB, Hardware, parse_hardware, resolve_model_config
from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import init_params
from prime_jax.sharding import mesh_sizes as sizes_on
from prime_jax.sharding import param_shardings

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
          f"fits: peak {format_gib(self.peak)} ({self.binding_phase}) of {format_gib(self.usable)} "
          f"usable per device, headroom {format_gib(self.headroom)} ({pct:.0f} %){tight}"
      )
    return (
        f"does not fit: peak {format_gib(self.peak)} ({self.binding_phase}) exceeds "
        f"{format_gib(self.usable)} usable per device by {format_gib(-self.headroom)}"
    )

  def to_markdown(self) -> str:
    hw, mc = self.hardware, self.model_config
    mesh = ",".join(f"{k}={v}" for k, v in self.mesh.items())
    frac = (
        f" x {hw.usable_fraction:g} usable = {format_gib(hw.usable_bytes)}"
        if hw.usable_fraction != 1
        else ""
    )
    lines = [
        f"**{hw.name}**: {hw.num_devices} devices x {format_gib(hw.hbm_bytes)} HBM{frac}; "
        f"mesh {mesh}; "
        f"model {self.model_source} ({mc.num_params / 1e9:.2f} B params, {mc.num_layers} layers, "
        f"param {mc.param_dtype}, compute {mc.dtype}, remat {mc.remat})",
        "",
        "| item | per device | |",
        "|---|---:|---|",
    ]
    for phase in ["resident"] + self.phases:
      for item in (i for i in self.items if i.phase == phase):
        kind = "" if item.exact else " ~"
        lines.append(f"| {item.label} | {format_gib(item.bytes)}{kind} | {item.note} |")
      if phase == "resident":
        lines.append(f"| **resident (whole run): total** | **{format_gib(self.resident)}** | |")
      else:
        lines.append(
            f"| **{PHASES[phase]} (on top of resident): peak** | "
            f"**{format_gib(self.phase_peak(phase))}** | |"
        )
    lines += ["", f"**{self.verdict()}**", ""]
    if self.suggestions:
      lines += ["To make it fit:" if not self.fits else "To gain headroom:"]
      lines += [f"- {s}" for s in self.suggestions] + [""]
    if self.notes:
      lines += ["Notes:"] + [f"- {n}" for n in self.notes] + [""]
    lines.append(
        "`~` = estimate (see `prime_jax/memory_plan/estimates.py` for the formula); the rest are "
        "exact shard sizes of the run's shardings."
    )
    return "\n".join(lines)


def format_gib(n: float) -> str:
  """Bytes as text: GiB with two decimals, MiB below a hundredth of a GiB."""
  return f"{n / GiB:.2f} GiB" if abs(n) >= GiB / 100 or n == 0 else f"{n / 2 ** 20:.2f} MiB"


def as_hardware(hardware, mem_fraction=None) -> Hardware:
  """`hardware` as a `Hardware`: one as is, a name through `parse_hardware`."""
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
  hw = as_hardware(hardware, mem_fraction)
  if model_config is None:
    model_config, model_source = resolve_model_config(config)
  model_source = model_source or "given DecoderConfig"
  rl = config.rl
  check_rl_config(rl)

  mesh_sizes = sizes_on(dict(config.mesh) if mesh_axes is None else dict(mesh_axes), hw.num_devices)
  mesh = abstract_mesh(mesh_sizes)
  rules = rule_table(config)
  ways = lambda logical: axis_ways(rules, mesh_sizes, logical)
  batch_ways = ways("batch")
  notes = []

  # Resident states (exact).
  states = resident_state_bytes(config, model_config, mesh_sizes, rules)
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
  ref_dtype, has_ref_field = reference_dtype(config)
  offload = ref_options(config).offload and states["ref"] is not None
  if states["ref"] is not None and not offload:
    note = (
        ""
        if has_ref_field
        else "config has no ref section: counted in float32, as the trainer holds it"
    )
    items.append(
        Item("ref", f"frozen reference ({ref_dtype})", states["ref"], "resident", True, note)
    )

  # Update step.
  num_rows = rl.batch_prompts * rl.n_samples
  mini = min(rl.mini_batch, num_rows)
  micro = min(rl.micro_batch, mini)
  rows = ceil_div(micro, batch_ways)
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
  gathered = gathered_weights(model_config, embed_ways=ways("embed"), **tp)
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
        f"config.ref.offload: the reference takes {format_gib(states['ref'])} of pinned host "
        "memory per device instead of device memory"
    )

  # Sampling, in the sampler's layout (`config.sampler_rules`, default the training rules).
  s_rules = rule_table(config, "sampler_rules")
  s_ways = lambda logical: axis_ways(s_rules, mesh_sizes, logical)
  s_batch = s_ways("batch")
  s_tp = dict(heads_ways=s_ways("heads"), mlp_ways=s_ways("mlp"), vocab_ways=s_ways("vocab"))
  if s_rules != rules:
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
  local = local_model(model_config, s_tp["heads_ways"], s_tp["mlp_ways"], s_tp["vocab_ways"])
  compute = jnp.dtype(model_config.dtype).itemsize
  b_prefill = ceil_div(prompts, s_batch)  # prompt rows over the batch axes, as the cache's
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
  gathered_fwd = gathered_weights(
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
  decode = 3 * ceil_div(cache_rows, s_batch) * local.vocab_size * 4
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
        f"the reference in bf16 would save {format_gib(states['ref'] / 2)} per device"
        + (
            " (--config.ref.param_dtype=bfloat16)"
            if has_ref_field
            else ", but this config has no ref section to set it in"
        )
    )

  result = Plan(hw, mesh_sizes, model_config, model_source, items, notes)
  if suggest and (not result.fits or result.headroom < 0.1 * result.usable):
    from prime_jax.memory_plan.knobs import suggestions  # knobs plans again: imports this module

    result.suggestions = suggestions(config, result)
  return result
