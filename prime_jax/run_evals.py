"""An RL run's held-out evals: accuracies of greedy and temperature-1 samples
(`prime_jax.generation.evaluate`) and, with a PRM and held-out mistake pairs, its process credit
(`prime_jax.prm_credit`); the terminal line of an eval and the run's summary table.
"""

from __future__ import annotations

import jax

from prime_jax import prm_credit
from prime_jax.generation import evaluate as evaluate_records
from prime_jax.run_setup import Run
from prime_jax.sharding import reshard_params, sampler_rules


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


def summary_table(first: dict, last: dict) -> str:
  """summary.md: the held-out accuracies before and after RL."""
  rows = [
      ("greedy pass@1", "eval/accuracy_greedy"),
      ("sampled accuracy (T=1)", "eval/accuracy_sampled"),
  ]
  lines = ["| held-out split | before RL | after RL | change |", "|---|---|---|---|"]
  for label, key in rows:
    a, b = first.get(key, float("nan")), last.get(key, float("nan"))
    lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
  return "\n".join(lines)
