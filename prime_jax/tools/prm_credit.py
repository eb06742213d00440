r"""How much process credit an implicit PRM gives: its q at an injected mistake, against a reference.

  python -m prime_jax.tools.prm_credit --prm DIR --ref DIR (--task arithmetic | --pairs FILE.jsonl)
      --out DIR [--num_pairs 512 --seed 0 --beta 0.05 --batch_size 16]
      [--config=experiments/configs/arithmetic_prime.py --config.task.max_ops=6 ...]

--prm / --ref: Hugging Face checkpoint directories (a run's `export/prm`, and its SFT model for a
frozen reference); the tokenizer is `config.tokenizer`, else the one in --prm. Pairs come from the
task's generator on the held-out split of `--config` (default `prime_jax.configs.
arithmetic_config()`; its seed picks the split, --seed the mistakes), or from JSONL rows
{"prompt": text or chat messages, "good": text, "bad": text[, "ability": name]}. Prompts are
rendered with the config's task prompt format, as RL renders them. Writes OUT/credit.json (the
summary, `prime_jax.prm_credit.summarize`), OUT/pairs.jsonl (per-pair numbers and token-level q)
and OUT/dips.png (the histogram of q_bad[t*] − q_good[t*]), and prints a table.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from prime_jax import configs, prm_credit
from prime_jax.config_checks import validate
from prime_jax.generation import prompt_encoder
from prime_jax.models import load_hf_checkpoint, read_hf_config
from prime_jax.tasks import get_task, pair_maker, task_names
from prime_jax.tokenizer import load_tokenizer
from prime_jax.tools import _cli

FLAGS = flags.FLAGS


def _number(x):
  """A JSON-safe number: NaN becomes null."""
  x = float(x)
  return None if math.isnan(x) else x


def _task_rows(config, task_name: str, num_pairs: int, seed: int) -> list[tuple[str, dict]]:
  if task_name != config.task.name:
    raise _cli.InputError(
        f"--task {task_name} but the config's task is {config.task.name!r}: pass a --config "
        f"for {task_name} (its knobs make the pairs)"
    )
  try:
    task = pair_maker(task_name)
  except ValueError as e:
    raise _cli.InputError(f"{e}; or give --pairs") from None
  records = task.make_splits(config.task, config.seed)["eval"]
  return [(r["id"], r) for r in task.mistake_pairs(config.task, records, seed, num_pairs)]


def _pair_row(per_pair: dict, pair: prm_credit.TokenPair, i: int) -> dict:
  n = int(per_pair["num_steps"][i])
  return dict(
      where=pair.where,
      first_diff=pair.first_diff,
      wrong_step=int(per_pair["wrong_step"][i]),
      num_steps=n,
      dip=_number(per_pair["dip"][i]),
      localised=_number(per_pair["localised"][i]),
      step_q_bad=[_number(x) for x in per_pair["step_q_bad"][i, :n]],
      q_after_bad=_number(per_pair["q_after_bad"][i]),
      q_after_good=_number(per_pair["q_after_good"][i]),
      sum_q_good=_number(per_pair["sum_q_good"][i]),
      sum_q_bad=_number(per_pair["sum_q_bad"][i]),
      pair_correct=_number(per_pair["pair_correct"][i]),
      beta_nll_ref=_number(per_pair["beta_nll_ref"][i]),
      p_correct_cap=_number(per_pair["p_correct_cap"][i]),
      q_good=[_number(x) for x in per_pair["q_good"][i, : len(pair.good)]],
      q_bad=[_number(x) for x in per_pair["q_bad"][i, : len(pair.bad)]],
  )


def plot_dips(dips: np.ndarray, summary: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")  # files only: no display needed
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.6))
  ax.hist(dips, bins=40, color="tab:blue", alpha=0.8)
  ax.axvline(0.0, color="black", lw=1)
  ax.set_xlabel("dip = q_bad[t*] − q_good[t*] (nats)")
  ax.set_ylabel("pairs")
  ax.set_title(
      f"{len(dips)} pairs: mean {summary['dip_mean']:+.3f}, "
      f"P(dip < 0) = {summary['p_dip_negative']:.2f}"
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110, format="png")
  plt.close(fig)


def table(summary: dict, beta: float) -> str:
  s = summary
  rows = [
      (
          "dip q_bad[t*] − q_good[t*] (nats): mean (p10 / p50 / p90)",
          f"{s['dip_mean']:+.4f} ({s['dip_p10']:+.4f} / {s['dip_p50']:+.4f} / "
          f"{s['dip_p90']:+.4f})",
      ),
      ("P(dip < 0)", f"{s['p_dip_negative']:.3f}"),
      (
          "localisation: lowest-q step is the wrong one (chance)",
          f"{s['localisation']:.3f} ({s['localisation_chance']:.3f})",
      ),
      (
          "mean q after the mistake: bad / good (nats)",
          f"{s['q_after_mistake_bad']:+.4f} / {s['q_after_mistake_good']:+.4f}",
      ),
      ("pair accuracy: Σq good > Σq bad", f"{s['pair_accuracy']:.3f}"),
      (
          f"β·NLL_ref(good), β={beta:g}: mean (p10 / p50 / p90)",
          f"{s['beta_nll_ref_mean']:.3f} ({s['beta_nll_ref_p10']:.3f} / "
          f"{s['beta_nll_ref_p50']:.3f} / {s['beta_nll_ref_p90']:.3f})",
      ),
      (
          "cap on the PRM's P(correct) of good: mean (p10)",
          f"{s['p_correct_cap_mean']:.3f} ({s['p_correct_cap_p10']:.3f})",
      ),
  ]
  lines = [f"PRM process credit on {int(s['num_pairs'])} pairs", "| measure | value |", "|---|---|"]
  return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows])


def credit_report(
    prm: str,
    ref: str,
    out_dir: str,
    *,
    config,
    task: Optional[str] = None,
    pairs_path: Optional[str] = None,
    num_pairs: int = 512,
    seed: int = 0,
    beta: Optional[float] = None,
    batch_size: int = 16,
    dtype: str = "float32",
) -> dict:
  """Measures the PRM at `prm` against the reference at `ref` on the task's pairs (`task`) or the
  rows of `pairs_path`; writes credit.json, pairs.jsonl and dips.png into `out_dir`; returns the
  summary. `beta` defaults to config.rl.beta. Raises `_cli.InputError` on bad input before any
  model work."""
  try:
    validate(config)
  except ValueError as e:
    raise _cli.InputError(f"--config: {e}") from None
  if (task is None) == (pairs_path is None):
    raise _cli.InputError("give exactly one of --task and --pairs")
  if batch_size < 1 or num_pairs < 1:
    raise _cli.InputError(f"batch_size and num_pairs must be >= 1, got {batch_size}, {num_pairs}")
  beta = config.rl.beta if beta is None else beta
  prm_config = read_hf_config(prm, dtype=dtype)
  ref_config = read_hf_config(ref, dtype=dtype)
  tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else _cli.find_tokenizer(prm)
  if tokenizer is None:
    raise _cli.InputError(f"no tokenizer in {prm}; set --config.tokenizer")
  if task is not None:
    rows = _task_rows(config, task, num_pairs, seed)
  else:
    rows = [(f"{pairs_path}:{n}", row) for n, row in _cli.read_jsonl(pairs_path)]
  ability = (
      get_task(config.task.name).ability if config.task.name in task_names() else "math"
  )  # of rows without one; the prompt format's user suffix depends on it
  try:
    pairs = prm_credit.tokenize_pairs(rows, prompt_encoder(config, tokenizer), ability=ability)
  except prm_credit.PairError as e:
    raise _cli.InputError(str(e)) from None
  vocab = min(prm_config.vocab_size, ref_config.vocab_size)
  context = min(prm_config.max_position_embeddings, ref_config.max_position_embeddings)
  for p in pairs:
    if max(p.prompt + p.good + p.bad) >= vocab:
      raise _cli.InputError(f"{p.where}: token ids outside the models' vocabulary of {vocab}")
    if len(p.prompt) + max(len(p.good), len(p.bad)) > context:
      raise _cli.InputError(
          f"{p.where}: prompt + response exceed the models' context of {context} tokens"
      )

  _, prm_params = load_hf_checkpoint(prm, dtype=dtype)
  _, ref_params = load_hf_checkpoint(ref, dtype=dtype)
  arrays = prm_credit.pair_arrays(pairs, pad_id=_cli.stop_ids(prm, tokenizer)[1])
  per_pair = prm_credit.measure(
      prm_params,
      ref_params,
      arrays,
      prm_config=prm_config,
      ref_config=ref_config,
      beta=beta,
      batch_size=batch_size,
  )
  summary = prm_credit.summarize(per_pair)

  os.makedirs(out_dir, exist_ok=True)
  report = dict(
      summary={k: _number(v) for k, v in summary.items()},
      prm=prm,
      ref=ref,
      pairs=pairs_path
      or f"task {task}: held-out split of seed {config.seed}, mistakes of seed {seed}",
      beta=beta,
  )
  with open(os.path.join(out_dir, "credit.json"), "w") as f:
    json.dump(report, f, indent=2)
  _cli.write_jsonl(
      os.path.join(out_dir, "pairs.jsonl"), [_pair_row(per_pair, p, i) for i, p in enumerate(pairs)]
  )
  plot_dips(per_pair["dip"], summary, os.path.join(out_dir, "dips.png"))
  print(table(summary, beta))
  return summary


def main(argv):
  config = FLAGS.config if FLAGS.config is not None else configs.arithmetic_config()
  _cli.run_main(
      argv,
      lambda: credit_report(
          FLAGS.prm,
          FLAGS.ref,
          FLAGS.out,
          config=config,
          task=FLAGS.task,
          pairs_path=FLAGS.pairs,
          num_pairs=FLAGS.num_pairs,
          seed=FLAGS.seed,
          beta=FLAGS.beta,
          batch_size=FLAGS.batch_size,
          dtype=FLAGS.dtype,
      ),
  )


if __name__ == "__main__":
  # Flags live here, not at import: other tools define --seed and --config too, and tests import
  # several tools into one process.
  config_flags.DEFINE_config_file(
      "config",
      None,
      "Config file (get_config()) for the task's knobs, prompt format, seed and rl.beta; "
      "default: prime_jax.configs.arithmetic_config().",
  )
  flags.DEFINE_string("prm", None, "The PRM's Hugging Face checkpoint directory.")
  flags.DEFINE_string("ref", None, "The reference's Hugging Face checkpoint directory.")
  flags.DEFINE_string("task", None, "Build pairs with this built-in task's generator.")
  flags.DEFINE_string("pairs", None, 'JSONL rows {"prompt", "good", "bad"[, "ability"]}.')
  flags.DEFINE_integer("num_pairs", 512, "Pairs to build with --task.")
  flags.DEFINE_integer("seed", 0, "Seed of the task's mistakes (the split is config.seed's).")
  flags.DEFINE_float("beta", None, "The PRM β; default config.rl.beta.")
  flags.mark_flags_as_required(["prm", "ref", "out"])
  app.run(main)
