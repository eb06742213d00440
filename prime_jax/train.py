"""`python -m prime_jax.train --config=experiments/configs/NAME.py --workdir=DIR`: PRIME's RL loop.

Spec §1, one RL step, top to bottom in `train`: sample -> grade -> online filter with a refill
buffer (`prime_jax.rollout.collect_rollouts`) -> one jitted update step: implicit PRM, advantages,
PPO (`prime_jax.algo.update_step`, whose formulas are `prime_jax.algo.prime`'s) -> eval every
`eval_every` steps -> orbax checkpoint every `ckpt_every`. The config is checked first
(`prime_jax.config_checks.validate`); the run's set-up (SFT model, data, tokenizer, mesh, states)
and its exports are `prime_jax.run_setup`'s.

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

import contextlib
import functools
import math
import os
import sys
import time

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from prime_jax import console, distributed, model_files, prm_credit
from prime_jax.algo.update_step import forward_passes, make_update_step, update_step_shardings
from prime_jax.checkpointing import (
    CheckpointMismatchError,
    Checkpointer,
    CheckpointSaveError,
    NoIntactCheckpointError,
)
from prime_jax.config_checks import validate
from prime_jax.data import DataError
from prime_jax.generation import evaluate as evaluate_records
from prime_jax.metrics_log import MetricsFileError, MetricsLog
from prime_jax.rollout import collect_rollouts, make_engine
from prime_jax.run_setup import Run, export, initial_states, setup
from prime_jax.sampling import sample
from prime_jax.sharding import reshard_params, sampler_rules
from prime_jax.tasks import step_oracle

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "experiments",
    "configs",
    "arithmetic_prime.py",
)

# Metrics that must be finite for the run to go on (spec: a NaN loss stops the run).
_LOSS_KEYS = ("policy/loss", "prm/loss_before", "policy/grad_norm")
# Faults that stop a run with one line naming the problem (the traceback is logged at INFO, shown
# with --verbosity=0). What was written stays; rerunning resumes from the last intact checkpoint.
_ONE_LINE_STOPS = (
    CheckpointMismatchError,
    CheckpointSaveError,
    NoIntactCheckpointError,
    model_files.DamagedModelError,
    DataError,
    MetricsFileError,
    FloatingPointError,
    OSError,  # a full disk, a file that cannot be read, storage that kept failing
)


def train(config, workdir: str) -> dict:
  """Runs (or resumes) the RL loop; returns {"first_eval", "last_eval"} metric dicts."""
  validate(config)
  rl = config.rl
  # The task's step oracle (`validate` made sure the task has one).
  oracle = step_oracle(config.task.name) if rl.process_reward == "oracle" else None
  run = setup(config, workdir)
  logging.info(
      "model %s (%d params), mesh %s",
      run.model_config,
      run.model_config.num_params,
      dict(run.mesh.shape),
  )
  shardings = update_step_shardings(config, run.mesh, run.model_config)
  policy, prm, ref = initial_states(run, shardings)
  step_fn = make_update_step(config, run.mesh, run.model_config)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_ckpts)
  log = MetricsLog(workdir, enabled=distributed.is_primary())
  base_key = jax.random.key(config.seed)
  buffer: list[int] = []  # positions of held-over prompts in the train split
  logged = _last_logged_step(log)
  restored = checkpointer.restore_latest(_abstract(policy), _abstract(prm), last_logged_step=logged)
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
    buffer = _buffer_from_state(state, len(run.iterator.source))
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
  engine = make_engine(rl, run.model_config, run.tokenizer, sampler_layout)
  bar = console.progress(config.total_steps, "RL", initial=start)
  try:
    for step in range(start + 1, config.total_steps + 1):
      t0 = time.perf_counter()
      key = jax.random.fold_in(base_key, step)
      # The sampler's layout of the params (a device-to-device reshard; the same arrays
      # when sampler_rules are the training rules).
      batch, buffer, metrics = collect_rollouts(
          reshard_params(policy.params, run.model_config, run.mesh, sampler_layout),
          model_config=run.model_config,
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
  finally:  # also on errors: the last checkpoint commits and the files close cleanly
    bar.close()
    try:
      checkpointer.wait()  # raises if the last save failed
    finally:
      checkpointer.close()
      log.close()
  export(run, policy, prm)
  if distributed.is_primary():
    table = _summary_table(first_eval, last_eval)
    (epath.Path(workdir) / "summary.md").write_text(table + "\n")
    print(table)
  return {"first_eval": first_eval, "last_eval": last_eval}


def _last_logged_step(log: MetricsLog) -> int:
  """The last step whose metrics are all in metrics.jsonl (-1: none), as process 0, which
  writes them, sees it: every process resumes from the same checkpoint."""
  mine = log.last_complete_step() if log.enabled else None
  step = distributed.process_group().allgather(mine)[0]
  return -1 if step is None else step


def _abstract(state):
  """`jax.ShapeDtypeStruct`s (with shardings) of a TrainState's arrays: a restore target."""
  if state is None:
    return None
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )


def _buffer_from_state(state: dict, num_records: int) -> list[int]:
  """The refill buffer of a checkpoint's run state: positions of records in the train split."""
  buffer = state["buffer"]
  if not all(isinstance(i, int) and 0 <= i < num_records for i in buffer):
    raise ValueError(
        "the checkpoint's refill buffer is not a list of train-split positions "
        f"(got {str(buffer)[:120]}); it was written by an older prime-jax, whose "
        "buffer held whole prompts: resume it with that version or start anew"
    )
  return list(buffer)


def evaluate(run: Run, params, key, prm_params=None, ref_params=None) -> dict:
  """eval/ metrics: greedy pass@1 and the mean accuracy of temperature-1 samples; with a PRM
  (`prm_params`) and held-out pairs, prm_credit/ metrics: its process credit against the
  reference (`ref_params`, the frozen one, with rl.ref_type="freeze"; else the policy)."""
  metrics = {}
  if run.credit_pairs is not None and prm_params is not None:
    metrics = _credit_metrics(run, params, prm_params, ref_params)
  params = reshard_params(params, run.model_config, run.mesh, sampler_rules(run.config))
  results = evaluate_records(
      params, run.model_config, run.tokenizer, run.eval_records, run.config, key
  )
  return {f"eval/{k}": v for k, v in results.items() if isinstance(v, (int, float))} | metrics


def _credit_metrics(run: Run, params, prm_params, ref_params) -> dict:
  """`prime_jax.prm_credit.summarize` of the PRM on the run's held-out pairs, as prm_credit/*."""
  config = run.config
  if config.rl.ref_type != "freeze":
    ref_params = params
  elif config.ref.offload:  # held in host memory between update steps: its forward needs it here
    ref_params = jax.device_put(
        ref_params, jax.tree.map(lambda x: x.sharding.with_memory_kind("device"), ref_params)
    )
  per_pair = prm_credit.measure(
      prm_params,
      ref_params,
      run.credit_pairs,
      prm_config=run.model_config,
      ref_config=run.model_config,
      beta=config.rl.beta,
      batch_size=config.eval.batch_size,
      mesh=run.mesh,
  )
  return {f"prm_credit/{k}": v for k, v in prm_credit.summarize(per_pair).items()}


def eval_line(step: int, results: dict) -> str:
  """The one terminal line of an eval: held-out accuracies (and the PRM's process credit)."""
  line = (
      f"eval at step {step}: greedy {results['eval/accuracy_greedy']:.3f}, sampled (T=1) "
      f"{results['eval/accuracy_sampled']:.3f}, filter pass rate "
      f"{results['eval/filter_pass_rate']:.3f}"
  )
  if "prm_credit/dip_mean" in results:
    line += (
        f"; PRM credit: dip {results['prm_credit/dip_mean']:+.3f}, localisation "
        f"{results['prm_credit/localisation']:.2f} (chance "
        f"{results['prm_credit/localisation_chance']:.2f}), pair accuracy "
        f"{results['prm_credit/pair_accuracy']:.2f}"
    )
  return line


def _check_finite(step: int, metrics: dict, checkpointer: Checkpointer) -> None:
  bad = {k: metrics[k] for k in _LOSS_KEYS if k in metrics and not math.isfinite(metrics[k])}
  if bad:
    checkpointer.wait()  # the last good checkpoint is committed before the run stops
    raise FloatingPointError(
        f"step {step}: non-finite {bad}; stopping. The last good checkpoint (step "
        f"{checkpointer.latest_step()}) is kept: lower the learning rates (rl.lr, rl.prm_lr) "
        "and resume"
    )


def _summary_table(first: dict, last: dict) -> str:
  rows = [
      ("greedy pass@1", "eval/accuracy_greedy"),
      ("sampled accuracy (T=1)", "eval/accuracy_sampled"),
  ]
  lines = ["| held-out split | before RL | after RL | change |", "|---|---|---|---|"]
  for label, key in rows:
    a, b = first.get(key, float("nan")), last.get(key, float("nan"))
    lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
  return "\n".join(lines)


@contextlib.contextmanager
def _unknown_override_exits(argv: list[str]):
  """Reports an override of a config field that does not exist (`--config.rl.bta=0.1`) in one
  line naming it, like any bad flag, instead of ml_collections' AttributeError traceback (raised
  where the config file is parsed: when the flag is defined with a default, or later)."""
  try:
    yield
  except (AttributeError, KeyError) as e:
    cause = e.args[0] if e.args else e
    detail = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
    name = detail.splitlines()[0].strip("'\"")
    culprits = [
        a.split("=")[0]
        for a in argv[1:]
        if a.startswith("--config.") and name in a.split("=")[0].split(".")[1:]
    ]
    if not culprits:
      raise  # not an override's fault (e.g. a bug in the config file): keep the traceback
    sys.exit(
        f"FATAL Flags parsing error: {' '.join(culprits)}: no such config field "
        f"{name!r}. " + " ".join(detail.splitlines()[1:])
    )


def _parse_flags(argv: list[str]) -> list[str]:
  with _unknown_override_exits(argv):
    return app.parse_flags_with_usage(argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.quiet_library_logs()
  try:
    distributed.initialize(
        flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    train(flags.FLAGS.config, flags.FLAGS.workdir)
  except _ONE_LINE_STOPS as e:
    logging.info("the run stopped", exc_info=True)
    console.stop(f"prime_jax.train: {type(e).__name__}: {e}")


if __name__ == "__main__":
  # Flags are defined here, not at import, so library users and tests can import `train`.
  with _unknown_override_exits(sys.argv):
    config_flags.DEFINE_config_file(
        "config",
        DEFAULT_CONFIG,
        "Experiment config file (get_config()[:ARG]); overrides as "
        "--config.rl.beta=0.05. Default: the embedded arithmetic PRIME run.",
    )
  flags.DEFINE_string(
      "workdir",
      "workdir/arithmetic_prime",
      "Run directory: checkpoints, metrics, exports. Reused = resumed. With "
      "several processes, one directory all of them see. Local or "
      "gs://BUCKET/PATH (needs gcsfs).",
  )
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "Multi-process runs: host:port of process "
      "0's coordinator, the same on every process (jax.distributed.initialize)."
      " Not needed on Cloud TPU VMs, SLURM or Open MPI (auto-detected).",
  )
  flags.DEFINE_integer(
      "num_processes",
      None,
      "Multi-process runs: how many processes take " "part. 1 forces a single-process run.",
  )
  flags.DEFINE_integer(
      "process_id",
      None,
      "Multi-process runs: this process's index, 0 .. "
      "num_processes - 1; process 0 writes metrics, summaries and exports.",
  )
  app.run(main, flags_parser=_parse_flags)
