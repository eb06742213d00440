"""`python -m prime_jax.train --config=experiments/configs/NAME.py --workdir=DIR`: PRIME's RL loop.

One RL step (docs/algorithm.md), top to bottom in `train`: sample -> grade -> online filter with a
refill buffer (`prime_jax.rollout.collect_rollouts`) -> one jitted update step: implicit PRM,
advantages, PPO (`prime_jax.algo.update_step`, whose formulas are `prime_jax.algo.prime`'s) -> eval
every `eval_every` steps (`prime_jax.run_evals`) -> orbax checkpoint every `ckpt_every`. The config
is checked first (`prime_jax.config_checks.validate`); the run's set-up (SFT model, data,
tokenizer, mesh, states) and its exports are `prime_jax.run_setup`'s; the command line is
`prime_jax.train_cli`'s.

Without --config it runs the embedded default (`prime_jax.configs.arithmetic_config()`): SFT of a
tiny model on the synthetic arithmetic task, then PRIME, on a CPU. Re-running with the same
--workdir resumes from the newest intact checkpoint (a damaged one is moved aside:
`prime_jax.checkpointing`) and reproduces the uninterrupted run's metrics; a fault that needs the
user (a full disk, bad data, another model's checkpoints) stops the run with one line naming the
problem. What each fault costs: docs/reliability.md.

Several processes (hosts) run the same command (`prime_jax.distributed`: --coordinator_address,
--num_processes, --process_id, or auto-detected on Cloud TPU VMs) on a --workdir they all see.
They walk the same prompt order, each reading and grading its share of every sampling round, and
take the same decisions from the exchanged results, so the metrics equal a single-process run's
on as many devices. Process 0 writes metrics and summaries (and, in `prime_jax.run_setup`, the
data, the SFT model and the exports); orbax checkpoints are saved and restored by all. The
workdir may be local or on GCS (`--workdir=gs://BUCKET/run`, which needs `pip install gcsfs`).
"""

from __future__ import annotations

import functools
import math
import os
import time

import jax
from absl import logging
from etils import epath

from prime_jax import console, distributed, train_cli
from prime_jax.algo.step_placement import update_step_shardings
from prime_jax.algo.update_step import forward_passes, make_update_step
from prime_jax.checkpointing import Checkpointer, abstract_state, refill_buffer
from prime_jax.config_checks import validate
from prime_jax.metrics_log import MetricsLog, last_logged_step
from prime_jax.rollout import collect_rollouts
from prime_jax.rollout_engine import make_engine
from prime_jax.run_evals import eval_line, evaluate, summary_table
from prime_jax.run_setup import export, initial_states, setup
from prime_jax.sampling import sample
from prime_jax.sharding import reshard_params, sampler_rules
from prime_jax.tasks import step_oracle

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "experiments",
    "configs",
    "arithmetic_prime.py",
)

# Metrics that must be finite for the run to go on (a NaN loss stops it before it is saved).
_LOSS_KEYS = ("policy/loss", "prm/loss_before", "policy/grad_norm")


def train(config, workdir: str) -> dict:
  """Runs (or resumes) the RL loop; returns {"first_eval", "last_eval"} metric dicts."""
  validate(config)
  rl = config.rl
  # The task's step oracle (`validate` made sure the task has one).
  oracle = step_oracle(config.task.name) if rl.process_reward == "oracle" else None
  run = setup(config, workdir)
  model = run.model_config
  logging.info("model %s (%d params), mesh %s", model, model.num_params, dict(run.mesh.shape))
  shardings = update_step_shardings(config, run.mesh, model)
  policy, prm, ref = initial_states(run, shardings)
  step_fn = make_update_step(config, run.mesh, model)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_ckpts)
  log = MetricsLog(workdir, enabled=distributed.is_primary())
  base_key = jax.random.key(config.seed)
  buffer: list[int] = []  # positions of held-over prompts in the train split
  logged = last_logged_step(log)
  restored = checkpointer.restore_latest(
      abstract_state(policy), abstract_state(prm), last_logged_step=logged
  )
  if restored is None:
    log.remove()  # metrics of a run that died before its first checkpoint
    first_eval = evaluate(
        run,
        policy.params,
        jax.random.fold_in(base_key, 0),
        None if prm is None else prm.params,
        ref,
    )
    console.say(eval_line(0, first_eval))
    log.write(0, first_eval)
    checkpointer.save(
        0,
        policy,
        prm,
        dict(iterator=run.iterator.state(), buffer=[], first_eval=first_eval, last_eval=first_eval),
    )
    start, last_eval = 0, first_eval
  else:
    for line in restored.set_aside:
      console.say(line)
    start, policy, prm, state = restored.step, restored.policy, restored.prm, restored.run_state
    run.iterator.restore(state["iterator"])
    buffer = refill_buffer(state, len(run.iterator.source))
    first_eval = state["first_eval"]
    # The latest eval: a rerun of a finished workdir reports the run's table, not step 0's.
    last_eval = state.get("last_eval", first_eval)
    if logged < start:  # no intact checkpoint at or before the last metrics row was left
      console.say(
          f"{log.path} ends at step {logged}: the metrics of steps {logged + 1}-{start} are lost"
      )
    log.truncate_after(start)
    console.say(f"resumed from step {start}")

  # PRM and policy update run in one compiled graph: split its time by their forward passes.
  passes = forward_passes(rl)
  prm_share = sum(c for phase, _, c in passes if phase == "prm") / sum(c for *_, c in passes)
  checkpoint_s = 0.0
  sampler_layout = sampler_rules(config)
  # Partial rollouts (rl.partial_rollout_steps): unfinished groups carry over between steps.
  engine = make_engine(rl, model, run.tokenizer, sampler_layout)
  bar = console.progress(config.total_steps, "RL", initial=start)
  closers = (bar.close, checkpointer.wait, checkpointer.close, log.close)  # wait: the last save
  try:
    for step in range(start + 1, config.total_steps + 1):
      t0 = time.perf_counter()
      key = jax.random.fold_in(base_key, step)
      # The sampler's layout of the params (a device-to-device reshard; the same arrays
      # when sampler_rules are the training rules).
      batch, buffer, metrics = collect_rollouts(
          reshard_params(policy.params, model, run.mesh, sampler_layout),
          model_config=model,
          tokenizer=run.tokenizer,
          encoder=run.encoder,
          iterator=run.iterator,
          buffer=buffer,
          rl=rl,
          key=jax.random.fold_in(key, 0),
          sample_fn=functools.partial(sample, rules=sampler_layout),
          oracle=oracle,
          engine=engine,
      )
      t1 = time.perf_counter()
      inputs = distributed.host_to_global(batch.update_inputs(), shardings["batch"])
      policy, prm, step_metrics = step_fn(policy, prm, ref, inputs, jax.random.fold_in(key, 1))
      metrics.update({k: float(v) for k, v in jax.device_get(step_metrics).items()})
      t2 = time.perf_counter()
      _check_finite(step, metrics, checkpointer)
      if (config.eval_every and step % config.eval_every == 0) or step == config.total_steps:
        last_eval = evaluate(
            run, policy.params, jax.random.fold_in(key, 2), None if prm is None else prm.params, ref
        )
        console.say(eval_line(step, last_eval))
        metrics.update(last_eval)
      t3 = time.perf_counter()
      metrics.update(
          {
              "time/update": t2 - t1,
              "time/eval": t3 - t2,
              "time/step": t3 - t0,
              "time/prm_est": (t2 - t1) * prm_share,
              "time/policy_est": (t2 - t1) * (1 - prm_share),
              "time/checkpoint": checkpoint_s,  # the last step's save, blocking part
              "time/tokens_per_s": metrics["rollout/tokens_sampled"] / (t3 - t0),
          }
      )
      log.write(step, metrics)  # before the save: a crash in between re-runs this step
      checkpoint_s = 0.0
      if step % config.ckpt_every == 0 or step == config.total_steps:
        checkpointer.save(
            step,
            policy,
            prm,
            dict(
                iterator=run.iterator.state(),
                # Groups still in the engine restart from their prompts after a resume.
                buffer=buffer + (engine.in_flight() if engine else []),
                first_eval=first_eval,
                last_eval=last_eval,
            ),
        )
        checkpoint_s = time.perf_counter() - t3
      bar.update(1)
      bar.set_postfix(
          reward=f"{metrics['acc_mean']:.2f}",
          acc=f"{metrics['rollout/acc_all_samples']:.2f}",
          prm_acc=f"{metrics.get('prm/acc_before', float('nan')):.2f}",
          tok_s=f"{metrics['time/tokens_per_s']:.0f}",
      )
  except BaseException:  # the error that stopped the run is the one reported
    _close(*closers, quiet=True)
    raise
  _close(*closers)
  export(run, policy, prm)
  if distributed.is_primary():
    table = summary_table(first_eval, last_eval)
    (epath.Path(workdir) / "summary.md").write_text(table + "\n")
    print(table)
  return {"first_eval": first_eval, "last_eval": last_eval}


def _close(*closers, quiet: bool = False) -> None:
  """Runs every closer, also after one fails, and raises the first failure; `quiet` (an error
  is stopping the run) only logs them, so a full disk is named by the save, not a later flush."""
  failures = []
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      failures.append(e)
  for e in failures[0 if quiet else 1 :]:
    logging.warning("while stopping, this failed too: %s: %s", type(e).__name__, e)
  if failures and not quiet:
    raise failures[0]


def _check_finite(step: int, metrics: dict, checkpointer: Checkpointer) -> None:
  bad = {k: metrics[k] for k in _LOSS_KEYS if k in metrics and not math.isfinite(metrics[k])}
  if bad:
    checkpointer.wait()  # the last good checkpoint is committed before the run stops
    raise FloatingPointError(
        f"step {step}: non-finite {bad}; stopping. The last good checkpoint (step "
        f"{checkpointer.latest_step()}) is kept: lower the learning rates (rl.lr, rl.prm_lr) "
        "and resume"
    )


if __name__ == "__main__":
  train_cli.run(train, DEFAULT_CONFIG)
