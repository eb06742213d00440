r"""SFT stage for the built-in synthetic tasks: a small decoder trained from scratch on demonstrations.

    python -m prime_jax.sft [--config=experiments/configs/NAME.py] --workdir=DIR

(no --config: `prime_jax.configs.arithmetic_config()`). The trainer calls `run_sft(config, workdir)`
when `config.sft.enabled` and uses the directory it returns as the policy/PRM/reference checkpoint.

What it does:
  1. builds the task's splits (deterministic in `config.seed`) and trains its tokenizer;
  2. trains a random-init decoder (`config.policy.init`, vocab from the tokenizer) on
     `sft.steps * sft.batch_size` fresh demonstrations (with the task's step mistakes) with AdamW,
     linear warmup then cosine decay from `sft.lr` to `sft.end_lr`; the loss is the token-mean
     cross-entropy of response tokens (EOS included), the prompt is context only;
  3. evaluates on the eval split with the shared sampler (`prime_jax.generation.evaluate`): greedy
     accuracy, accuracy of `rl.n_samples` samples per prompt at `rl.temperature`, and the share of
     those groups the online filter (`rl.filter_lo..filter_hi`) would keep;
  4. writes a Hugging Face checkpoint directory (config.json + safetensors, the tokenizer files,
     `metrics.jsonl` with the loss curve, `manifest.json` with every file's size and digest and
     `SFT_INFO` with the evaluation), atomically: the directory appears complete or not at all.
     An existing finished directory is reused when it is intact; a damaged one (a file cut
     short, missing or changed) is moved aside to `corrupt-<name>-<time>` and trained again.

Prompts are rendered by `prime_jax.data.PromptEncoder` with `config.task`'s format, exactly as RL
renders them.

Calibration (arithmetic_config(), 2-core CPU): see the report in the module's commit; with the
default settings the model lands at roughly 20-70% accuracy at temperature 1.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from prime_jax import configs, console, model_files, paths
from prime_jax.config_checks import validate
from prime_jax.data import Record
from prime_jax.generation import evaluate, prompt_encoder
from prime_jax.models import DecoderConfig, init_params, save_hf_checkpoint
from prime_jax.scoring import pad_sequences, token_logprobs
from prime_jax.tasks import get_task
from prime_jax.tokenizer import Tokenizer, load_tokenizer

SFT_INFO = "sft_info.json"  # written last: its presence marks a finished checkpoint
METRICS = "metrics.jsonl"
# Settings whose change makes an existing SFT checkpoint a different model (minus paths and switches).
_IDENTITY_KEYS = ("seed", "task", "sft", "policy")
_NOT_IDENTITY = ("task.data_dir", "sft.enabled", "sft.checkpoint", "policy.checkpoint")


def sft_checkpoint_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
  """`config.sft.checkpoint`, or `<workdir>/sft` when that is empty."""
  return Path(config.sft.checkpoint or Path(workdir) / "sft")


def is_finished(checkpoint_dir: str | os.PathLike) -> bool:
  return (Path(checkpoint_dir) / SFT_INFO).is_file()


def _identity(config: ml_collections.ConfigDict) -> dict:
  """The settings that define the SFT model, flattened to {"sft.lr": 0.003, ...}."""

  def flatten(tree, prefix):
    if not isinstance(tree, dict):
      return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}.{key}").items()}

  plain = json.loads(config.to_json_best_effort())
  return {
      k: v
      for key in _IDENTITY_KEYS
      for k, v in flatten(plain[key], key).items()
      if k not in _NOT_IDENTITY
  }


def _damage(checkpoint_dir: Path) -> list[str]:
  """Why a finished SFT checkpoint cannot be used as it is (empty: it is intact)."""
  try:
    info = json.loads((checkpoint_dir / SFT_INFO).read_text())
  except ValueError:  # cut short, or not text
    info = None
  if not (isinstance(info, dict) and isinstance(info.get("config"), dict)):
    return [f"{SFT_INFO} is unreadable"]
  return model_files.problems(checkpoint_dir)


def _check_reusable(checkpoint_dir: Path, config: ml_collections.ConfigDict) -> None:
  recorded = json.loads((checkpoint_dir / SFT_INFO).read_text())["config"]
  wanted = _identity(config)
  differ = sorted(k for k in recorded.keys() | wanted.keys() if recorded.get(k) != wanted.get(k))
  if differ:
    raise ValueError(
        f"the SFT checkpoint {checkpoint_dir} was trained with other settings "
        f"({', '.join(differ)}); delete it or choose another sft.checkpoint / workdir"
    )


def model_config_for(config: ml_collections.ConfigDict, vocab_size: int) -> DecoderConfig:
  init = config.policy.init.to_dict()
  init["vocab_size"] = init["vocab_size"] or vocab_size
  if init["vocab_size"] < vocab_size:
    raise ValueError(
        f"policy.init.vocab_size={init['vocab_size']} is smaller than the "
        f"tokenizer's {vocab_size} tokens"
    )
  return DecoderConfig(**init, dtype=config.policy.dtype, remat=config.policy.remat)


# --------------------------------------------------------------------------- data


def demonstration_batches(
    task, config: ml_collections.ConfigDict, tokenizer: Tokenizer, records: list[Record]
) -> Iterator[dict[str, np.ndarray]]:
  """`sft.steps` batches of fresh demonstrations of uniformly drawn train records.

  All are drawn up front so that every batch has the same shapes and the step compiles once:
  prompts left-padded to the longest prompt drawn, responses right-padded to the longest one.
  Yields {"prompt_tokens", "prompt_valid": [B, P], "response_tokens", "response_mask": [B, T]}.
  """
  rng = np.random.default_rng([config.seed, 3])
  encoder = prompt_encoder(config, tokenizer)
  batch_size = config.sft.batch_size
  prompts: dict[int, list[int]] = {}
  demos = []
  for _ in range(config.sft.steps * batch_size):
    i = int(rng.integers(len(records)))
    if i not in prompts:
      prompts[i] = list(encoder.encode(records[i]).token_ids)
    response = task.demonstration(config.task, records[i], rng)
    demos.append((i, tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_ids[0]]))
  prompt_len = max(len(p) for p in prompts.values())
  response_len = max(len(r) for _, r in demos)
  for start in range(0, len(demos), batch_size):
    chunk = demos[start : start + batch_size]
    pt, pv = pad_sequences(
        [prompts[i] for i, _ in chunk], length=prompt_len, pad_id=tokenizer.pad_id, left=True
    )
    rt, rm = pad_sequences(
        [r for _, r in chunk], length=response_len, pad_id=tokenizer.pad_id, left=False
    )
    yield dict(prompt_tokens=pt, prompt_valid=pv, response_tokens=rt, response_mask=rm)


# --------------------------------------------------------------------------- training


def make_optimizer(sft: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW after global-norm clipping; lr: linear warmup 0 -> lr, cosine decay to end_lr."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0,
      sft.lr,
      warmup_steps=sft.warmup_steps,
      decay_steps=max(sft.steps, sft.warmup_steps + 1),
      end_value=sft.end_lr,
  )
  return optax.chain(
      optax.clip_by_global_norm(sft.grad_clip), optax.adamw(schedule, weight_decay=sft.weight_decay)
  )


def make_train_step(model_config: DecoderConfig, optimizer: optax.GradientTransformation):
  """Jitted (params, opt_state, batch) -> (params, opt_state, loss); params/opt_state donated."""

  def loss_fn(params, batch):
    logprobs = token_logprobs(
        params,
        batch["prompt_tokens"],
        batch["prompt_valid"],
        batch["response_tokens"],
        batch["response_mask"],
        config=model_config,
    )
    return -jnp.sum(logprobs) / jnp.maximum(jnp.sum(batch["response_mask"]), 1)

  def train_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(train_step, donate_argnums=(0, 1))


# --------------------------------------------------------------------------- the stage


def run_sft(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
  """Trains, evaluates and saves the SFT model; returns its HF checkpoint directory.

  A finished checkpoint (one holding SFT_INFO) is returned as it is, after checking it is
  intact and was trained with the same seed/task/sft/policy settings. A damaged one is moved
  aside, never deleted, and trained again: SFT is a function of the config and the seed.
  """
  validate(config)
  out_dir = sft_checkpoint_dir(config, workdir)
  if is_finished(out_dir):
    damage = _damage(out_dir)
    if not damage:
      _check_reusable(out_dir, config)
      logging.info("SFT checkpoint %s exists; skipping SFT", out_dir)
      return out_dir
    moved = paths.move_aside(out_dir, f"corrupt-{out_dir.name}")
    console.say(
        f"the SFT checkpoint {out_dir} is damaged ({'; '.join(damage[:3])}): moved aside to "
        f"{moved}; training it again"
    )
  if config.policy.checkpoint:
    raise ValueError(
        "SFT trains from a random init: policy.checkpoint must be empty "
        f"(got {config.policy.checkpoint!r})"
    )
  start_time, start_cpu = time.time(), time.process_time()
  task = get_task(config.task.name)
  tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
  shutil.rmtree(tmp_dir, ignore_errors=True)
  tmp_dir.mkdir(parents=True)

  splits = task.make_splits(config.task, config.seed)
  task.train_tokenizer(config.task, tmp_dir, config.seed)
  tokenizer = load_tokenizer(tmp_dir)
  model_config = model_config_for(config, tokenizer.vocab_size)
  logging.info(
      "SFT: %s, %d params, vocab %d, %d steps x %d demonstrations",
      config.task.name,
      model_config.num_params,
      tokenizer.vocab_size,
      config.sft.steps,
      config.sft.batch_size,
  )

  key = jax.random.key(config.seed)
  # Jitted: run eagerly, init compiles each of its many small ops on its own (~15 s on a CPU).
  params = jax.jit(functools.partial(init_params, model_config))(jax.random.fold_in(key, 0))
  optimizer = make_optimizer(config.sft)
  opt_state = jax.jit(optimizer.init)(params)
  train_step = make_train_step(model_config, optimizer)
  log_every = max(1, config.sft.log_every)
  losses = []
  bar = console.progress(config.sft.steps, "SFT")
  with open(tmp_dir / METRICS, "w") as metrics, bar:
    for step, batch in enumerate(
        demonstration_batches(task, config, tokenizer, splits["train"]), start=1
    ):
      params, opt_state, loss = train_step(params, opt_state, batch)
      losses.append(loss)
      bar.update(1)
      if step % log_every == 0 or step == config.sft.steps:
        mean_loss = float(np.mean(jax.device_get(losses)))
        if not math.isfinite(mean_loss):
          raise FloatingPointError(f"SFT loss is {mean_loss} at step {step}; lower sft.lr")
        losses = []
        metrics.write(
            json.dumps(
                dict(step=step, loss=mean_loss, elapsed_s=round(time.time() - start_time, 2))
            )
            + "\n"
        )
        metrics.flush()
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        logging.info("SFT step %d/%d  loss %.4f", step, config.sft.steps, mean_loss)
  train_time, train_cpu = time.time() - start_time, time.process_time() - start_cpu

  results = evaluate(
      params, model_config, tokenizer, splits["eval"], config, jax.random.fold_in(key, 1)
  )
  save_hf_checkpoint(
      str(tmp_dir),
      model_config,
      params,
      extra_config=dict(
          eos_token_id=tokenizer.eos_ids[0],
          pad_token_id=tokenizer.pad_id,
          bos_token_id=tokenizer.bos_id,
      ),
  )
  # CPU seconds (all threads) next to wall seconds: on a shared machine only the former is stable.
  info = dict(
      results,
      steps=config.sft.steps,
      final_loss=mean_loss,
      train_time_s=train_time,
      train_cpu_s=train_cpu,
      wall_time_s=time.time() - start_time,
      cpu_time_s=time.process_time() - start_cpu,
      num_params=model_config.num_params,
      config=_identity(config),
  )
  model_files.write_manifest(tmp_dir)
  (tmp_dir / SFT_INFO).write_text(json.dumps(info, indent=2))
  shutil.rmtree(out_dir, ignore_errors=True)  # an unfinished earlier attempt
  os.replace(tmp_dir, out_dir)
  console.say(
      f"SFT done in {info['wall_time_s']:.0f} s: greedy accuracy {info['accuracy_greedy']:.3f}, "
      f"sampled accuracy {info['accuracy_sampled']:.3f}, filter pass rate "
      f"{info['filter_pass_rate']:.3f} -> {out_dir}"
  )
  return out_dir


# --------------------------------------------------------------------------- CLI


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.quiet_library_logs()
  config = flags.FLAGS.config if flags.FLAGS.config is not None else configs.arithmetic_config()
  if not flags.FLAGS.workdir and not config.sft.checkpoint:
    raise app.UsageError("--workdir (or --config.sft.checkpoint) is required")
  print(run_sft(config, flags.FLAGS.workdir or ""))


if __name__ == "__main__":
  # Flags live here, not at import: the trainer imports this module and defines its own --config.
  config_flags.DEFINE_config_file(
      "config",
      None,
      "Config file (get_config()); default: " "prime_jax.configs.arithmetic_config().",
  )
  flags.DEFINE_string(
      "workdir", None, "Run directory; the checkpoint goes to sft.checkpoint or " "<workdir>/sft."
  )
  app.run(main)
