"""`python -m prime_jax.train --config=experiments/configs/NAME.py --workdir=DIR`: PRIME's RL loop.

Spec §1: sample -> grade -> online filter with a refill buffer -> one jitted update step (implicit
PRM, advantages, PPO) -> eval every `eval_every` steps -> orbax checkpoint every `ckpt_every`.
Without --config it runs the embedded default (`prime_jax.configs.arithmetic_config()`): SFT of a
tiny model on the synthetic arithmetic task, then PRIME, on a CPU. Re-running with the same
--workdir resumes from the last checkpoint and reproduces the uninterrupted run's metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from prime_jax.algo.update_step import (make_update_step, policy_optimizer, prm_optimizer,
                                        update_step_shardings, uses_prm)
from prime_jax.checkpointing import Checkpointer
from prime_jax.data import (Prompt, PromptEncoder, PromptFormat, PromptIterator, Record,
                            load_split, write_records)
from prime_jax.data.storage import split_names
from prime_jax.metrics_log import MetricsLog
from prime_jax.models import load_hf_checkpoint, read_hf_config, save_hf_checkpoint
from prime_jax.rollout import collect_rollouts
from prime_jax.sharding import DEFAULT_RULES, make_mesh, param_shardings
from prime_jax.tasks import get_task, task_names
from prime_jax.tokenizer import load_tokenizer
from prime_jax.train_state import create_train_state

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "experiments", "configs", "arithmetic_prime.py")

# Metrics that must be finite for the run to go on (spec: a NaN loss stops the run).
_LOSS_KEYS = ("policy/loss", "prm/loss_before", "policy/grad_norm")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                    "special_tokens_map.json", "generation_config.json", "chat_template.jinja")


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built once by `setup`."""
    config: object
    workdir: str
    model_config: object
    tokenizer: object
    encoder: PromptEncoder
    iterator: PromptIterator
    eval_records: list
    checkpoint_dir: str
    mesh: object


def _initial_checkpoint(config, workdir: str) -> str:
    if config.sft.enabled:
        from prime_jax.sft import run_sft  # trains (or reuses) the SFT model the run starts from
        return str(run_sft(config, workdir))
    if not config.policy.checkpoint:
        raise ValueError("config.policy.checkpoint is empty and config.sft.enabled is False: "
                         "nothing to start RL from")
    return config.policy.checkpoint


def _data(config, workdir: str):
    """(train source, eval records) for this process: a built-in task's generated records
    (stored once under workdir/data through tfds) or a prepared data dir."""
    task = config.task
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if task.name in task_names():
        data_dir = task.data_dir or os.path.join(workdir, "data")
        if set(split_names(data_dir)) < {task.train_split, task.eval_split}:
            splits = get_task(task.name).make_splits(task, config.seed)
            if jax.process_index() == 0:
                write_records(splits["train"], data_dir, task.train_split, overwrite=True)
                write_records(splits["eval"], data_dir, task.eval_split, overwrite=True)
    else:
        if not task.data_dir:
            raise ValueError(f"config.task.data_dir is empty (task {task.name!r}); prepare one "
                             "with `python -m prime_jax.data.prepare`")
        data_dir = task.data_dir
    train = load_split(data_dir, task.train_split, **process)
    eval_records = list(load_split(data_dir, task.eval_split))
    return train, eval_records


def setup(config, workdir: str) -> Run:
    os.makedirs(workdir, exist_ok=True)
    checkpoint_dir = _initial_checkpoint(config, workdir)
    tokenizer = load_tokenizer(config.tokenizer or checkpoint_dir)
    train, eval_records = _data(config, workdir)
    if config.eval.num_prompts:
        eval_records = eval_records[:config.eval.num_prompts]
    encoder = PromptEncoder(tokenizer, PromptFormat.from_config(config.task),
                            config.rl.max_prompt_len)
    mesh = make_mesh(dict(config.mesh))
    model_config = read_hf_config(checkpoint_dir, dtype=config.policy.dtype,
                                  remat=config.policy.remat,
                                  value_head=config.rl.estimator == "ppo")
    return Run(config, workdir, model_config, tokenizer, encoder,
               PromptIterator(train, seed=config.seed, shuffle=config.task.shuffle),
               eval_records, checkpoint_dir, mesh)


def _load_params(run: Run, directory: str):
    rules = tuple(run.config.sharding_rules) or DEFAULT_RULES
    shardings = param_shardings(run.model_config, run.mesh, rules)
    config, params = load_hf_checkpoint(directory, shardings=shardings,
                                        dtype=run.model_config.dtype,
                                        remat=run.model_config.remat)
    if config != run.model_config:
        raise ValueError(f"{directory} holds a different model than {run.checkpoint_dir}")
    return params


def initial_states(run: Run, shardings: dict):
    """(policy state, PRM state or None, frozen reference params or None), placed on the mesh
    `shardings` (from `update_step_shardings`)."""
    rl = run.config.rl
    params = _load_params(run, run.checkpoint_dir)
    policy = jax.device_put(create_train_state(params, policy_optimizer(rl)), shardings["policy"])
    prm = ref = None
    if shardings["prm"] is not None:
        prm_params = _load_params(run, run.config.prm.checkpoint or run.checkpoint_dir)
        prm = jax.device_put(create_train_state(prm_params, prm_optimizer(rl)), shardings["prm"])
    if shardings["ref"] is not None:
        # A frozen copy of the initial policy: the policy state's buffers are donated each step.
        ref = jax.tree_util.tree_map(lambda x: x.copy(), params)
    return policy, prm, ref


def evaluate(run: Run, params, key) -> dict:
    """eval/ metrics: greedy pass@1 and the mean accuracy of temperature-1 samples."""
    from prime_jax.sft import evaluate as evaluate_records
    results = evaluate_records(params, run.model_config, run.tokenizer, run.eval_records,
                               run.config, key)
    return {f"eval/{k}": v for k, v in results.items() if isinstance(v, (int, float))}


def _prompt_to_json(prompt: Prompt) -> dict:
    return {"record": dataclasses.asdict(prompt.record), "text": prompt.text,
            "token_ids": list(prompt.token_ids)}


def _prompt_from_json(d: dict) -> Prompt:
    return Prompt(Record(**d["record"]), d["text"], tuple(d["token_ids"]))


def _check_finite(step: int, metrics: dict, checkpointer: Checkpointer) -> None:
    bad = {k: metrics[k] for k in _LOSS_KEYS if k in metrics and not math.isfinite(metrics[k])}
    if bad:
        checkpointer.wait()  # the last good checkpoint is committed before the run stops
        raise FloatingPointError(
            f"step {step}: non-finite {bad}; stopping. The last good checkpoint (step "
            f"{checkpointer.latest_step()}) is kept: lower the learning rates (rl.lr, rl.prm_lr) "
            "and resume")


def _export(run: Run, policy, prm) -> None:
    for name, state in (("policy", policy), ("prm", prm)):
        if state is None:
            continue
        out = os.path.join(run.workdir, "export", name)
        save_hf_checkpoint(out, run.model_config, state.params)
        for f in _TOKENIZER_FILES:
            src = os.path.join(run.checkpoint_dir, f)
            if os.path.exists(src):
                shutil.copy(src, out)


def _summary_table(first: dict, last: dict) -> str:
    rows = [("greedy pass@1", "eval/accuracy_greedy"), ("sampled accuracy (T=1)",
                                                         "eval/accuracy_sampled")]
    lines = ["| held-out split | before RL | after RL | change |", "|---|---|---|---|"]
    for label, key in rows:
        a, b = first.get(key, float("nan")), last.get(key, float("nan"))
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    return "\n".join(lines)


def train(config, workdir: str) -> dict:
    """Runs (or resumes) the RL loop; returns {"first_eval", "last_eval"} metric dicts."""
    from tqdm import tqdm
    run = setup(config, workdir)
    rl = config.rl
    logging.info("model %s (%d params), mesh %s", run.model_config, run.model_config.num_params,
                 dict(run.mesh.shape))
    shardings = update_step_shardings(config, run.mesh, run.model_config)
    policy, prm, ref = initial_states(run, shardings)
    step_fn = make_update_step(config, run.mesh, run.model_config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_ckpts)
    log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    base_key = jax.random.key(config.seed)
    buffer: list[Prompt] = []
    start = checkpointer.latest_step()
    if start is None:
        if os.path.exists(log.path):
            os.remove(log.path)  # metrics of a run that died before its first checkpoint
        first_eval = evaluate(run, policy.params, jax.random.fold_in(base_key, 0))
        log.write(0, first_eval)
        checkpointer.save(0, policy, prm, dict(iterator=run.iterator.state(), buffer=[],
                                               first_eval=first_eval))
        start = 0
    else:
        abstract = lambda s: None if s is None else jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), s)
        policy, prm, state = checkpointer.restore(start, abstract(policy), abstract(prm))
        run.iterator.restore(state["iterator"])
        buffer = [_prompt_from_json(p) for p in state["buffer"]]
        first_eval = state["first_eval"]
        log.truncate_after(start)
        logging.info("resumed from step %d", start)

    last_eval = first_eval
    bar = tqdm(total=config.total_steps, initial=start, desc="PRIME", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    try:
        for step in range(start + 1, config.total_steps + 1):
            t0 = time.perf_counter()
            key = jax.random.fold_in(base_key, step)
            batch, buffer, metrics = collect_rollouts(
                policy.params, model_config=run.model_config, tokenizer=run.tokenizer,
                encoder=run.encoder, iterator=run.iterator, buffer=buffer, rl=rl,
                key=jax.random.fold_in(key, 0))
            t1 = time.perf_counter()
            inputs = jax.device_put(batch.update_inputs(), shardings["batch"])
            policy, prm, step_metrics = step_fn(policy, prm, ref, inputs, jax.random.fold_in(key, 1))
            metrics.update({k: float(v) for k, v in jax.device_get(step_metrics).items()})
            t2 = time.perf_counter()
            _check_finite(step, metrics, checkpointer)
            if (config.eval_every and step % config.eval_every == 0) or step == config.total_steps:
                last_eval = evaluate(run, policy.params, jax.random.fold_in(key, 2))
                metrics.update(last_eval)
            t3 = time.perf_counter()
            metrics.update({"time/update": t2 - t1, "time/eval": t3 - t2, "time/step": t3 - t0,
                            "time/tokens_per_s": metrics["rollout/tokens_sampled"] / (t3 - t0)})
            log.write(step, metrics)  # before the save: a crash in between re-runs this step
            if step % config.ckpt_every == 0 or step == config.total_steps:
                checkpointer.save(step, policy, prm, dict(
                    iterator=run.iterator.state(), buffer=[_prompt_to_json(p) for p in buffer],
                    first_eval=first_eval))
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['acc_mean']:.2f}",
                            acc=f"{metrics['rollout/acc_all_samples']:.2f}",
                            prm_acc=f"{metrics.get('prm/acc_before', float('nan')):.2f}",
                            tok_s=f"{metrics['time/tokens_per_s']:.0f}")
    finally:  # also on errors: the last checkpoint commits and the files close cleanly
        bar.close()
        checkpointer.wait()
        checkpointer.close()
        log.close()
    if jax.process_index() == 0:
        _export(run, policy, prm)
        table = _summary_table(first_eval, last_eval)
        with open(os.path.join(workdir, "summary.md"), "w") as f:
            f.write(table + "\n")
        print(table)
    return {"first_eval": first_eval, "last_eval": last_eval}


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
        culprits = [a.split("=")[0] for a in argv[1:]
                    if a.startswith("--config.") and name in a.split("=")[0].split(".")[1:]]
        if not culprits:
            raise  # not an override's fault (e.g. a bug in the config file): keep the traceback
        sys.exit(f"FATAL Flags parsing error: {' '.join(culprits)}: no such config field "
                 f"{name!r}. " + " ".join(detail.splitlines()[1:]))


def _parse_flags(argv: list[str]) -> list[str]:
    with _unknown_override_exits(argv):
        return app.parse_flags_with_usage(argv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Flags are defined here, not at import, so library users and tests can import `train`.
    with _unknown_override_exits(sys.argv):
        config_flags.DEFINE_config_file(
            "config", DEFAULT_CONFIG, "Experiment config file (get_config()[:ARG]); overrides as "
            "--config.rl.beta=0.05. Default: the embedded arithmetic PRIME run.")
    flags.DEFINE_string("workdir", "workdir/arithmetic_prime",
                        "Run directory: checkpoints, metrics, exports. Reused = resumed.")
    app.run(main, flags_parser=_parse_flags)
