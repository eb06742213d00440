"""The memory planner: exact items against real sharded arrays, the full-scale plan, the CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from multidevice import REPO, run_with_devices
from prime_jax import memory_plan as mp
from prime_jax.configs import base_config
from prime_jax.models import DecoderConfig, config_to_hf, init_params, read_hf_config
from prime_jax.sharding import mesh_sizes

EURUS_CONFIG = os.path.join(REPO, "experiments", "configs", "eurus2_7b_prime.py")
QWEN_7B_PARAMS = 7_615_616_512  # Qwen2.5(-Math)-7B: 7.62 B with untied embeddings


def eurus_config():
  spec = importlib.util.spec_from_file_location("eurus2_7b_prime", EURUS_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_planned_bytes_match_real_sharded_arrays_on_8_devices():
  """Params, optimiser states, reference and KV cache of the REAL train states on a real mesh:
  the planner's per-device bytes equal the sum of each array's first addressable shard."""
  out = run_with_devices("""
    import json
    import jax
    from test_update_step import MODEL, make_config
    from prime_jax import memory_plan as mp
    from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer, update_step_shardings
    from prime_jax.models import init_params
    from prime_jax.sampling import init_cache_like
    from prime_jax.sharding import make_mesh
    from prime_jax.train_state import create_train_state

    def shard0(tree):
      return sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(tree))

    config = make_config(batch_prompts=4, max_prompt_len=5, max_new_tokens=7,
                         sample_batch_prompts=6)
    rl = config.rl
    results = {}
    for axes in ({"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 8}):
      mesh = make_mesh(axes)
      shardings = update_step_shardings(config, mesh, MODEL)
      params = init_params(MODEL, jax.random.key(0))
      policy = jax.device_put(create_train_state(params, policy_optimizer(rl)),
                              shardings["policy"])
      prm = jax.device_put(create_train_state(params, prm_optimizer(rl)), shardings["prm"])
      ref = jax.device_put(params, shardings["ref"])
      cache = init_cache_like(policy.params, MODEL, rl.sample_batch_prompts * rl.n_samples,
                              rl.max_prompt_len + rl.max_new_tokens)
      real = {"policy_params": shard0(policy.params),
              "policy_opt": shard0(policy.opt_state) + shard0(policy.step),
              "prm_params": shard0(prm.params), "prm_opt": shard0(prm.opt_state) + shard0(prm.step),
              "ref": shard0(ref), "kv_cache": shard0(cache)}
      plan = mp.plan(config, axes, mp.Hardware("cpu-8", "cpu", 8, 2 ** 30), MODEL,
                     suggest=False)
      results[",".join(f"{k}={v}" for k, v in axes.items())] = {
          k: (v, plan.bytes(k)) for k, v in real.items()}
    print(json.dumps(results))
  """)
  results = json.loads(out.strip().splitlines()[-1])
  assert set(results) == {"data=2,fsdp=2,tensor=2", "fsdp=8"}
  for mesh, items in results.items():
    for key, (real, planned) in items.items():
      assert real > 0, (mesh, key)
      assert abs(planned - real) <= 0.05 * real, (mesh, key, real, planned)
  # Sharding did something: 8-way FSDP holds less per device than the 2x2x2 mesh's 4-way split.
  assert (
      results["fsdp=8"]["policy_params"][0] < results["data=2,fsdp=2,tensor=2"]["policy_params"][0]
  )


def test_activation_estimate_tracks_xla_buffers():
  """The update step's non-resident items against XLA's compiled temp buffers (one CPU device,
  float32, no remat: the case dominated by saved activations)."""
  from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer
  from prime_jax.algo.update_step import make_update_step
  from prime_jax.train_state import create_train_state

  model = DecoderConfig(
      vocab_size=2048,
      hidden_size=128,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      intermediate_size=384,
      qkv_bias=True,
      max_position_embeddings=256,
  )
  c = base_config()
  c.rl.update(
      dict(
          batch_prompts=2,
          n_samples=2,
          mini_batch=4,
          prm_mini_batch=4,
          micro_batch=2,
          max_prompt_len=64,
          max_new_tokens=192,
          norm_shards=1,
          score_chunk=64,
      )
  )
  c.mesh.update(dict(data=1, fsdp=1, tensor=1))
  plan = mp.plan(c, None, mp.Hardware("cpu-1", "cpu", 1, 2**34), model, suggest=False)
  spec = jax.ShapeDtypeStruct
  state = lambda opt: jax.eval_shape(
      lambda: create_train_state(init_params(model, jax.random.key(0)), opt)
  )
  policy, prm = state(policy_optimizer(c.rl)), state(prm_optimizer(c.rl))
  batch = dict(
      prompt_tokens=spec((4, 64), jnp.int32),
      prompt_mask=spec((4, 64), jnp.bool_),
      response_tokens=spec((4, 192), jnp.int32),
      response_mask=spec((4, 192), jnp.bool_),
      acc=spec((4,), jnp.float32),
  )
  compiled = (
      make_update_step(c, None, model)
      .lower(policy, prm, policy.params, batch, jax.random.key(0))
      .compile()
  )
  analysis = compiled.memory_analysis()
  assert analysis.argument_size_in_bytes == pytest.approx(plan.resident, rel=0.01)
  assert 0.75 < plan.total("update") / analysis.temp_size_in_bytes < 1.33


def test_full_scale_eurus_plan_allocates_nothing_and_fits_v5p_64():
  config = eurus_config()
  live = len(jax.live_arrays())
  start = time.perf_counter()
  plan = mp.plan(config, None, "v5p-64")
  elapsed = time.perf_counter() - start
  assert len(jax.live_arrays()) == live  # shapes only
  assert elapsed < 30  # a couple of seconds on a laptop; generous for a shared CI machine
  assert plan.hardware.num_devices == 32 and plan.mesh == {"data": 1, "fsdp": 32, "tensor": 1}
  assert plan.model_config.num_params == QWEN_7B_PARAMS
  assert plan.bytes("policy_params") == pytest.approx(QWEN_7B_PARAMS * 4 / 32, rel=0.01)
  assert plan.bytes("policy_opt") == pytest.approx(2 * plan.bytes("policy_params"), rel=0.01)
  assert plan.bytes("prm_params") == plan.bytes("ref") == plan.bytes("policy_params")
  # KV cache: 256 prompts x 4 samples x 4096 slots x 28 layers x 4 kv heads x 128 x bf16, k + v.
  assert plan.bytes("kv_cache") == 2 * 28 * 1024 * 4096 * 4 * 128 * 2 // 32
  assert plan.fits and "fits" in plan.verdict()
  table = plan.to_markdown()
  assert "| policy params (float32) |" in table and "KV cache" in table


def test_impossible_setting_does_not_fit_and_names_a_knob():
  plan = mp.plan(eurus_config(), {"data": 8, "fsdp": 1, "tensor": 1}, "8xH100")
  assert not plan.fits
  assert plan.verdict().startswith("does not fit")
  assert plan.hardware.usable_bytes == int(80 * mp.GiB * 0.75)
  assert plan.suggestions and "fsdp" in " ".join(plan.suggestions)
  assert "--config." in " ".join(plan.suggestions)
  assert "does not fit" in plan.to_markdown()


def test_remat_none_at_full_scale_points_at_remat():
  config = eurus_config()
  config.policy.remat = "none"
  plan = mp.plan(config, None, "v5p-64")
  assert not plan.fits and plan.binding_phase == "update step"
  assert plan.bytes("activations") > 50 * mp.GiB  # ~4.3 GiB per layer of [heads, s, s] arrays
  assert any("--config.policy.remat=" in s for s in plan.suggestions)


def test_reference_dtype_and_offload_and_sampler_layout():
  config = eurus_config()
  base = mp.plan(config, None, "v5p-64", suggest=False)
  assert any("--config.ref.param_dtype=bfloat16" in n for n in base.notes)
  with config.unlocked():
    config.ref.param_dtype = "bfloat16"
  half = mp.plan(config, None, "v5p-64", suggest=False)
  assert half.bytes("ref") == base.bytes("ref") // 2
  assert half.resident == base.resident - base.bytes("ref") // 2
  with config.unlocked():
    config.ref.offload = True
  off = mp.plan(config, None, "v5p-64", suggest=False)
  assert off.resident == base.resident - base.bytes("ref")  # in host memory between steps
  assert "reference forward" in off.to_markdown()
  assert off.phase_peak("ref_forward") >= off.resident + half.bytes("ref")
  from prime_jax.sharding import DECODE_RULES  # params replicated over fsdp for decoding

  with config.unlocked():
    config.sampler_rules = DECODE_RULES
  decode = mp.plan(config, None, "v5p-64", suggest=False)
  assert decode.bytes("sampler_params") == QWEN_7B_PARAMS * 4  # f32, whole on every device
  assert decode.sampling_peak > off.sampling_peak + 25 * mp.GiB


def test_config_without_ref_section_counts_the_reference_as_the_trainer_holds_it():
  """No `ref` section: the trainer's `config_checks.ref_options` holds the frozen reference in
  float32 whatever the policy's param dtype, and the plan counts it so (no bf16 knob to turn)."""
  import ml_collections

  from test_update_step import MODEL, make_config

  full = make_config(batch_prompts=4, max_prompt_len=5, max_new_tokens=7)
  config = ml_collections.ConfigDict({k: v for k, v in full.to_dict().items() if k != "ref"})
  model = MODEL.replace(param_dtype="bfloat16")
  hardware = mp.Hardware("cpu-1", "cpu", 1, 2**30)
  plan = mp.plan(config, {"data": 1, "fsdp": 1, "tensor": 1}, hardware, model, suggest=False)
  assert plan.bytes("ref") == 4 * model.num_params  # float32, one device holds all of it
  assert plan.bytes("ref") > plan.bytes("policy_params")  # the policy's are (mostly) bfloat16
  assert "| frozen reference (float32) |" in plan.to_markdown()
  assert any("no ref section" in i.note for i in plan.items if i.key == "ref")


def test_hardware_names():
  assert mp.parse_hardware("v5p-64").num_devices == 32  # names count TensorCores: 2 per chip
  assert mp.parse_hardware("v4-32").num_devices == 16
  assert mp.parse_hardware("v4-32").hbm_bytes == 32 * mp.GiB
  assert mp.parse_hardware("v5e-256").num_devices == 256  # v5e / v6e names count chips
  assert mp.parse_hardware("v5e-256").hbm_bytes == 16 * mp.GiB
  assert mp.parse_hardware("v6e-8").num_devices == 8
  h100 = mp.parse_hardware("8xH100")
  assert (h100.num_devices, h100.hbm_bytes, h100.usable_fraction) == (8, 80 * mp.GiB, 0.75)
  assert mp.parse_hardware("8xA100-80G", mem_fraction=0.9).usable_bytes == int(72 * mp.GiB)
  assert mp.parse_hardware("H200").num_devices == 1
  for bad in ("v5p-63", "v9-8", "8xA100"):
    with pytest.raises(ValueError):
      mp.parse_hardware(bad)
  assert mesh_sizes({"data": 1, "fsdp": -1, "tensor": 4}, 32) == {"data": 1, "fsdp": 8, "tensor": 4}
  with pytest.raises(ValueError, match="needs 16 devices"):
    mesh_sizes({"data": 2, "fsdp": 8}, 32)


def test_preset_matches_its_config_json(tmp_path):
  preset = mp.MODEL_PRESETS["qwen2.5-math-7b"]
  with open(tmp_path / "config.json", "w") as f:
    json.dump(config_to_hf(preset), f)
  assert read_hf_config(str(tmp_path)) == preset
  config = eurus_config()
  with config.unlocked():
    config.policy.checkpoint = str(tmp_path)
  model, source = mp.resolve_model_config(config)
  assert source.endswith("config.json")
  assert model == preset.replace(dtype="bfloat16", remat="full")
  with config.unlocked():
    config.policy.checkpoint = str(tmp_path / "missing")
  with pytest.raises(ValueError, match="--model"):
    mp.resolve_model_config(config)


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.run(
      [sys.executable, "-m", "prime_jax.tools.plan", *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_cli_prints_the_table():
  proc = _cli(
      f"--config={EURUS_CONFIG}",
      "--hardware=v5p-64",
      "--model=qwen2.5-math-7b",
      "--mesh=data=1,fsdp=-1,tensor=4",
      "--config.rl.micro_batch=16",
  )
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "| item | per device |" in out and "| policy params (float32) |" in out
  assert "mesh data=1,fsdp=8,tensor=4" in out
  assert "fits:" in out
  bad = _cli(f"--config={EURUS_CONFIG}", "--hardware=v9-8")
  assert bad.returncode == 1 and "unknown hardware" in bad.stderr
