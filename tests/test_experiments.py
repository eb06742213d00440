"""Experiment variants (experiments/variants.py) on both bases, and experiments/run_table.py.

Every variant loads through `--config=FILE:NAME` as prime_jax.train parses it, differs from its
base in exactly its own fields, and (full scale) plans on v5p-64 with Qwen2.5-Math-7B's shapes
without allocating anything. One small table runs end to end at a smoke scale.
"""

import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from experiments import variants
from experiments.configs import eurus2_7b_prime
from prime_jax import configs
from prime_jax import memory_plan as mp
from prime_jax.metrics_log import read_metrics
from prime_jax.models import DecoderConfig
from tiny_run import TINY_RUN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = "experiments/configs/eurus2_7b.py"
SMALL = "experiments/configs/arithmetic.py"
CREDIT = "experiments/configs/arithmetic_credit.py"
NAMES = variants.names()


def parse(config_arg):
  """`--config=config_arg` as prime_jax.train's flag parses it (ml_collections config_flags)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv)
  fv(["train", f"--config={os.path.join(REPO, config_arg)}"])
  return fv.config


def flat(config):
  def walk(tree, prefix):
    if isinstance(tree, dict):
      for key, sub in tree.items():
        yield from walk(sub, f"{prefix}{key}.")
    else:
      yield prefix[:-1], tree

  return dict(walk(config.to_dict(), ""))


def changed(config, base):
  a, b = flat(config), flat(base)
  assert a.keys() == b.keys()
  return {k: a[k] for k in a if a[k] != b[k]}


def test_the_variant_set_is_the_documented_one():
  assert set(NAMES) == {
      "prime",
      "rloo",
      "reinforce",
      "reinforce_prime",
      "grpo",
      "grpo_prime",
      "grpo_prime_paper",
      "ppo",
      "ppo_prime",
      "prm_value",
      "prm_offline",
      "prm_from_trained",
      "ref_policy",
      "double_forward",
      "prm_dpo",
      "prime_n16",
      "prime_whole",
      "oracle",
  }
  readme = open(os.path.join(REPO, "experiments", "README.md")).read()
  for name in NAMES:
    assert f"`{name}`" in readme, name
  from experiments import run_table

  for table in run_table.TABLES.values():
    assert set(table.variants) <= set(NAMES)


def test_table4_pairs_differ_only_in_coef_proc():
  """An estimator's outcome-only and PRIME rows differ only in rl.coef_proc (0 vs the base's 1);
  whitening (rl.whiten_advantages) and everything else are the base's for every row."""
  from experiments import run_table

  base = eurus2_7b_prime.base()
  assert base.rl.whiten_advantages and base.rl.coef_proc == 1.0 and base.rl.grpo_form == "stable"
  for baseline, treated in run_table.PAIRS["table4"]:
    if treated == "prm_value":  # its own estimator, paired with RLOO
      continue
    gap = changed(variants.apply(base, baseline), variants.apply(base, treated))
    assert gap == {"rl.coef_proc": 0.0}, (baseline, treated, gap)
  for name in run_table.TABLES["table4"].variants:
    assert "rl.whiten_advantages" not in variants.VARIANTS[name].overrides


@pytest.mark.parametrize("base_file", [FULL, SMALL, CREDIT])
def test_every_variant_tiles_its_prm_mini_batches(base_file):
  """The released strided PRM order (rl.prm_batch_order) cuts every variant's batch into
  norm_shards x K blocks of whole groups (full scale: 8 shards x 4 blocks of 32 responses)."""
  from prime_jax.algo import split_minibatches
  from prime_jax.algo.prm_phase import prm_order_shards

  for name in NAMES:
    rl = parse(f"{base_file}:{name}").rl
    rows = rl.batch_prompts * rl.n_samples
    order = split_minibatches(
        np.arange(rows),
        num_minibatches=rows // min(rl.prm_mini_batch, rows),
        num_shards=prm_order_shards(rl),
        group_size=rl.n_samples,
    )
    assert sorted(np.asarray(order).reshape(-1).tolist()) == list(range(rows)), name


def test_the_full_scale_files_keep_their_meaning():
  prime = parse("experiments/configs/eurus2_7b_prime.py")
  assert prime.is_locked and prime.to_dict() == eurus2_7b_prime.base().to_dict()
  assert parse(FULL).to_dict() == prime.to_dict()  # the default variant is "prime"
  assert parse("experiments/configs/eurus2_7b_rloo.py").to_dict() == parse(f"{FULL}:rloo").to_dict()
  assert (
      parse("experiments/configs/arithmetic_rloo.py").to_dict() == parse(f"{SMALL}:rloo").to_dict()
  )
  with pytest.raises(Exception, match="unknown experiment variant 'nope'"):
    parse(f"{FULL}:nope")


@pytest.mark.parametrize("name", NAMES)
def test_full_scale_variant_loads_and_plans(name):
  base = eurus2_7b_prime.base()
  config = parse(f"{FULL}:{name}")
  assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
  assert changed(config, base) == variants.resolved_overrides(base, name)
  assert set(changed(config, base)) == set(variants.VARIANTS[name].overrides)
  # The planner's shape check: shardings and shapes resolve for this variant, nothing allocated.
  model, _ = mp.resolve_model_config(config, "qwen2.5-math-7b")
  live = len(jax.live_arrays())
  plan = mp.plan(config, None, "v5p-64", model, suggest=False)
  assert len(jax.live_arrays()) == live
  assert plan.mesh == {"data": 1, "fsdp": 32, "tensor": 1}
  assert plan.model_config.value_head == (name in ("ppo", "ppo_prime"))
  assert plan.has("prm_params") == (name not in ("rloo", "reinforce", "grpo", "ppo", "oracle"))
  assert plan.has("ref") == (plan.has("prm_params") and name != "ref_policy")
  rows = config.rl.batch_prompts * config.rl.n_samples
  assert rows == 256 * 4  # responses per step: the 16-samples run keeps the base's 1024
  assert plan.bytes("kv_cache") == mp.cache_bytes(
      plan.model_config,
      rows,
      4096,
      mp.abstract_mesh(plan.mesh),
      mp.rule_table(config, "sampler_rules"),
  )


@pytest.mark.parametrize("name", NAMES)
def test_small_scale_variant_applies_to_the_arithmetic_base(name):
  base = configs.arithmetic_config()
  config = parse(f"{SMALL}:{name}")
  assert config.is_locked
  assert changed(config, base) == variants.resolved_overrides(base, name)
  assert config.rl.batch_prompts * config.rl.n_samples == 64 * 4
  # Shapes resolve here too (the task's tokenizer sets the vocab at run time: any size will do).
  model = DecoderConfig(
      **dict(config.policy.init.to_dict(), vocab_size=32), value_head=config.rl.estimator == "ppo"
  )
  mp.plan(config, None, mp.Hardware("cpu-1", "cpu", 1, 2**34), model, suggest=False)


def test_the_credit_base_is_the_default_on_the_credit_task():
  """arithmetic_credit_config() = arithmetic_config() with longer chains, free operand order,
  fewer demonstration mistakes and lengths for the longer texts; nothing else, so re-tuning the
  default (SFT, model, learning rates) carries over."""
  default, credit = flat(configs.arithmetic_config()), flat(configs.arithmetic_credit_config())
  assert set(credit) == set(default)  # the same schema: the credit task only sets values
  assert {k: v for k, v in credit.items() if default.get(k) != v} == {
      "task.min_ops": 6,
      "task.max_ops": 8,
      "task.free_order": True,
      "task.mistake_rate": 0.05,
      "rl.max_prompt_len": 48,
      "rl.max_new_tokens": 96,
      "eval.max_new_tokens": 96,
  }
  assert parse(CREDIT).to_dict() == configs.arithmetic_credit_config().to_dict()


@pytest.mark.parametrize("name", ["prime", "rloo", "prime_whole", "oracle", "prime_n16"])
def test_variants_apply_to_the_credit_base(name):
  base = configs.arithmetic_credit_config()
  config = parse(f"{CREDIT}:{name}")
  assert config.is_locked and config.task.free_order
  assert changed(config, base) == variants.resolved_overrides(base, name)
  model = DecoderConfig(**dict(config.policy.init.to_dict(), vocab_size=32))
  plan = mp.plan(config, None, mp.Hardware("cpu-1", "cpu", 1, 2**34), model, suggest=False)
  assert plan.has("prm_params") == (name not in ("rloo", "oracle"))
  assert plan.has("ref") == plan.has("prm_params")


def test_prime_n16_keeps_responses_per_step():
  full, small = parse(f"{FULL}:prime_n16"), parse(f"{SMALL}:prime_n16")
  assert (full.rl.n_samples, full.rl.batch_prompts) == (16, 64)
  assert (small.rl.n_samples, small.rl.batch_prompts) == (16, 16)
  assert full.rl.prm_mini_batch % 16 == 0 and small.rl.prm_mini_batch % 16 == 0


def test_dry_run_prints_the_commands_and_writes_nothing(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "experiments/run_table.py",
          "prm_ablations",
          "--scale",
          "small",
          "--seeds",
          "0,1",
          "--steps",
          "5",
          "--workdir_root",
          str(tmp_path / "runs"),
          "--results_dir",
          str(tmp_path / "results"),
          "--dry_run",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 2 * 7 and all("-m prime_jax.train" in line for line in lines)
  trained_prm = f"--config.prm.checkpoint={tmp_path}/runs/prime_seed0_steps5/export/prm"
  assert f"--config={SMALL}:prm_offline" in lines[1] and trained_prm in lines[1]
  assert f"--config={SMALL}:prm_from_trained" in lines[2] and trained_prm in lines[2]
  assert not any("--config.prm.checkpoint" in line for line in lines[3:7])
  assert f"--config.sft.checkpoint={tmp_path}/runs/sft_seed1" in lines[-1]
  assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
  bad = subprocess.run(
      [
          sys.executable,
          "experiments/run_table.py",
          "table1",
          "--scale",
          "small",
          "--dry_run",
          "--",
          "--config.seed=3",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert bad.returncode != 0 and "--config.seed is set by run_table.py" in bad.stderr


def test_full_scale_trained_prm_variants_need_a_trained_prm(tmp_path):
  # An offline PRM from the SFT model equals the reference: every process reward would be 0.
  small = parse(f"{SMALL}:prm_offline")
  assert small.rl.prm_update == "none" and small.prm.checkpoint == variants.TRAINED_PRM_PLACEHOLDER
  assert [v for v in NAMES if variants.needs_trained_prm(v)] == ["prm_offline", "prm_from_trained"]
  result = subprocess.run(
      [
          sys.executable,
          "experiments/run_table.py",
          "prm_ablations",
          "--scale",
          "full",
          "--seeds",
          "0",
          "--variants",
          "prime,prm_offline",
          "--workdir_root",
          str(tmp_path / "r"),
          "--results_dir",
          str(tmp_path / "out"),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode != 0
  assert "prm_offline_seed0 need --trained_prm DIR" in result.stderr
  assert not (tmp_path / "r").exists()


def _fake_run(workdir, evals, *, prm=True, total=4, eval_results=None):
  """A finished run's files: metrics.jsonl with eval rows at steps 0 and `total`, summary.md."""
  import json

  os.makedirs(workdir, exist_ok=True)
  rows = []
  for step in range(total + 1):
    row = {"step": step}
    if step:
      row["rollout/acc_all_samples"] = 0.1 * step
      if prm:
        row["prm/acc_before"] = 0.5
    if step in (0, total):
      greedy, sampled = evals[step == total]
      row.update({"eval/accuracy_greedy": greedy, "eval/accuracy_sampled": sampled})
    rows.append(row)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("| table |\n")
  if eval_results is not None:
    os.makedirs(os.path.join(workdir, "eval"))
    with open(os.path.join(workdir, "eval", "results.json"), "w") as f:
      json.dump({"benchmarks": {k: {"score": v} for k, v in eval_results.items()}}, f)


def test_small_table_and_curves_render_mean_std_over_seeds(tmp_path):
  from experiments import run_table

  args, flags_ = run_table.parse_args(
      [
          "table1",
          "--scale",
          "small",
          "--seeds",
          "0,1",
          "--steps",
          "4",
          "--workdir_root",
          str(tmp_path),
      ]
  )
  runs = run_table.plan_runs(args, flags_)
  assert [r.name for r in runs] == ["prime_seed0", "rloo_seed0", "prime_seed1", "rloo_seed1"]
  finals = {("prime", 0): 0.6, ("prime", 1): 0.7, ("rloo", 0): 0.5}  # rloo_seed1 unfinished
  for run in runs:
    if (run.variant, run.seed) in finals:
      _fake_run(
          run.workdir,
          [(0.4, 0.2), (finals[run.variant, run.seed], 0.3)],
          prm=run.variant == "prime",
      )
  assert run_table.is_finished(runs[0].workdir, 4) and not run_table.is_finished(runs[0].workdir, 5)
  done = run_table.collect(runs)
  text = run_table.render_small(args, runs, done)
  prime_row, rloo_row = [l for l in text.splitlines() if l.startswith("| `")]
  assert "| 2/2 | 0.400 ± 0.000 | 0.650 ± 0.071 | 0.200 ± 0.000 | 0.300 ± 0.000 |" in prime_row
  assert "| 0.400 ± 0.000 | 0.500 ± 0.000 |" in prime_row  # training acc (steps 4), PRM acc
  assert "| 1/2 | 0.400 | 0.500 | 0.200 | 0.300 | 0.400 | – |" in rloo_row
  out = run_table.plot_curves(done, str(tmp_path / "curves.png"))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_full_table_renders_table1_layout_beside_the_paper(tmp_path):
  from experiments import run_table

  args, flags_ = run_table.parse_args(
      [
          "table1",
          "--scale",
          "full",
          "--seeds",
          "0,1",
          "--workdir_root",
          str(tmp_path),
          "--eval_data_dir",
          "D",
          "--benchmarks",
          "math500,aime24",
      ]
  )
  runs = run_table.plan_runs(args, flags_)
  assert all(r.total_steps == 240 and "--config.total_steps=240" in r.command for r in runs)
  scores = {"prime": [0.78, 0.80], "rloo": [0.70, 0.72]}
  for run in runs:
    _fake_run(
        run.workdir,
        [(0.3, 0.3), (0.4, 0.4)],
        total=240,
        eval_results={"math500": scores[run.variant][run.seed], "aime24": 0.2},
    )
  text = run_table.render_full(args, runs, run_table.collect(runs))
  assert "| Model | AIME24 | AMC | MATH-500 |" in text
  assert "| prime (ours, 2 seeds) | 20.0 | – | 79.0 |" in text
  assert (
      "| PRIME (paper, step 240) | 20.0 | 50.6 | 78.2 | 39.3 | 40.3 | 31.1 | 27.5 | 41.0 |" in text
  )
  assert "| `rloo` |" in text and "| 2/2 | 2/2 | 45.5 ± 0.7 |" in text


TINY = dict(TINY_RUN, ckpt_every=2)  # the trainer tests' tiny run; its flags after `--`


@pytest.mark.slow
def test_run_table_end_to_end_on_a_tiny_table1(tmp_path):
  runs, results = tmp_path / "runs", tmp_path / "results"
  command = [
      sys.executable,
      "experiments/run_table.py",
      "table1",
      "--scale",
      "small",
      "--seeds",
      "0",
      "--steps",
      "2",
      "--workdir_root",
      str(runs),
      "--results_dir",
      str(results),
      "--",
      *(f"--config.{k}={v}" for k, v in TINY.items()),
  ]
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
  for variant in ("prime", "rloo"):
    rows = read_metrics(str(runs / f"{variant}_seed0_steps2"))
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert (runs / f"{variant}_seed0_steps2" / "summary.md").exists()
  assert (runs / "sft_seed0" / "sft_info.json").exists()  # one SFT model for both variants
  assert not (runs / "prime_seed0_steps2" / "sft").exists()

  text = (results / "results.md").read_text()
  table = [line for line in text.splitlines() if line.startswith("| `")]
  assert [line.split("|")[1].strip() for line in table] == ["`prime`", "`rloo`"]
  final = rows[-1]["eval/accuracy_greedy"]  # rloo's last eval, as the table prints it
  assert f"| {final:.3f} |" in table[1]
  assert "41.0 ('PRIME', step 240)" in table[0] and "36.9 ('RLOO" in table[1]
  assert all(" 1/1 " in line for line in table)
  with open(results / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  command_txt = (results / "command.txt").read_text()
  assert "run_table.py table1 --scale small --seeds 0 --steps 2" in command_txt
  assert re.search(r"git rev-parse HEAD: [0-9a-f]{40}", command_txt)
  assert command_txt.count("-m prime_jax.train") == 2

  again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished, skipped") == 2
  assert (results / "results.md").read_text() == text


def test_small_table_reports_gaps_prm_quarters_and_step_times(tmp_path):
  import json
  from experiments import run_table

  args, flags_ = run_table.parse_args(
      [
          "table1",
          "--scale",
          "small",
          "--seeds",
          "0,1",
          "--steps",
          "8",
          "--workdir_root",
          str(tmp_path),
      ]
  )
  runs = run_table.plan_runs(args, flags_)
  finals = {("prime", 0): 0.6, ("prime", 1): 0.7, ("rloo", 0): 0.5, ("rloo", 1): 0.4}
  for run in runs:
    _fake_run(
        run.workdir,
        [(0.4, 0.2), (finals[run.variant, run.seed], 0.3)],
        total=8,
        prm=run.variant == "prime",
    )
    rows = read_metrics(run.workdir)
    for row in rows[1:]:  # PRIME's step 3 s (1 s in eval at the last step), RLOO's 2 s
      row.update(
          {
              "time/step": 3.0 + (row["step"] == 8) if run.variant == "prime" else 2.0,
              "time/eval": float(row["step"] == 8),
              "time/sampling": 0.5,
          }
      )
    with open(os.path.join(run.workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  text = run_table.render_small(args, runs, run_table.collect(runs))
  # Greedy finals 0.6/0.7 vs 0.5/0.4: gap +0.2 with Welch's interval (dof 2, t = 4.303).
  half = 4.302652729911275 * 0.005**0.5  # se = sqrt(0.005/2 + 0.005/2)
  # Paired: differences 0.1 and 0.3 (seed 0: 0.6 - 0.5, seed 1: 0.7 - 0.4), t(1) = 12.706.
  paired = 12.706204736174707 * 0.1
  assert (
      f"| +0.200 [{0.2 - half:+.3f}, {0.2 + half:+.3f}] | +0.200 [{0.2 - paired:+.3f}, "
      f"{0.2 + paired:+.3f}] |" in text
  )
  # sampled: equal
  assert "| rloo → prime | 2 / 2 | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] |" in text
  # Training accuracy 0.1 * step on both: PRIME reaches RLOO's last smoothed value at step 8.
  assert "8 steps (1.00×); 95% CI 8 to 8 steps (1.00× to 1.00×)" in text
  assert "| prime | prm/acc_before | 0.500 ± 0.000 | 0.500 ± 0.000 |" in text
  assert "| prime | 12 | 3.00 | 0.50 |" in text and "| 1.50× rloo |" in text
  assert "| rloo | 12 | 2.00 | 0.50 |" in text


@pytest.fixture
def benchmarks_on_path(monkeypatch):
  """`experiments/benchmarks` importable as the scripts there import each other (`import machine`)."""
  monkeypatch.syspath_prepend(
      os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "benchmarks")
  )


@pytest.mark.usefixtures("benchmarks_on_path")
def test_matmul_rates_in_a_loop_counts_every_call(monkeypatch):
  """`machine.matmul_rates(calls=n)` times n dependent dots in one program: it runs, and its FLOP
  count is n times one dot's (with the clock stubbed to 1 s a call the rate is exactly n·2mkn)."""
  import machine  # pylint: disable=import-outside-toplevel

  wall, cpu = machine.matmul_rates(4, 8, 16, calls=3, repeats=1)
  assert 0 < wall < float("inf") and 0 < cpu < float("inf")
  monkeypatch.setattr(machine, "timed_calls", lambda fn, repeats: [(1.0, 1.0)] * repeats)
  assert machine.matmul_rates(4, 8, 16, calls=5, repeats=2) == (5 * 2 * 4 * 8 * 16,) * 2
  assert machine.matmul_rates(4, 8, 16, repeats=2) == (2 * 4 * 8 * 16,) * 2


@pytest.mark.usefixtures("benchmarks_on_path")
def test_dots_step_floor_runs_every_matmul_of_a_step(monkeypatch):
  """`decode_bounds.dots_step_seconds` times a compiled loop of a decode step's dots: for a tiny
  model it runs, divides by the steps (clock stubbed to 1 s a call), and its loop body holds one
  dot per weight matrix of every layer plus the head, with the weights' shapes."""
  import decode_bounds  # pylint: disable=import-outside-toplevel
  import machine  # pylint: disable=import-outside-toplevel

  # The benchmark's model shrunk (its 2 kv heads kept): 4 heads of 8, 2 layers.
  tiny = decode_bounds.MODEL.replace(
      hidden_size=32, intermediate_size=48, vocab_size=64, num_layers=2, num_heads=4, head_dim=8
  )
  assert 0 < decode_bounds.dots_step_seconds(tiny, 4, steps=3, repeats=1) < float("inf")
  monkeypatch.setattr(machine, "timed_calls", lambda fn, repeats: [(1.0, 1.0)] * repeats)
  assert decode_bounds.dots_step_seconds(tiny, 4, steps=4, repeats=2) == 0.25
  run, args = decode_bounds.dots_step_program(tiny, 4, 1)
  rhs = re.findall(
      r"dot_general[^\n]*tensor<4x\d+xf32>, tensor<(\d+)x(\d+)xf32>", run.lower(*args).as_text()
  )
  layer = [(32, 32), (32, 16), (32, 16), (32, 32), (32, 48), (32, 48), (48, 32)]
  assert sorted((int(a), int(b)) for a, b in rhs) == sorted(layer * 2 + [(32, 64)])


@pytest.mark.usefixtures("benchmarks_on_path")
def test_dot_rates_times_the_torch_loop_per_dot(monkeypatch):
  """`dot_rates.torch_rate` runs REPS dependent torch dots over cycled weights and reports
  (GFLOP/s, ms per dot) of the best run: real on a tiny case, exact with the clock stubbed."""
  import dot_rates  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(dot_rates, "REPS", 5)
  weights = np.ones((3, 8, 16), np.float32)
  gflops, ms = dot_rates.torch_rate(weights, 4, flops=2 * 4 * 8 * 16)
  assert 0 < gflops < float("inf") and 0 < ms < float("inf")
  monkeypatch.setattr(dot_rates, "best_wall", lambda fn, repeats: 2.0)
  assert dot_rates.torch_rate(weights, 4, flops=1e9) == (2.5, 400.0)
