"""The PRM process-credit measure: the arithmetic pair builder, the metric math against a plain loop,
the model-scoring path on tiny models, JSONL errors, and the CLI end to end."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from prime_jax import configs, generation, prm_credit, sft, verifiers
from prime_jax.models import init_params, save_hf_checkpoint
from prime_jax.scoring import token_logprobs
from prime_jax.tasks import arithmetic as ar
from prime_jax.tasks import get_task
from prime_jax.tokenizer import load_tokenizer
from prime_jax.tools._cli import InputError
from prime_jax.tools.prm_credit import credit_report
from tiny_run import TINY_RUN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = get_task("arithmetic")
LINE = re.compile(r"([A-Z]?)(\d+)([-+*])(\d+)=(\d+)")
CONFIG_FILE = '''"""Tiny arithmetic settings for tests/test_prm_credit.py."""
from prime_jax import configs


def get_config():
    config = configs.arithmetic_config()
    config.update_from_flattened_dict({overrides!r})
    return config.lock()
'''


def tiny_config():
  config = configs.arithmetic_config()
  config.update_from_flattened_dict(dict(TINY_RUN, **{"task.num_train": 50, "task.num_eval": 16}))
  return config


# ---------------------------------------------------------------------------- the pair builder


def check_chain(problem, text, width, labels, *, wrong_line=None):
  """Every line `a op b = c` of `text` (after the step's letter A, B, ... with `labels`) continues
  from the line above and computes c right, except line `wrong_line`, whose c is off by 1..3; the
  box holds the last value. Returns the values."""
  *lines, box = text.split("\n")
  left, values = problem.start, []
  for i, (line, (op, operand)) in enumerate(zip(lines, problem.steps, strict=True)):
    letter, a, got_op, b, c = LINE.fullmatch(line).groups()
    assert letter == ("ABCDEFGH"[i] if labels else ""), line
    assert all(len(x) == width for x in (a, b, c)), line
    assert (int(a), got_op, int(b)) == (left, op, operand), (i, line)
    error = int(c) - ar.apply_op(int(a), op, int(b))
    assert (1 <= abs(error) <= 3) if i == wrong_line else error == 0, (i, line, wrong_line)
    left = int(c)
    values.append(left)
  assert box == f"\\boxed{{{left:0{width}d}}}"
  return values


@pytest.mark.parametrize(
    "knobs",
    [
        dict(),
        dict(step_labels=True),
        dict(min_ops=1, max_ops=6, max_value=9, mul_min=1, mul_max=3),
    ],
)
def test_mistake_pairs_are_one_wrong_step_with_a_consistent_rest(knobs):
  task_config = configs.arithmetic_config().task
  task_config.update(dict(num_train=10, num_eval=60, **knobs))
  spec = ar.ArithmeticSpec.from_config(task_config)
  records = TASK.make_splits(task_config, seed=0)["eval"]
  rows = TASK.mistake_pairs(task_config, records, seed=5, num_pairs=300)
  assert rows == TASK.mistake_pairs(task_config, records, seed=5, num_pairs=300)
  assert rows != TASK.mistake_pairs(task_config, records, seed=6, num_pairs=300)
  positions = []
  for i, row in enumerate(rows):
    record = records[i % len(records)]  # cycles through the records
    assert row["prompt"] == record.chat() and row["ability"] == "arithmetic"
    problem = ar.parse_prompt(record.chat()[-1]["content"])
    good_values = check_chain(problem, row["good"], spec.width, spec.step_labels)
    bad_values = check_chain(
        problem, row["bad"], spec.width, spec.step_labels, wrong_line=row["wrong_step"]
    )
    assert good_values == ar.chain_values(problem)
    assert all(0 <= v <= spec.max_value for v in bad_values)
    assert good_values[: row["wrong_step"]] == bad_values[: row["wrong_step"]]
    positions.append((row["wrong_step"], len(problem.steps)))
  truths = [records[i % len(records)].ground_truth for i in range(len(rows))]
  good_grades = verifiers.grade("arithmetic", [r["good"] for r in rows], truths)
  bad_grades = verifiers.grade("arithmetic", [r["bad"] for r in rows], truths)
  np.testing.assert_array_equal(good_grades, 1.0)
  np.testing.assert_array_equal(bad_grades, 0.0)
  # Every step of a chain gets mistakes: first, middle and last ones.
  assert {s for s, n in positions if s == 0} and {s for s, n in positions if s == n - 1}
  assert {s for s, n in positions if 0 < s < n - 1}


def test_demonstrations_are_unchanged_by_the_shared_mistake_deltas():
  # The SFT data of existing runs must not move: these are the values the demonstrator drew
  # before `mistake_pair` shared its delta rule (computed with that version).
  spec = ar.ArithmeticSpec(mistake_rate=0.5)
  problem = ar.Problem(7, (("+", 5), ("*", 2), ("-", 3), ("+", 60)))
  got = [ar.demonstration_values(problem, spec, np.random.default_rng(s)) for s in range(6)]
  assert got == [
      [12, 22, 16, 76],
      [12, 24, 23, 86],
      [9, 18, 13, 73],
      [10, 20, 17, 75],
      [12, 24, 21, 80],
      [12, 24, 21, 84],
  ]


# ---------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """(config, tokenizer, model config, ref params, prm params, ref dir, prm dir): a tiny random
  decoder with the arithmetic tokenizer, and a PRM that is a perturbed copy of it."""
  config = tiny_config()
  ref_dir = tmp_path_factory.mktemp("ref")
  TASK.train_tokenizer(config.task, ref_dir, seed=0)
  tokenizer = load_tokenizer(ref_dir)
  model_config = sft.model_config_for(config, tokenizer.vocab_size)
  ref = jax.jit(lambda k: init_params(model_config, k))(jax.random.key(0))
  leaves, tree = jax.tree_util.tree_flatten(ref)
  noise = jax.random.split(jax.random.key(1), len(leaves))
  prm = jax.tree_util.tree_unflatten(
      tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise)]
  )
  prm_dir = tmp_path_factory.mktemp("prm")
  extra = dict(eos_token_id=tokenizer.eos_ids[0], pad_token_id=tokenizer.pad_id)
  for directory, params in ((ref_dir, ref), (prm_dir, prm)):
    save_hf_checkpoint(str(directory), model_config, params, extra_config=extra)
  shutil.copy(ref_dir / "tokenizer.model", prm_dir)
  return config, tokenizer, model_config, ref, prm, str(ref_dir), str(prm_dir)


def task_pairs(config, tokenizer, num_pairs, seed=0):
  records = TASK.make_splits(config.task, config.seed)["eval"]
  rows = TASK.mistake_pairs(config.task, records, seed, num_pairs)
  encoder = generation.prompt_encoder(config, tokenizer)
  return rows, prm_credit.tokenize_pairs(
      [(r["id"], r) for r in rows], encoder, ability="arithmetic"
  )


def test_tokenised_pairs_first_differ_at_the_wrong_step(models):
  config, tokenizer, *_ = models
  rows, pairs = task_pairs(config, tokenizer, 40)
  for row, p in zip(rows, pairs):
    t = p.first_diff
    assert p.good[:t] == p.bad[:t] and p.good[t] != p.bad[t]
    assert p.good[-1] == p.bad[-1] == tokenizer.eos_ids[0]
    assert tokenizer.decode(p.good) == row["good"] and tokenizer.decode(p.bad) == row["bad"]
    assert p.bad_steps[t] == row["wrong_step"]
    # t* is the first differing digit of the wrong line's result
    text_diff = next(i for i, (a, b) in enumerate(zip(row["good"], row["bad"])) if a != b)
    assert tokenizer.decode(p.good[:t]) == row["good"][:text_diff]
    assert p.bad_steps[-1] + 1 == row["bad"].count("\n") + 1  # lines, the box's included


def test_a_prm_equal_to_the_reference_has_zero_credit_exactly(models):
  config, tokenizer, model_config, ref, *_ = models
  _, pairs = task_pairs(config, tokenizer, 12)
  arrays = prm_credit.pair_arrays(pairs, pad_id=tokenizer.pad_id)
  per_pair = prm_credit.measure(
      ref, ref, arrays, prm_config=model_config, ref_config=model_config, beta=0.05, batch_size=8
  )
  np.testing.assert_array_equal(per_pair["q_good"], 0.0)
  np.testing.assert_array_equal(per_pair["q_bad"], 0.0)
  summary = prm_credit.summarize(per_pair)
  assert summary["dip_mean"] == 0.0 and summary["p_dip_negative"] == 0.0
  assert summary["pair_accuracy"] == 0.0  # a tie counts as wrong
  # all steps tie for the lowest: the tie-broken hit rate is the chance rate, exactly
  assert summary["localisation"] == pytest.approx(summary["localisation_chance"], abs=1e-12)
  assert 0.0 < summary["localisation_chance"] < 0.5
  assert summary["beta_nll_ref_mean"] > 0 and 0.5 < summary["p_correct_cap_mean"] < 1


def test_scoring_in_padded_batches_matches_each_pair_scored_alone(models):
  config, tokenizer, model_config, ref, prm, *_ = models
  _, pairs = task_pairs(config, tokenizer, 5)  # 10 rows in batches of 4: the last one padded
  arrays = prm_credit.pair_arrays(pairs, pad_id=tokenizer.pad_id)
  per_pair = prm_credit.measure(
      prm, ref, arrays, prm_config=model_config, ref_config=model_config, beta=0.1, batch_size=4
  )

  def alone(params, p, response):
    one = lambda ids: (np.array([ids], np.int32), np.ones((1, len(ids)), bool))
    return np.asarray(token_logprobs(params, *one(p.prompt), *one(response), config=model_config))[
        0
    ]

  for i, p in enumerate(pairs):
    q_good = alone(prm, p, p.good) - alone(ref, p, p.good)
    q_bad = alone(prm, p, p.bad) - alone(ref, p, p.bad)
    np.testing.assert_allclose(per_pair["q_good"][i, : len(p.good)], q_good, atol=2e-5)
    np.testing.assert_allclose(per_pair["q_bad"][i, : len(p.bad)], q_bad, atol=2e-5)
    assert per_pair["dip"][i] == pytest.approx(q_bad[p.first_diff] - q_good[p.first_diff], abs=4e-5)
    nll = -alone(ref, p, p.good).sum()
    assert per_pair["beta_nll_ref"][i] == pytest.approx(0.1 * nll, rel=1e-5)
  assert np.abs(per_pair["dip"]).max() > 1e-2  # the perturbed PRM really differs


# ---------------------------------------------------------------------------- the metric math


def loop_metrics(q_good, q_bad, good_len, bad_len, first_diff, bad_steps, nll, beta):
  """pair_metrics written as a plain loop over pairs."""
  out = {k: [] for k in ("dip", "localised", "q_after_bad", "q_after_good", "pair_correct", "cap")}
  for i in range(len(first_diff)):
    t, g, b = first_diff[i], q_good[i, : good_len[i]], q_bad[i, : bad_len[i]]
    out["dip"].append(b[t] - g[t])
    sums = {}
    for pos in range(bad_len[i]):
      sums[bad_steps[i, pos]] = sums.get(bad_steps[i, pos], 0.0) + b[pos]
    low = min(sums.values())
    ties = [s for s, v in sums.items() if v == low]
    out["localised"].append(1 / len(ties) if bad_steps[i, t] in ties else 0.0)
    out["q_after_bad"].append(np.mean(b[t + 1 :]) if len(b) > t + 1 else np.nan)
    out["q_after_good"].append(np.mean(g[t + 1 :]) if len(g) > t + 1 else np.nan)
    out["pair_correct"].append(float(g.sum() > b.sum()))
    out["cap"].append(1 / (1 + np.exp(-beta * nll[i])))
  return {k: np.array(v) for k, v in out.items()}


def test_pair_metrics_match_a_plain_loop():
  rng = np.random.default_rng(0)
  m, width = 50, 12
  good_len = rng.integers(3, width + 1, m)
  bad_len = rng.integers(3, width + 1, m)
  first_diff = np.array([rng.integers(0, min(a, b)) for a, b in zip(good_len, bad_len)])
  first_diff[:3] = np.minimum(good_len, bad_len)[:3] - 1  # nothing after t* in the shorter one
  mask = lambda lengths: np.arange(width)[None, :] < lengths[:, None]
  good_mask, bad_mask = mask(good_len), mask(bad_len)
  q_good = np.where(good_mask, rng.normal(size=(m, width)), 0.0)
  q_bad = np.where(bad_mask, rng.normal(size=(m, width)), 0.0)
  q_good[:5] = q_bad[:5] = 0.0  # all-zero rows: every step ties
  breaks = rng.random((m, width)) < 0.3  # a line ends after this token
  bad_steps = np.where(bad_mask, np.cumsum(breaks, axis=1) - breaks, -1)
  nll = rng.uniform(1, 40, m)
  got = prm_credit.pair_metrics(
      q_good, q_bad, good_mask, bad_mask, first_diff, bad_steps, nll, beta=0.05
  )
  want = loop_metrics(q_good, q_bad, good_len, bad_len, first_diff, bad_steps, nll, 0.05)
  for key in ("dip", "localised", "q_after_bad", "q_after_good", "pair_correct"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
  np.testing.assert_allclose(got["p_correct_cap"], want["cap"], rtol=1e-12)
  assert np.isnan(got["q_after_good"][:3]).any() or np.isnan(got["q_after_bad"][:3]).any()
  assert 0 < got["localised"][:5].min() < 1  # ties are shared
  summary = prm_credit.summarize(got)
  assert summary["q_after_mistake_bad"] == pytest.approx(np.nanmean(want["q_after_bad"]))
  assert summary["localisation_chance"] == pytest.approx(np.mean(1 / (bad_steps.max(1) + 1)))
  assert summary["dip_p50"] == pytest.approx(np.median(want["dip"]))


def test_a_prm_that_penalises_the_wrong_token_dips_and_localises_it():
  # q is 0 except −c on the bad response's t*: the dip is −c, the wrong step is the lowest, the
  # pair is ranked right, and nothing moves after the mistake.
  c, m, width = 0.7, 4, 9
  first_diff = np.array([0, 3, 5, 8])
  bad_steps = np.tile(np.arange(width) // 3, (m, 1))  # three steps of three tokens
  q_bad = np.zeros((m, width))
  q_bad[np.arange(m), first_diff] = -c
  mask = np.ones((m, width), bool)
  per_pair = prm_credit.pair_metrics(
      np.zeros((m, width)), q_bad, mask, mask, first_diff, bad_steps, np.full(m, 10.0), beta=0.05
  )
  np.testing.assert_allclose(per_pair["dip"], -c)
  np.testing.assert_array_equal(per_pair["wrong_step"], [0, 1, 1, 2])
  np.testing.assert_array_equal(per_pair["localised"], 1.0)
  np.testing.assert_array_equal(per_pair["pair_correct"], 1.0)
  np.testing.assert_allclose(per_pair["step_q_bad"][1], [0.0, -c, 0.0])
  summary = prm_credit.summarize(per_pair)
  assert summary["localisation_chance"] == pytest.approx(1 / 3)
  assert summary["p_dip_negative"] == 1.0 and summary["q_after_mistake_bad"] == 0.0
  assert summary["p_correct_cap_mean"] == pytest.approx(1 / (1 + np.exp(-0.5)))


# ---------------------------------------------------------------------------- JSONL rows


@pytest.mark.parametrize(
    "row, message",
    [
        ({"good": "a", "bad": "b"}, "`prompt` must be a non-empty string"),
        ({"prompt": [{"role": "user"}], "good": "a", "bad": "b"}, "`prompt` must be"),
        ({"prompt": "p", "bad": "b"}, "`good` must be a non-empty response string"),
        ({"prompt": "p", "good": "a", "bad": 3}, "`bad` must be a non-empty response string"),
        ({"prompt": "p", "good": "a", "bad": "a"}, "the bad response is identical to the good"),
    ],
)
def test_malformed_pair_rows_name_their_line(models, tmp_path, row, message):
  config, _, _, _, _, ref_dir, prm_dir = models
  path = tmp_path / "pairs.jsonl"
  good_row = {
      "prompt": "a=07;+05=",
      "good": "07+05=12\n\\boxed{12}",
      "bad": "07+05=13\n\\boxed{13}",
  }
  path.write_text(json.dumps(good_row) + "\n\n" + json.dumps(row) + "\n")
  with pytest.raises(InputError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
    credit_report(prm_dir, ref_dir, str(tmp_path / "out"), config=config, pairs_path=str(path))
  assert not (tmp_path / "out").exists()  # refused before any model work


def test_task_and_pairs_give_the_same_numbers(models, tmp_path):
  config, tokenizer, _, _, _, ref_dir, prm_dir = models
  rows, _ = task_pairs(config, tokenizer, 6, seed=3)
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  common = dict(config=config, batch_size=4)
  from_task = credit_report(
      prm_dir, ref_dir, str(tmp_path / "a"), task="arithmetic", num_pairs=6, seed=3, **common
  )
  from_file = credit_report(prm_dir, ref_dir, str(tmp_path / "b"), pairs_path=str(path), **common)
  assert from_task == from_file
  with pytest.raises(InputError, match="exactly one of --task and --pairs"):
    credit_report(prm_dir, ref_dir, str(tmp_path / "c"), **common)


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_writes_the_summary_the_pairs_and_the_histogram(models, tmp_path):
  config, _, _, _, _, ref_dir, prm_dir = models
  config_file = tmp_path / "tiny.py"
  config_file.write_text(
      CONFIG_FILE.format(overrides=dict(TINY_RUN, **{"task.num_train": 50, "task.num_eval": 16}))
  )
  out = tmp_path / "out"
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "prime_jax.tools.prm_credit",
          f"--config={config_file}",
          f"--prm={prm_dir}",
          f"--ref={ref_dir}",
          "--task=arithmetic",
          "--num_pairs=10",
          "--batch_size=8",
          "--beta=0.1",
          f"--out={out}",
      ],
      cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["credit.json", "dips.png", "pairs.jsonl"]
  report = json.loads((out / "credit.json").read_text())
  assert report["beta"] == 0.1 and report["summary"]["num_pairs"] == 10
  pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
  assert len(pairs) == 10
  dips = [p["dip"] for p in pairs]
  assert report["summary"]["dip_mean"] == pytest.approx(np.mean(dips))
  for p in pairs:
    assert p["dip"] == pytest.approx(p["q_bad"][p["first_diff"]] - p["q_good"][p["first_diff"]])
    assert len(p["step_q_bad"]) == p["num_steps"] and sum(p["step_q_bad"]) == pytest.approx(
        p["sum_q_bad"]
    )
  assert (out / "dips.png").read_bytes()[:4] == b"\x89PNG"
  assert "| P(dip < 0) |" in proc.stdout and "PRM process credit on 10 pairs" in proc.stdout
