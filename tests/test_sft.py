"""The SFT stage on a tiny model: loss goes down, checkpoint loads, skip-if-exists, CLI."""

import functools
import json
import os
import subprocess
import sys

import jax
import pytest

from prime_jax import configs, sft
from prime_jax.models import init_params, load_hf_checkpoint
from prime_jax.scoring import token_logprobs
from prime_jax.tasks import get_task
from prime_jax.tokenizer import load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = configs.arithmetic_config()
  c.policy.init.update(
      dict(
          hidden_size=32,
          num_layers=1,
          num_heads=2,
          num_kv_heads=1,
          head_dim=16,
          intermediate_size=64,
      )
  )
  c.task.update(dict(num_train=500, num_eval=8, min_ops=1, max_ops=2, user_suffix=False))
  c.sft.update(
      dict(
          steps=40, batch_size=16, lr=1e-2, end_lr=1e-3, warmup_steps=5, grad_clip=1.0, log_every=10
      )
  )
  c.eval.update(dict(num_prompts=8, max_new_tokens=12, batch_size=8))
  return c


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
  """One tiny SFT run, started over the leftovers of a killed one."""
  workdir = tmp_path_factory.mktemp("sft_run")
  config = tiny_config()
  out = sft.sft_checkpoint_dir(config, workdir)
  for d in (out, out.with_name(out.name + ".tmp")):
    d.mkdir(parents=True)
    (d / "stale").write_text("from a killed run")
  return config, workdir, sft.run_sft(config, workdir)


def mean_nll(params, model_config, batch):
  logprobs = token_logprobs(
      params,
      batch["prompt_tokens"],
      batch["prompt_valid"],
      batch["response_tokens"],
      batch["response_mask"],
      config=model_config,
  )
  return float(-logprobs.sum() / batch["response_mask"].sum())


def test_batches_hold_prompt_context_and_response_targets(tmp_path):
  c = tiny_config()
  c.sft.steps = 3
  task = get_task("arithmetic")
  tok = load_tokenizer(task.train_tokenizer(c.task, tmp_path, seed=0))
  records = task.make_splits(c.task, seed=0)["train"]
  batches = list(sft.demonstration_batches(task, c, tok, records))
  assert len(batches) == 3
  prompts = {r.chat()[0]["content"] for r in records}
  for batch in batches:
    assert {k: v.shape[0] for k, v in batch.items()} == dict.fromkeys(batch, 16)
    for pt, pv, rt, rm in zip(
        batch["prompt_tokens"],
        batch["prompt_valid"],
        batch["response_tokens"],
        batch["response_mask"],
    ):
      assert tok.decode(pt[pv]) in prompts  # rendered as RL renders it: plain text by default
      assert pv[-1] and rm[0]  # left-padded prompt, right-padded response
      response = rt[rm]
      assert response[-1] == tok.eos_ids[0] and tok.eos_ids[0] not in response[:-1]
      assert "\\boxed{" in tok.decode(response)
      assert (rt[~rm] == tok.pad_id).all()


def test_sft_lowers_the_loss_and_writes_a_loadable_checkpoint(sft_run):
  config, _, out = sft_run
  assert out == sft.sft_checkpoint_dir(config, sft_run[1]) and sft.is_finished(out)
  assert not out.with_name(out.name + ".tmp").exists() and not (out / "stale").exists()
  losses = [json.loads(line)["loss"] for line in (out / sft.METRICS).read_text().splitlines()]
  assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]

  info = json.loads((out / sft.SFT_INFO).read_text())
  for key in ("accuracy_greedy", "accuracy_sampled", "filter_pass_rate"):
    assert 0.0 <= info[key] <= 1.0
  assert (info["num_prompts"], info["n_samples"], info["steps"]) == (8, 4, 40)

  # The checkpoint holds the trained weights: they fit fresh demonstrations better than an init.
  model_config, params = load_hf_checkpoint(str(out))
  tok = load_tokenizer(out)
  assert model_config.vocab_size == tok.vocab_size
  assert json.loads((out / "config.json").read_text())["eos_token_id"] == tok.eos_ids[0]
  task = get_task("arithmetic")
  c = tiny_config()
  c.seed, c.sft.steps = 7, 1
  batch = next(sft.demonstration_batches(task, c, tok, task.make_splits(c.task, 0)["eval"]))
  init = jax.jit(functools.partial(init_params, model_config))(jax.random.key(123))
  assert mean_nll(params, model_config, batch) < 0.8 * mean_nll(init, model_config, batch)


def test_a_finished_checkpoint_is_reused(sft_run, monkeypatch):
  config, workdir, out = sft_run
  before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

  def no_training(*args, **kwargs):
    raise AssertionError("SFT ran again")

  monkeypatch.setattr(sft, "get_task", no_training)
  assert sft.run_sft(config, workdir) == out
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

  other = tiny_config()
  other.sft.lr = 5e-3
  with pytest.raises(ValueError, match=r"other settings \(sft.lr\)"):
    sft.run_sft(other, workdir)


def test_a_policy_checkpoint_is_refused(tmp_path):
  c = tiny_config()
  c.policy.checkpoint = "/some/model"
  with pytest.raises(ValueError, match="random init"):
    sft.run_sft(c, tmp_path)


def test_cli_with_a_config_file(sft_run, tmp_path):
  _, _, out = sft_run
  config_file = tmp_path / "tiny.py"
  config_file.write_text(
      "import sys\n"
      f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
      "from test_sft import tiny_config\n"
      "def get_config():\n"
      "  return tiny_config()\n"
  )
  cmd = [
      sys.executable,
      "-m",
      "prime_jax.sft",
      f"--config={config_file}",
      f"--config.sft.checkpoint={out}",
  ]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == str(out)
