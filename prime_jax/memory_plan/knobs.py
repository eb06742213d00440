"""Which config flag to turn so that a memory plan fits: each candidate checked by planning
again (`suggestions`)."""

from __future__ import annotations

from prime_jax.config_checks import ref_options
from prime_jax.memory_plan.estimates import axis_ways, reference_dtype, rule_table, with_changes
from prime_jax.memory_plan.report import Plan, format_gib, plan


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
  batch_ways = axis_ways(rule_table(config), p.mesh, "batch")
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
  (ref_dtype, has_ref), offload = reference_dtype(config), ref_options(config).offload
  if p.has("ref") and has_ref and ref_dtype != "bfloat16":
    out.append(
        ("bf16 reference: --config.ref.param_dtype=bfloat16", {"ref.param_dtype": "bfloat16"}, None)
    )
  if p.has("ref") and has_ref and not offload and p.hardware.platform in ("tpu", "gpu"):
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
      alt = replan(with_changes(config, **changes), mesh or base_mesh)
    except ValueError:
      continue
    kind = text.split(":")[0]
    if alt.fits and alt.headroom >= 0.1 * alt.usable and kind not in kinds:
      kinds.add(kind)  # the gentlest turn of each knob that fits (e.g. the largest batch)
      singles.append(f"{text} -> peak {format_gib(alt.peak)}, headroom {format_gib(alt.headroom)}")
  if singles:
    return singles
  # Greedy: apply the best knob, re-plan, repeat.
  cfg, mesh, chosen, current = config, base_mesh, [], p
  for _ in range(max_steps):
    best = None
    for text, changes, knob_mesh in _knobs(cfg, current):
      try:
        alt = replan(with_changes(cfg, **changes), knob_mesh or mesh)
      except ValueError:
        continue
      if alt.peak < current.peak and (best is None or alt.peak < best[0].peak):
        best = (alt, text, changes, knob_mesh)
    if best is None:
      break
    current, text, changes, knob_mesh = best
    cfg, mesh = with_changes(cfg, **changes), knob_mesh or mesh
    chosen.append(text)
    if current.fits and current.headroom >= 0.1 * current.usable:
      break
  if not chosen:
    return ["no config knob helps: use more devices or devices with more memory"]
  verdict = (
      f"fits with headroom {format_gib(current.headroom)}"
      if current.fits
      else f"still {format_gib(-current.headroom)} over: use more devices or devices with more "
      "memory"
  )
  return [f"together: {' + '.join(chosen)} -> peak {format_gib(current.peak)}, {verdict}"]
