"""A PRIME run's set-up and its end: everything `prime_jax.train` builds before its first RL step
(`setup`, `initial_states`) and writes after its last (`export`).

`setup` finds the model RL starts from (`initial_checkpoint`: the SFT model, trained first when
`config.sft.enabled`, or `policy.checkpoint`), the task's data (`task_data`), the tokenizer, the
prompt encoder, the mesh and the held-out PRM-credit pairs, as one `Run`. `initial_states` loads
the policy, PRM and frozen reference onto the mesh; `export` writes the final models as Hugging
Face checkpoints.

Several processes (hosts) run the same command (`prime_jax.distributed`) on a --workdir they all
see: process 0 writes the data, the SFT model and the exports, the others wait for it. The
workdir may be local or on GCS (`--workdir=gs://BUCKET/run`, which needs `pip install gcsfs`; see
`prime_jax.paths`): then every process keeps its own local copy of the built-in task's data and
of the SFT model, and the rest lives in the bucket.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional

import jax
from etils import epath

from prime_jax import distributed, model_files, paths, prm_credit, verifiers
from prime_jax.algo.step_placement import policy_optimizer, prm_optimizer, reference_params
from prime_jax.config_checks import uses_prm
from prime_jax.data import PromptEncoder, PromptIterator, load_split, write_records
from prime_jax.data.storage import split_names
from prime_jax.generation import prompt_encoder
from prime_jax.models import load_hf_checkpoint, read_hf_config, save_hf_checkpoint
from prime_jax.sft import SFT_INFO, run_sft
from prime_jax.sharding import make_mesh, param_shardings, training_rules
from prime_jax.tasks import get_task, pair_maker, task_names, tasks_with
from prime_jax.tokenizer import load_tokenizer
from prime_jax.train_state import create_train_state

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)


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
  credit_pairs: Optional[prm_credit.PairArrays]  # held-out pairs for prm_credit/*; None: off


def setup(config, workdir: str) -> Run:
  """Everything the loop needs (`Run`), built once; makes the workdir."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  # Every "math" grade of this run (a task config without the field, e.g. arithmetic's own
  # task block, grades no math answers: strict, the default).
  verifiers.set_math_grader(config.task.get("math_grader", verifiers.DEFAULT_MATH_GRADER))
  checkpoint_dir = initial_checkpoint(config, workdir)
  tokenizer = load_tokenizer(config.tokenizer or checkpoint_dir)
  train, eval_records = task_data(config, workdir)
  if config.eval.num_prompts:
    eval_records = eval_records[: config.eval.num_prompts]
  encoder = prompt_encoder(config, tokenizer)
  mesh = make_mesh(dict(config.mesh))
  model_config = read_hf_config(
      checkpoint_dir,
      dtype=config.policy.dtype,
      remat=config.policy.remat,
      value_head=config.rl.estimator == "ppo",
  )
  return Run(
      config,
      workdir,
      model_config,
      tokenizer,
      encoder,
      PromptIterator(train, seed=config.seed, shuffle=config.task.shuffle),
      eval_records,
      checkpoint_dir,
      mesh,
      _credit_pairs(config, eval_records, encoder),
  )


def initial_checkpoint(config, workdir: str) -> str:
  """The local HF checkpoint directory RL starts from: the SFT model (trained first if it is
  missing) when `config.sft.enabled`, else `config.policy.checkpoint`, checked."""
  if config.sft.enabled:
    return _sft_checkpoint(config, workdir)
  if not config.policy.checkpoint:
    raise ValueError(
        "config.policy.checkpoint is empty and config.sft.enabled is False: "
        "nothing to start RL from"
    )
  model_files.check(config.policy.checkpoint, "policy.checkpoint")
  return config.policy.checkpoint


def _sft_checkpoint(config, workdir: str) -> str:
  """The SFT model the run starts from (a local directory): process 0 trains it, or reuses a
  finished one; the other processes wait for it and then reuse it (after `run_sft` checks its
  settings). A remote checkpoint place (a gs:// workdir or sft.checkpoint) is trained in a local
  scratch directory and copied up, SFT_INFO last (its presence marks a finished checkpoint); a
  later run, and every other process, copies the finished one down."""
  shared = epath.Path(config.sft.checkpoint or epath.Path(workdir) / "sft")
  remote = paths.is_remote(str(shared))
  local_config = config
  if remote:
    local_config = config.copy_and_resolve_references()
    local_config.sft.checkpoint = os.path.join(paths.scratch_dir("sft"), "sft")
  if distributed.is_primary():
    finished = remote and (shared / SFT_INFO).exists()
    if finished:
      paths.copy_tree(shared, local_config.sft.checkpoint)
    checkpoint = run_sft(local_config, workdir)  # trains, or checks a finished one's settings
    if remote and not finished:
      paths.copy_tree(checkpoint, shared, last=(SFT_INFO,))
  distributed.barrier("sft")
  if not distributed.is_primary():
    if not (shared / SFT_INFO).exists():
      raise FileNotFoundError(
          f"process {jax.process_index()}: no finished SFT checkpoint at {shared} after "
          "process 0 wrote it; every process needs the same --workdir (and sft.checkpoint) "
          "on a shared filesystem or GCS"
      )
    if remote:
      paths.copy_tree(shared, local_config.sft.checkpoint)
    checkpoint = run_sft(local_config, workdir)  # reuses it (after checking its settings)
  return str(checkpoint)


def task_data(config, workdir: str):
  """(train source, eval records): a built-in task's generated records (stored once under
  workdir/data through tfds, by process 0) or a prepared data dir. The train source is the
  whole split, opened for random access: each process reads only the records it uses.

  tfds's ArrayRecord files are written and read on a local disk: with a remote (gs://) workdir
  every process writes the built-in task's records (a function of the config and seed) to its
  own local scratch directory, and a prepared data dir must be a local path."""
  task = config.task
  if task.data_dir and paths.is_remote(task.data_dir):
    raise ValueError(
        f"config.task.data_dir={task.data_dir!r}: prepared data is read from a "
        "local directory; copy it to each host (`gcloud storage cp -r "
        f"{task.data_dir} DIR`) and pass --config.task.data_dir=DIR"
    )
  if task.name in task_names():
    per_process = not task.data_dir and paths.is_remote(workdir)
    data_dir = (
        paths.scratch_dir("data") if per_process else task.data_dir or os.path.join(workdir, "data")
    )
    if (per_process or distributed.is_primary()) and not (
        set(split_names(data_dir)) >= {task.train_split, task.eval_split}
    ):
      splits = get_task(task.name).make_splits(task, config.seed)
      write_records(splits["train"], data_dir, task.train_split, overwrite=True)
      write_records(splits["eval"], data_dir, task.eval_split, overwrite=True)
    distributed.barrier("task_data")
  else:
    if not task.data_dir:
      raise ValueError(
          f"config.task.data_dir is empty (task {task.name!r}); prepare one "
          "with `python -m prime_jax.data.prepare`"
      )
    data_dir = task.data_dir
  train = load_split(data_dir, task.train_split)
  eval_records = list(load_split(data_dir, task.eval_split))
  return train, eval_records


def _credit_pairs(config, eval_records: list, encoder: PromptEncoder):
  """The held-out pairs the PRM's process credit is measured on at every eval (`prm_credit/*`):
  `eval.prm_credit_pairs` of them, built once from the eval records with the run's seed. None
  when that is 0, when the run has no PRM, or when its task cannot build pairs."""
  num_pairs = config.eval.prm_credit_pairs
  if not (num_pairs and uses_prm(config.rl) and config.task.name in tasks_with("mistake_pairs")):
    return None
  task = pair_maker(config.task.name)
  rows = task.mistake_pairs(config.task, eval_records, config.seed, num_pairs)
  pairs = prm_credit.tokenize_pairs([(r["id"], r) for r in rows], encoder, ability=task.ability)
  return prm_credit.pair_arrays(pairs, pad_id=encoder.tokenizer.pad_id)


def initial_states(run: Run, shardings: dict):
  """(policy state, PRM state or None, frozen reference params or None), placed on the mesh
  `shardings` (from `update_step_shardings`)."""
  rl = run.config.rl
  params = _load_params(run, run.checkpoint_dir)
  policy = jax.device_put(create_train_state(params, policy_optimizer(rl)), shardings["policy"])
  prm = ref = None
  if shardings["prm"] is not None:
    if run.config.prm.checkpoint:
      model_files.check(run.config.prm.checkpoint, "prm.checkpoint")
    prm_params = _load_params(run, run.config.prm.checkpoint or run.checkpoint_dir)
    prm = jax.device_put(create_train_state(prm_params, prm_optimizer(rl)), shardings["prm"])
  if shardings["ref"] is not None:
    # A frozen copy of the initial policy (the policy state's buffers are donated each step),
    # in config.ref.param_dtype, in host memory with config.ref.offload.
    ref = reference_params(params, run.config, shardings["ref"])
  return policy, prm, ref


def _load_params(run: Run, directory: str):
  rules = training_rules(run.config)
  shardings = param_shardings(run.model_config, run.mesh, rules)
  # value_head: PPO's head is not an HF tensor; it starts at zero on top of the checkpoint.
  config, params = load_hf_checkpoint(
      directory,
      shardings=shardings,
      dtype=run.model_config.dtype,
      remat=run.model_config.remat,
      value_head=run.model_config.value_head,
  )
  if config != run.model_config:
    raise ValueError(f"{directory} holds a different model than {run.checkpoint_dir}")
  return params


def export(run: Run, policy, prm) -> None:
  """HF checkpoints of the final models, written by process 0 (every process calls this: params
  spread over several processes are gathered first). For a remote workdir they are written to
  a local scratch directory and copied up."""
  for name, state in (("policy", policy), ("prm", prm)):
    if state is None:
      continue
    params = distributed.tree_to_host(state.params)
    if not distributed.is_primary():
      continue
    out = os.path.join(run.workdir, "export", name)
    local = paths.scratch_dir("export") if paths.is_remote(out) else out
    save_hf_checkpoint(local, run.model_config, params)
    for f in _TOKENIZER_FILES:
      src = os.path.join(run.checkpoint_dir, f)
      if os.path.exists(src):
        shutil.copy(src, local)
    model_files.write_manifest(local)  # last: a reader can tell a whole export from a torn one
    if local != out:
      paths.copy_tree(local, out, last=(model_files.MANIFEST,))
