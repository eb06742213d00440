"""experiments/benchmarks/device_check.sh: its dry run lists every step within the 8-minute
budget, and the report renders from given numbers."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments", "benchmarks"))

import device_check  # noqa: E402

STEPS = ["env", "tests", "sampler", "update", "memory", "default_run", "report"]


def dry_run(*flags):
  out = subprocess.run(
      ["bash", "experiments/benchmarks/device_check.sh", "--dry_run", *flags],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=30,
  )
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_dry_run_lists_every_step_with_its_timeout_under_8_minutes():
  text = dry_run()
  steps = re.findall(r"^step (\w+) timeout (\d+)s: (.+)$", text, re.M)
  assert [s[0] for s in steps] == STEPS
  assert sum(int(s[1]) for s in steps) <= 480
  total = int(re.search(r"^total budget (\d+)s", text, re.M).group(1))
  assert total == sum(int(s[1]) for s in steps) <= 480
  commands = dict((name, cmd) for name, _, cmd in steps)
  assert "--dtype bfloat16" in commands["sampler"] and "--dtype bfloat16" in commands["update"]
  assert "--config.total_steps=20" in commands["default_run"]
  assert "--cpu" not in text
  for test_file in ("tests/models/test_decoder.py", "tests/test_sampling.py", "test_sharding.py"):
    assert test_file in commands["tests"]


def test_cpu_dry_run_runs_the_same_steps_on_the_cpu_outside_the_results_folder():
  text = dry_run("--cpu")
  steps = re.findall(r"^step (\w+) timeout (\d+)s: (.+)$", text, re.M)
  assert [s[0] for s in steps] == STEPS
  assert "experiments/results/device" not in text
  for name, _, cmd in steps:
    if name not in ("tests", "default_run", "report"):
      assert " --cpu " in cmd


def test_steps_option_runs_env_and_the_named_steps_only():
  text = dry_run("--steps", "update,report")
  assert re.findall(r"^step (\w+) timeout", text, re.M) == ["env", "update", "report"]
  out = subprocess.run(
      ["bash", "experiments/benchmarks/device_check.sh", "--dry_run", "--steps", "update,bogus"],
      cwd=REPO,
      capture_output=True,
      text=True,
  )
  assert out.returncode == 2 and "unknown step bogus" in out.stderr


def test_steps_rerun_keeps_the_earlier_steps_results(tmp_path):
  work, out = tmp_path / "work", tmp_path / "out"
  work.mkdir()
  earlier = "env\tok\t3\t20\ntests\tok\t103\t130\nsampler\tfailed rc=1\t2\t40\n"
  (work / "steps.tsv").write_text(earlier)
  run = subprocess.run(
      ["bash", "experiments/benchmarks/device_check.sh", "--cpu", "--steps", "report", "--out",
       str(out)],  # fmt: skip
      cwd=REPO,
      env=dict(os.environ, DEVICE_CHECK_WORK=str(work)),
      capture_output=True,
      text=True,
      timeout=240,
  )
  # The earlier run's failed sampler step still fails the check; the report covers every step.
  assert run.returncode == 1 and "sampler (failed rc=1, earlier run)" in run.stderr, run.stderr
  report = (out / "cpu.md").read_text()
  assert "| tests | ok | 103 |" in report and "| sampler | failed rc=1 | 2 |" in report
  lines = (work / "steps.tsv").read_text().splitlines()
  assert [line.split("\t")[0] for line in lines] == ["tests", "sampler", "env"]
  assert lines[0] == "tests\tok\t103\t130" and lines[2].startswith("env\tok\t")


def test_compile_times_a_configs_programs_on_this_device(tmp_path):
  out = tmp_path / "compile.json"
  run = subprocess.run(
      [sys.executable, "experiments/benchmarks/device_check.py", "compile", "--programs", "sampler",
       "--set", "rl.max_new_tokens=4", "--set", "rl.batch_prompts=2", "--json", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert run.returncode == 0, run.stderr
  data = json.loads(out.read_text())
  assert data["overrides"] == ["rl.max_new_tokens=4", "rl.batch_prompts=2"]
  assert data["sampler_compile_s"] > 0 and data["sampler_lower_s"] > 0
  assert "update_compile_s" not in data
  bad = subprocess.run(
      [sys.executable, "experiments/benchmarks/device_check.py", "compile", "--set", "rl.nope=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert bad.returncode != 0 and "unknown config key 'rl.nope'" in bad.stderr


def test_unknown_argument_fails():
  out = subprocess.run(
      ["bash", "experiments/benchmarks/device_check.sh", "--bogus"],
      cwd=REPO,
      capture_output=True,
      text=True,
  )
  assert out.returncode != 0 and "--bogus" in out.stderr


def test_card_table_and_names():
  assert device_check.card_spec("NVIDIA H200")["peak_flops"] == 989e12
  assert device_check.card_spec("NVIDIA H100 80GB HBM3")["name"] == "H100 SXM"
  assert device_check.card_spec("NVIDIA H100 PCIe")["name"] == "H100 PCIe"
  assert device_check.card_spec("NVIDIA A100-SXM4-40GB")["planner"] == "A100-40G"
  assert device_check.sanitize("NVIDIA H200") == "nvidia_h200"
  with pytest.raises(SystemExit, match="not in CARDS"):
    device_check.card_spec("Some Other Card")


def test_render_writes_the_tables_from_given_numbers():
  env = dict(jax="0.x", platform="gpu", device_kind="NVIDIA H200", num_devices=1)
  steps = [
      dict(name="env", status="ok", seconds=3.0, budget=20),
      dict(name="tests", status="failed rc=1", seconds=50.0, budget=140),
  ]
  sampler = dict(
      model="30.9M params",
      batch=64,
      prompt=128,
      new_tokens=512,
      peak_source="H200 SXM datasheet (dense bf16)",
      tokens_per_s=123456.0,
      model_tflops_per_s=9.89,
      mfu=0.01,
      hbm_utilisation=0.25,
  )
  memory = dict(
      model="97.7M params",
      responses=16,
      prompt=128,
      response=512,
      planner_resident_bytes=2**30,
      planner_update_peak_bytes=2 * 2**30,
      measured_peak_bytes=3 * 2**30,
      measured_over_planned=1.5,
      xla_temp_bytes=2**29,
      xla_args_bytes=2**30,
  )
  table = "| held-out split | before RL | after RL | change |\n|---|---|---|---|"
  text = device_check.render(
      "nvidia_h200", env, steps, dict(sampler=sampler, memory=memory), run_table=table
  )
  assert text.startswith("# Device check: nvidia_h200")
  assert "| tests | failed rc=1 | 50 | 140 |" in text
  assert "Total 53 s of a 160 s budget." in text
  assert "| 123,456 | 9.89 | 1.0 % | 25.0 % |" in text
  assert "| 1.000 GiB | 2.000 GiB | 3.000 GiB | 1.50 | 0.500 GiB | 1.000 GiB |" in text
  # The update step was not measured: said so, not left out.
  update = text.split("## PRIME update step")[1].split("##")[0]
  assert "not measured" in update
  assert text.rstrip().endswith(table)
