"""Configs: the released run's defaults, experiment files, command-line overrides and unknown-key errors."""

import functools
import glob
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from prime_jax import config_checks, configs
from prime_jax.train import DEFAULT_CONFIG

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "configs", "*.py")))


def parse(argv):
  """The `--config` flag of prime_jax.train, parsed from `argv` into fresh FlagValues."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


def run_cli(*args):
  """`python -m prime_jax.train ARGS --only_check_args`: parses the flags, trains nothing."""
  return subprocess.run(
      [sys.executable, "-m", "prime_jax.train", *args, "--only_check_args"],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )


def expected_experiment(name):
  config = configs.arithmetic_config()
  if name == "arithmetic_rloo":
    config.rl.coef_proc = 0.0
  return config.to_dict()


def test_spec_defaults():
  c = configs.base_config()
  spec = {  # the released Eurus-2-7B-PRIME run's settings (docs/algorithm.md)
      "rl.batch_prompts": 256,
      "rl.n_samples": 4,
      "rl.max_prompt_len": 1024,
      "rl.max_new_tokens": 3072,
      "rl.temperature": 1.0,
      "rl.top_p": 1.0,
      "rl.top_k": 0,
      "rl.filter_lo": 0.2,
      "rl.filter_hi": 0.8,
      "rl.filter_truncated": False,
      "rl.ref_type": "freeze",
      "rl.granularity": "token",
      "rl.reward_scale": "none",
      "rl.prime_norm": "batch_norm",
      "rl.norm_shards": 8,
      "rl.beta": 0.05,
      "rl.prm_update": "after",
      "rl.prm_loss": "ce",
      "rl.prm_lr": 1e-6,
      "rl.prm_weight_decay": 0.0,
      "rl.prm_grad_clip": 10.0,
      "rl.prm_mini_batch": 256,
      "rl.prm_batch_order": "strided",
      "rl.estimator": "rloo",
      "rl.coef_proc": 1.0,
      "rl.coef_out": 1.0,
      "rl.gamma_proc": 1.0,
      "rl.gamma_out": 1.0,
      "rl.gae_gamma": 1.0,
      "rl.gae_lambda": 1.0,
      "rl.rloo_form": "code",
      "rl.grpo_form": "stable",
      "rl.whiten_advantages": True,
      "rl.clip_eps": 0.2,
      "rl.loss_agg": "seq-mean-token-mean",
      "rl.entropy_coef": 0.0,
      "rl.kl_coef": 0.0,
      "rl.ppo_epochs": 1,
      "rl.mini_batch": 256,
      "rl.lr": 5e-7,
      "rl.weight_decay": 0.01,
      "rl.grad_clip": 1.0,
      "total_steps": 592,
      "eval_every": 16,
      "ckpt_every": 16,
  }
  got = {key: functools.reduce(getattr, key.split("."), c) for key in spec}
  assert got == spec


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_configs_load(path):
  config = parse(["train", f"--config={path}"])
  assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
  name = os.path.basename(path)[:-3]
  if name in ("arithmetic_prime", "arithmetic_rloo"):
    assert config.to_dict() == expected_experiment(name)


def test_experiment_files_cover_the_documented_runs():
  assert {os.path.basename(p) for p in EXPERIMENTS} >= {"arithmetic_prime.py", "arithmetic_rloo.py"}


def test_no_config_flag_means_the_embedded_default():
  assert parse(["train"]).to_dict() == configs.arithmetic_config().to_dict()


def test_overrides_reach_the_config_with_their_types():
  path = os.path.join(REPO, "experiments", "configs", "arithmetic_rloo.py")
  config = parse(
      [
          "train",
          f"--config={path}",
          "--config.rl.beta=0.1",
          "--config.policy.init.hidden_size=48",
          "--config.task.name=eurus",
          "--config.rl.filter_truncated",
          "--config.rl.n_samples=8",
      ]
  )
  assert config.rl.beta == 0.1 and isinstance(config.rl.beta, float)
  assert config.policy.init.hidden_size == 48 and config.task.name == "eurus"
  assert config.rl.filter_truncated is True and config.rl.n_samples == 8
  assert config.rl.coef_proc == 0.0  # the file's own setting survives
  untouched = expected_experiment("arithmetic_rloo")
  got = config.to_dict()
  for section, key in (
      ("rl", "beta"),
      ("rl", "filter_truncated"),
      ("rl", "n_samples"),
      ("task", "name"),
  ):
    del untouched[section][key], got[section][key]
  del untouched["policy"]["init"]["hidden_size"], got["policy"]["init"]["hidden_size"]
  assert got == untouched


def test_an_override_of_the_wrong_type_is_an_error():
  with pytest.raises(flags.IllegalFlagValueError, match="rl.beta"):
    parse(["train", "--config.rl.beta=abc"])


def test_a_locked_config_refuses_unknown_fields_in_code():
  config = parse(["train"])
  with pytest.raises((AttributeError, KeyError), match="bta"):
    config.rl.bta = 0.1


def test_cli_accepts_a_known_override():
  result = run_cli("--config.rl.beta=0.1", "--config.policy.init.hidden_size=48")
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "config_arg",
    [[], ["--config=experiments/configs/arithmetic_rloo.py"]],
    ids=["default_config", "config_file"],
)
def test_cli_rejects_a_mistyped_override_naming_it(config_arg):
  result = run_cli(*config_arg, "--config.rl.beta=0.1", "--config.rl.bta=0.1")
  assert result.returncode != 0
  assert "--config.rl.bta: no such config field 'bta'" in result.stderr
  assert 'Did you mean "beta"' in result.stderr
  assert "Traceback" not in result.stderr and "--config.rl.beta" not in result.stderr


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rl.estimator", "ppo2", r"config\.rl\.estimator='ppo2'; expected one of \('rloo'"),
        ("rl.prm_update", "later", r"config\.rl\.prm_update='later'; expected one of"),
        ("ref.param_dtype", "float16", r"config\.ref\.param_dtype='float16'; expected one of"),
        ("rl.prm_update", "none", "every implicit reward would be 0"),
        ("rl.process_reward", "oracle", None),  # arithmetic has a step oracle: valid
    ],
)
def test_validate_names_the_bad_field_and_its_allowed_values(field, value, message):
  config = configs.arithmetic_config()
  section, key = field.split(".")
  config[section][key] = value
  if message is None:
    config_checks.validate(config)
  else:
    with pytest.raises(ValueError, match=message):
      config_checks.validate(config)


def test_every_experiment_config_and_variant_validates():
  from experiments import variants

  for path in EXPERIMENTS:
    config_checks.validate(parse(["prog", f"--config={path}"]))
  for base in (configs.arithmetic_config(), configs.arithmetic_credit_config()):
    for name in variants.VARIANTS:
      config_checks.validate(variants.apply(base, name))


def test_the_sft_stage_and_the_credit_tool_validate_before_any_work(tmp_path):
  from prime_jax import sft
  from prime_jax.tools import _cli
  from prime_jax.tools.prm_credit import credit_report

  config = configs.arithmetic_config()
  config.rl.estimator = "ppo2"
  with pytest.raises(ValueError, match="config.rl.estimator='ppo2'"):
    sft.run_sft(config, str(tmp_path / "run"))
  with pytest.raises(_cli.InputError, match="--config: config.rl.estimator='ppo2'"):
    credit_report("prm", "ref", str(tmp_path / "out"), config=config, task="arithmetic")
  assert not list(tmp_path.iterdir())
