"""The trainer end to end on a tiny model: outcome-only and PRIME runs, kill-and-resume equality,
checkpoint mismatch errors and the NaN stop.

One SFT checkpoint is trained for the module and every run starts from it. rl.filter_lo/hi = 0/1 so
the barely trained policy still yields groups. Each run compiles the sampler and the update step;
a JAX persistent compilation cache shared by this module and its subprocesses compiles each
program once (same program, same executable: results are unchanged, only the compile time goes).
"""

import contextlib
import dataclasses
import io
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from jax.experimental.compilation_cache import compilation_cache

import prime_jax.train as train_module
from fake_gcs import gcs  # noqa: F401 (fixture)
from tiny_run import TINY_RUN
from prime_jax import checkpointing, config_checks, configs, paths, sft
from prime_jax.checkpointing import Checkpointer, CheckpointMismatchError
from prime_jax.metrics_log import MetricsLog, read_metrics
from prime_jax.models import init_params, load_hf_checkpoint, save_hf_checkpoint
from prime_jax.tokenizer import load_tokenizer
from prime_jax.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(
    TINY_RUN,
    **{
        "rl.sample_batch_prompts": 6,  # 2 held over
        "total_steps": 3,
        "ckpt_every": 1,
    },
)
OUTCOME_ONLY = {"rl.coef_proc": 0.0}
CONFIG_FILE = '''"""A tiny PRIME run for tests/test_train.py."""
from prime_jax import configs


def get_config():
    config = configs.arithmetic_config()
    config.update_from_flattened_dict({overrides!r})
    return config.lock()
'''
LOSSES = ("policy/loss", "policy/pg_loss", "policy/grad_norm")
PRM_LOSSES = ("prm/loss_before", "prm/grad_norm")
EVAL_KEYS = ("eval/", "prm_credit/")  # what an eval logs
CREDIT = (
    "dip_mean",
    "p_dip_negative",
    "localisation",
    "localisation_chance",
    "q_after_mistake_bad",
    "q_after_mistake_good",
    "pair_accuracy",
    "beta_nll_ref_mean",
)


def is_wall_clock(key: str) -> bool:
  return key.startswith("time/") or key.endswith(("/wall_s", "/items_per_s", "/max_item_s"))


def deterministic(rows):
  """Metrics rows without wall-clock fields: what a resumed run must reproduce exactly."""
  return [{k: v for k, v in row.items() if not is_wall_clock(k)} for row in rows]


def assert_same_metrics(got, want):
  got, want = deterministic(got), deterministic(want)
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want):
    differ = {k: (g.get(k), w.get(k)) for k in g.keys() | w.keys() if g.get(k) != w.get(k)}
    assert not differ, f"step {g['step']}: {differ}"


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache for this module (restored to the session's after)."""
  directory = str(tmp_path_factory.mktemp("jax_cache"))
  before = (
      jax.config.jax_compilation_cache_dir,
      jax.config.jax_persistent_cache_min_compile_time_secs,
  )
  compilation_cache.set_cache_dir(directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield directory
  jax.config.update("jax_compilation_cache_dir", before[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
  compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def base(tmp_path_factory, compile_cache):
  """The overrides every run shares, with sft.checkpoint at an SFT model trained once here."""
  overrides = dict(TINY, **{"sft.checkpoint": str(tmp_path_factory.mktemp("shared") / "sft")})
  sft.run_sft(tiny_config(overrides), tmp_path_factory.mktemp("sft_workdir"))
  return overrides


def tiny_config(overrides, **extra):
  config = configs.arithmetic_config()
  config.update_from_flattened_dict(dict(overrides, **extra))
  return config


@dataclasses.dataclass
class FinishedRun:
  workdir: pathlib.Path
  result: dict  # what train() returned
  printed: str  # its stdout


def run_in_process(config, workdir) -> FinishedRun:
  with contextlib.redirect_stdout(io.StringIO()) as out:
    result = train(config, str(workdir))
  return FinishedRun(workdir, result, out.getvalue())


@pytest.fixture(scope="module")
def prime_run(base, tmp_path_factory):
  return run_in_process(tiny_config(base), tmp_path_factory.mktemp("prime"))


@pytest.fixture(scope="module")
def outcome_run(base, tmp_path_factory):
  return run_in_process(tiny_config(base, **OUTCOME_ONLY), tmp_path_factory.mktemp("outcome"))


def check_finished_run(run: FinishedRun, base, *, prm: bool):
  workdir, result = run.workdir, run.result
  rows = read_metrics(str(workdir))
  assert [r["step"] for r in rows] == [0, 1, 2, 3]
  for row in rows[1:]:
    for key in LOSSES + (PRM_LOSSES if prm else ()):
      assert np.isfinite(row[key]), (row["step"], key)
    assert row["rollout/rounds"] == 1 and row["rollout/filter_pass_rate"] == 1.0
    assert row["rollout/refill_buffer"] == 2
    assert 0 < row["rollout/utilisation"] <= 1 and row["time/sampling_per_token"] > 0
    assert 0.0 <= row["acc_mean"] <= 1.0 and row["response_length_mean"] > 0
    assert ("prm/acc_before" in row) == prm
  # eval on step 0 (before RL), every eval_every steps and on the last step
  assert [r["step"] for r in rows if "eval/accuracy_greedy" in r] == [0, 2, 3]
  assert result["first_eval"] == {k: v for k, v in rows[0].items() if k != "step"}
  assert result["last_eval"] == {k: v for k, v in rows[3].items() if k.startswith(EVAL_KEYS)}

  # keep_ckpts=3 of the 4 saves (steps 0..3); the last holds 3 optimiser steps per model
  manager = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert manager.manager.all_steps() == [1, 2, 3]
  manager.close()
  final = os.path.join(workdir, "checkpoints", "3")
  models = ("policy", "prm") if prm else ("policy",)
  for name in models:
    assert int(ocp.StandardCheckpointer().restore(os.path.join(final, name))["step"]) == 3
  assert os.path.isdir(os.path.join(final, "prm")) == prm

  # exports: the final models as HF checkpoints of the SFT model's architecture, trained away
  # from it
  sft_config, sft_params = load_hf_checkpoint(base["sft.checkpoint"])
  assert os.path.exists(os.path.join(workdir, "export", "prm")) == prm
  for name in models:
    export = os.path.join(workdir, "export", name)
    config, params = load_hf_checkpoint(export)
    assert config == sft_config
    saved = ocp.StandardCheckpointer().restore(os.path.join(final, name))["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, saved)
    assert not np.array_equal(
        params["embed_tokens"]["embedding"], sft_params["embed_tokens"]["embedding"]
    )
    assert load_tokenizer(export).vocab_size == config.vocab_size
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  return rows


def check_summary(run: FinishedRun, rows):
  table = (run.workdir / "summary.md").read_text()
  assert table.strip() in run.printed
  first, last = rows[0], rows[3]
  for label, key in (
      ("greedy pass@1", "eval/accuracy_greedy"),
      ("sampled accuracy (T=1)", "eval/accuracy_sampled"),
  ):
    a, b = first[key], last[key]
    assert f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} |" in table


# ---------------------------------------------------------------------------- fast


def test_no_starting_checkpoint_is_an_error(tmp_path):
  config = tiny_config(TINY, **{"sft.enabled": False})
  with pytest.raises(ValueError, match="nothing to start RL from"):
    train(config, str(tmp_path))


def test_an_offline_prm_that_is_the_reference_is_an_error(tmp_path):
  # Its rewards would all be 0: refused before anything runs (no SFT, nothing written).
  config = tiny_config(TINY, **{"rl.prm_update": "none"})
  with pytest.raises(ValueError, match="every implicit reward would be 0"):
    train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  for legal in ({"rl.coef_proc": 0.0}, {"rl.ref_type": "policy"}, {"prm.checkpoint": "/x"}):
    config_checks.check_prm_source(tiny_config(TINY, **{"rl.prm_update": "none", **legal}))


def test_an_oracle_run_on_a_task_without_a_step_oracle_is_an_error(tmp_path):
  config = tiny_config(TINY, **{"rl.process_reward": "oracle", "task.name": "eurus"})
  with pytest.raises(ValueError, match="no step oracle"):
    train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_truncate_after_drops_later_steps_and_a_torn_last_line(tmp_path):
  log = MetricsLog(str(tmp_path), tensorboard=False)
  for step in range(4):
    log.write(step, {"loss": step / 2, "bad": float("nan")})
  with open(log.path, "a") as f:
    f.write('{"step": 4, "loss": 2.')  # a write cut short by SIGKILL
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1, 2, 3]
  log.truncate_after(2)
  assert read_metrics(str(tmp_path)) == [{"step": s, "bad": None, "loss": s / 2} for s in range(3)]
  log.write(3, {"loss": 9.0})
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1, 2, 3]


def test_the_refill_buffer_is_saved_as_train_split_positions():
  assert checkpointing.refill_buffer({"buffer": [3, 1, 3]}, 10) == [3, 1, 3]
  old = {"record": {"id": "r1"}, "text": "q", "token_ids": [1]}  # a prompt, as saved before
  for buffer in ([old], [10], [-1]):
    with pytest.raises(ValueError, match="not a list of train-split positions"):
      checkpointing.refill_buffer({"buffer": buffer}, 10)


# ---------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_outcome_only_run(outcome_run, base):
  rows = check_finished_run(outcome_run, base, prm=False)
  check_summary(outcome_run, rows)
  assert not any(k.startswith(("prm/", "prm_credit/")) for row in rows for k in row)


@pytest.mark.slow
def test_prime_run(prime_run, base):
  rows = check_finished_run(prime_run, base, prm=True)
  check_summary(prime_run, rows)
  for row in rows[1:]:
    assert 0.0 <= row["prm/acc_before"] <= 1.0
  # The PRM's process credit on held-out mistake pairs, at every eval (steps 0, 2, 3).
  credit = [r for r in rows if "prm_credit/dip_mean" in r]
  assert [r["step"] for r in credit] == [0, 2, 3]
  for row in credit:
    assert all(np.isfinite(row[f"prm_credit/{k}"]) for k in CREDIT), row
    assert row["prm_credit/num_pairs"] == TINY["eval.prm_credit_pairs"]
    assert 0.0 < row["prm_credit/localisation_chance"] < 0.5
    assert row["prm_credit/beta_nll_ref_mean"] > 0
  # Before RL the PRM is the reference (both the SFT model): no credit at all, exactly.
  first = credit[0]
  assert first["prm_credit/dip_mean"] == 0.0 and first["prm_credit/pair_accuracy"] == 0.0
  assert first["prm_credit/localisation"] == pytest.approx(
      first["prm_credit/localisation_chance"], abs=1e-12
  )
  assert credit[-1]["prm_credit/dip_mean"] != 0.0  # three PRM updates later it moved


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ppo", "prm_value"])
def test_the_other_estimators_train_from_the_sft_checkpoint(base, tmp_path, estimator):
  # PPO's value head is not in the SFT checkpoint: it starts at zero on the loaded trunk.
  run = run_in_process(
      tiny_config(base, **{"rl.estimator": estimator, "total_steps": 1}), tmp_path / "run"
  )
  rows = read_metrics(str(run.workdir))
  assert [r["step"] for r in rows] == [0, 1]
  assert np.isfinite(rows[1]["policy/loss"]) and 0.0 <= rows[1]["prm/acc_before"] <= 1.0
  if estimator == "ppo":
    assert np.isfinite(rows[1]["policy/value_loss"]) and rows[1]["policy/value_loss"] > 0


@pytest.mark.slow
def test_a_partial_rollout_run_carries_unfinished_groups_over_steps(base, tmp_path):
  """rl.partial_rollout_steps=4: sampling rounds of 4 decode steps (responses run to 24 tokens);
  groups still running when a step has its batch carry over, and the checkpoint's refill buffer
  holds them too, so a resume restarts them from their prompts."""
  overrides = {"rl.partial_rollout_steps": 4, "total_steps": 2, "eval_every": 0}
  run = run_in_process(tiny_config(base, **OUTCOME_ONLY, **overrides), tmp_path / "run")
  rows = read_metrics(str(run.workdir))[1:]
  assert [r["step"] for r in rows] == [1, 2]
  for row in rows:
    assert all(np.isfinite(row[k]) for k in LOSSES), row
    assert row["rollout/rounds"] > 1 and 0 < row["rollout/utilisation"] <= 1
  assert any(row["rollout/in_flight_groups"] > 0 for row in rows)
  checkpoints = Checkpointer(os.path.join(run.workdir, "checkpoints"))
  args = ocp.args.Composite(run_state=ocp.args.JsonRestore())
  saved = checkpoints.manager.restore(2, args=args)["run_state"]["buffer"]
  checkpoints.close()
  last = rows[-1]
  assert len(saved) == last["rollout/refill_buffer"] + last["rollout/in_flight_groups"]


@pytest.mark.slow
def test_an_oracle_run_trains_without_a_prm(base, tmp_path):
  """rl.process_reward=oracle: the step oracle's rewards reach the step, no PRM is built, saved
  or exported."""
  run = run_in_process(
      tiny_config(base, **{"rl.process_reward": "oracle", "total_steps": 1}), tmp_path / "run"
  )
  rows = read_metrics(str(run.workdir))
  assert [r["step"] for r in rows] == [0, 1]
  assert 0.0 <= rows[1]["rollout/oracle_wrong_step_frac"] <= 1.0
  assert np.isfinite(rows[1]["policy/loss"]) and np.isfinite(rows[1]["process_reward_mean"])
  assert not any(k.startswith("prm/") for k in rows[1])
  assert (run.workdir / "export" / "policy").exists()
  assert not (run.workdir / "export" / "prm").exists()


@pytest.mark.slow
def test_rerunning_a_finished_workdir_reports_its_last_eval(prime_run, base, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(prime_run.workdir, workdir)
  rerun = run_in_process(tiny_config(base), workdir)
  assert rerun.result == prime_run.result  # no step ran; the table is the finished run's
  assert (workdir / "summary.md").read_text() == (prime_run.workdir / "summary.md").read_text()
  manager = Checkpointer(os.path.join(workdir, "checkpoints"))
  state = manager.manager.restore(3, args=ocp.args.Composite(run_state=ocp.args.JsonRestore()))[
      "run_state"
  ]
  manager.close()
  last = {k: v for k, v in read_metrics(str(workdir))[3].items() if k.startswith(EVAL_KEYS)}
  assert state["last_eval"] == last


@pytest.mark.slow
def test_a_gcs_workdir_holds_what_a_local_one_does(
    prime_run, base, gcs, tmp_path, monkeypatch, caplog
):
  """prime_run's config on gs://bucket/run (an in-memory fake GCS, tests/fake_gcs.py) whose SFT
  model a previous run left at gs://bucket/run/sft: the same metrics, summary and exports, and
  running it again resumes. Checkpoints go to a local directory: orbax writes arrays through
  tensorstore's own GCS driver, which the fake does not reach."""
  workdir = "gs://bucket/run"
  paths.copy_tree(base["sft.checkpoint"], f"{workdir}/sft")
  real_checkpointer = train_module.Checkpointer

  def checkpointer(directory, **kwargs):
    assert directory == f"{workdir}/checkpoints"
    return real_checkpointer(str(tmp_path / "checkpoints"), **kwargs)

  monkeypatch.setattr(train_module, "Checkpointer", checkpointer)
  monkeypatch.chdir(tmp_path)
  config = tiny_config(base, **{"sft.checkpoint": ""})
  caplog.set_level("INFO", logger="absl")
  for attempt in range(2):  # the second one resumes from step 3 and only exports again
    caplog.clear()
    run = run_in_process(config, workdir)
    assert ("resumed from step 3" in caplog.text) == bool(attempt)
    assert_same_metrics(read_metrics(workdir), read_metrics(str(prime_run.workdir)))
    assert run.result["first_eval"] == prime_run.result["first_eval"]
    if not attempt:
      assert run.result == prime_run.result
      assert (epath.Path(workdir) / "summary.md").read_text() == (
          prime_run.workdir / "summary.md"
      ).read_text()
    for name in ("policy", "prm"):
      down = tmp_path / f"export{attempt}" / name
      paths.copy_tree(f"{workdir}/export/{name}", down)
      assert sorted(os.listdir(down)) == sorted(os.listdir(prime_run.workdir / "export" / name))
      _, got = load_hf_checkpoint(str(down))
      _, want = load_hf_checkpoint(str(prime_run.workdir / "export" / name))
      jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  assert any("/tensorboard/events.out.tfevents." in f for f in gcs.files())
  assert not any("/data/" in f for f in gcs.files())  # the task's records stay local
  assert not os.path.exists(tmp_path / "gs:")


class TrainCLI:
  """`python -m prime_jax.train` subprocesses, each in its own process group (the run and its
  grader workers) with its output in a log file; any still running at teardown are killed."""

  def __init__(self, config_file, cache_dir, log_dir):
    self.config_file, self.cache_dir, self.log_dir = config_file, cache_dir, log_dir
    self.processes = []

  def start(self, workdir, *, args=(), env=None):
    """`args`: more command-line flags; `env`: more environment variables."""
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "JAX_COMPILATION_CACHE_DIR": self.cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "prime_jax.train",
        f"--config={self.config_file}",
        f"--workdir={workdir}",
        f"--config.total_steps={TINY['total_steps']}",
        *args,
    ]
    path = os.path.join(self.log_dir, f"run{len(self.processes)}.log")
    with open(path, "w") as log:
      process = subprocess.Popen(
          command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
      )
    process.log = path
    self.processes.append(process)
    return process

  @staticmethod
  def output(process):
    with open(process.log) as f:
      return f.read()

  def finish(self, process, timeout=600):
    process.wait(timeout=timeout)
    assert process.returncode == 0, self.output(process)[-3000:]
    return self.output(process)

  def kill_all(self):
    for process in self.processes:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def train_cli(base, compile_cache, tmp_path):
  config_file = tmp_path / "tiny_prime.py"
  # total_steps comes from the command line (the file keeps the default's 30): an override
  # that did not reach the run would show in its metrics.
  file_overrides = {k: v for k, v in base.items() if k != "total_steps"}
  config_file.write_text(CONFIG_FILE.format(overrides=file_overrides))
  cli = TrainCLI(str(config_file), compile_cache, str(tmp_path))
  yield cli
  cli.kill_all()


def last_step(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  rows = read_metrics(workdir) if os.path.exists(path) else []
  return rows[-1]["step"] if rows else None


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(prime_run, train_cli, tmp_path):
  """SIGKILL the CLI mid-run, resume it: the same metrics and models as prime_run (the same
  config run uninterrupted in this process; it also filled the compilation cache)."""
  workdir = str(tmp_path / "killed")
  victim = train_cli.start(workdir)
  deadline = time.monotonic() + 300
  # Once step 2 is logged and step 1's checkpoint committed, the run is saving step 2 or
  # running step 3, and a resume has real state to restore (optimiser moments, the data
  # position, the refill buffer).
  while not (
      (last_step(workdir) or 0) >= 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "1"))
  ):
    assert victim.poll() is None, "the run ended before it could be killed:\n" + (
        train_cli.output(victim)[-3000:]
    )
    assert time.monotonic() < deadline, "no step 2 within 300 s"
    time.sleep(0.01)
  os.killpg(victim.pid, signal.SIGKILL)  # the run and its grader workers, like a lost machine
  victim.wait()
  assert not os.path.exists(os.path.join(workdir, "export"))  # it had not finished

  out = train_cli.finish(train_cli.start(workdir))
  resumed_from = re.search(r"resumed from step (\d+)", out)
  assert resumed_from and int(resumed_from.group(1)) >= 1, out[-3000:]
  # What the user sees: one line per eval, no INFO flood (orbax logs ~40 lines per checkpoint).
  assert re.search(r"^eval at step 3: greedy \d\.\d{3}, sampled", out, re.M), out[-3000:]
  assert not re.search(r"^I\d{4} ", out, re.M), out[-3000:]
  assert_same_metrics(read_metrics(workdir), read_metrics(str(prime_run.workdir)))
  assert (tmp_path / "killed" / "summary.md").read_text() == (
      prime_run.workdir / "summary.md"
  ).read_text()
  for name in ("policy", "prm"):
    _, resumed = load_hf_checkpoint(os.path.join(workdir, "export", name))
    _, uninterrupted = load_hf_checkpoint(os.path.join(prime_run.workdir, "export", name))
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed, uninterrupted)


# ---------------------------------------------------------------------------- errors


def mismatched_checkpoint(base, directory):
  """An HF checkpoint with the SFT model's tokenizer but hidden size 48 instead of 32."""
  tokenizer = load_tokenizer(base["sft.checkpoint"])
  config = sft.model_config_for(
      tiny_config(base, **{"policy.init.hidden_size": 48}), tokenizer.vocab_size
  )
  shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(1)))  # no compile
  params = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.01, s.dtype), shapes)
  save_hf_checkpoint(
      str(directory),
      config,
      params,
      extra_config=dict(eos_token_id=tokenizer.eos_ids[0], pad_token_id=tokenizer.pad_id),
  )
  shutil.copy(os.path.join(base["sft.checkpoint"], "tokenizer.model"), directory)
  return str(directory)


@pytest.mark.slow
def test_resuming_onto_a_different_model_names_the_mismatched_entries(base, prime_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(prime_run.workdir, workdir)
  other = mismatched_checkpoint(base, tmp_path / "hidden48")
  config = tiny_config(base, **{"sft.enabled": False, "policy.checkpoint": other})
  vocab = load_tokenizer(other).vocab_size
  with pytest.raises(CheckpointMismatchError) as e:
    train(config, str(workdir))
  message = str(e.value)
  assert "checkpoint step 3" in message
  assert (
      f"policy/params/embed_tokens/embedding: checkpoint has shape ({vocab}, 32), the "
      f"config expects ({vocab}, 48)"
  ) in message


@pytest.mark.slow
def test_resuming_outcome_only_checkpoints_in_prime_mode_names_the_prm(base, outcome_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(outcome_run.workdir, workdir)
  with pytest.raises(CheckpointMismatchError, match="prm: missing from the checkpoint"):
    train(tiny_config(base), str(workdir))


def poison_step(at_call: int):
  """make_update_step whose `at_call`-th update returns NaN params and a NaN policy loss."""
  real_make = train_module.make_update_step

  def make(config, mesh, model_config):
    real = real_make(config, mesh, model_config)
    calls = []

    def step(policy, prm, ref, inputs, key):
      policy, prm, metrics = real(policy, prm, ref, inputs, key)
      calls.append(None)
      if len(calls) == at_call:
        policy = policy.replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, policy.params))
        metrics = dict(metrics, **{"policy/loss": jnp.float32(jnp.nan)})
      return policy, prm, metrics

    return step

  return make


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    base, prime_run, tmp_path, monkeypatch
):
  config = tiny_config(base)
  monkeypatch.setattr(train_module, "make_update_step", poison_step(at_call=2))
  with pytest.raises(FloatingPointError) as e:
    train(config, str(tmp_path))
  message = str(e.value)
  assert message.startswith("step 2: non-finite {'policy/loss': nan}")
  assert "last good checkpoint (step 1) is kept" in message and "rl.lr" in message
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1]
  checkpoints = Checkpointer(os.path.join(tmp_path, "checkpoints"))
  assert checkpoints.manager.all_steps() == [0, 1]
  checkpoints.close()
  assert not os.path.exists(tmp_path / "export")

  # The kept checkpoint is intact: resuming from it reproduces the uninterrupted run.
  monkeypatch.undo()
  train(config, str(tmp_path))
  assert_same_metrics(read_metrics(str(tmp_path)), read_metrics(str(prime_run.workdir)))
