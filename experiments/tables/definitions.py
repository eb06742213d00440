"""The tables `experiments/run_table.py` runs: each table's variants, the base config file of each
scale, the paper's numbers beside which our rows are printed, the (baseline, treated) pairs whose
gaps are reported, and the metrics the rendering reads."""

from __future__ import annotations

import dataclasses

# small: the default task on a CPU; credit: its dense-credit variant (6-8 step chains, free
# operand order) on a CPU; full: Eurus-2-7B on a pod.
BASE_FILES = {
    "small": "experiments/configs/arithmetic.py",
    "credit": "experiments/configs/arithmetic_credit.py",
    "full": "experiments/configs/eurus2_7b.py",
}


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  variants: tuple[str, ...]
  full_steps: int = 240  # the paper reports Table 1's PRIME / RLOO rows and Table 4 at step 240


TABLES = {
    "table1": Table("PRIME vs outcome-only RLOO (paper Table 1)", ("prime", "rloo")),
    "table4": Table(
        "Advantage estimators with and without PRIME (paper Table 4)",
        (
            "rloo",
            "prime",
            "reinforce",
            "reinforce_prime",
            "grpo",
            "grpo_prime",
            "ppo",
            "ppo_prime",
            "prm_value",
        ),
    ),
    # Table 1 with the arms that say why PRIME does or does not separate (small scales only: the
    # oracle needs the task's step oracle). prime_whole keeps the PRM's judgement but drops its
    # within-response credit; oracle is the ceiling of any dense reward on the task.
    "dense_credit": Table(
        "PRIME vs outcome-only RLOO, with the density control and the oracle ceiling",
        ("rloo", "prime", "prime_whole", "oracle"),
    ),
    # No step is given for the ablations in the spec; they use the tables' 240 too.
    "prm_ablations": Table(
        "Implicit-PRM ablations and the 16-samples run (paper §5 ablations)",
        (
            "prime",
            "prm_offline",
            "prm_from_trained",
            "ref_policy",
            "double_forward",
            "prm_dpo",
            "prime_n16",
        ),
    ),
}

# The paper's numbers, copied from the project's spec (shared/PRIME_SPEC.md §9: "The paper's
# numbers (greedy pass@1, %)", from arXiv 2502.01456 v2 Table 1 and Table 4). Benchmark keys are
# prime_jax.evaluation's names, in Table 1's column order.
PAPER_TABLE1 = {  # row -> (step, {benchmark: %}); "avg" is the paper's own average
    "Eurus-2-7B-SFT": (
        0,
        dict(
            aime24=3.3,
            amc=30.1,
            math500=66.2,
            minerva=32.7,
            olympiadbench=29.8,
            leetcode=21.7,
            livecodebench=17.8,
            avg=28.8,
        ),
    ),
    "RLOO, outcome verifier only": (
        240,
        dict(
            aime24=20.0,
            amc=47.0,
            math500=73.2,
            minerva=36.4,
            olympiadbench=35.4,
            leetcode=28.3,
            livecodebench=26.7,
            avg=36.9,
        ),
    ),
    "PRIME": (
        240,
        dict(
            aime24=20.0,
            amc=50.6,
            math500=78.2,
            minerva=39.3,
            olympiadbench=40.3,
            leetcode=31.1,
            livecodebench=27.5,
            avg=41.0,
        ),
    ),
    "Eurus-2-7B-PRIME": (
        592,
        dict(
            aime24=26.7,
            amc=57.8,
            math500=79.2,
            minerva=38.6,
            olympiadbench=42.1,
            leetcode=33.3,
            livecodebench=28.6,
            avg=43.9,
        ),
    ),
    "Qwen2.5-Math-7B-Instruct": (
        None,
        dict(
            aime24=13.3,
            amc=50.6,
            math500=79.8,
            minerva=34.6,
            olympiadbench=40.7,
            leetcode=11.7,
            livecodebench=11.3,
            avg=34.6,
        ),
    ),
}
PAPER_TABLE1_ROW = {"prime": "PRIME", "rloo": "RLOO, outcome verifier only"}
PAPER_TABLE4_AVG = {  # spec §9: "Table 4 (avg at 240 steps, without -> with PRIME)"
    "rloo": 36.9,
    "prime": 41.0,
    "reinforce": 36.0,
    "reinforce_prime": 37.8,
    "grpo": 36.1,
    "grpo_prime": 37.8,
    "ppo": 35.8,
    "ppo_prime": 39.4,
    "prm_value": 36.6,
}
PAPER_FINDINGS = {  # spec §9's headline ablations: curves in the paper, no table numbers
    "prime": "the reference row",
    "prm_offline": "online PRM beats an offline PRM (whose accuracy decays)",
    "prm_from_trained": "PRM initialised from the SFT model beats a separately trained PRM",
    "ref_policy": "SFT-ref and policy-ref give similar rewards",
    "double_forward": "double forward raises PRM accuracy but not reward",
}

# (baseline, treated) pairs whose gap each small table reports, with confidence intervals.
PAIRS = {
    "table1": (("rloo", "prime"),),
    "table4": (
        ("rloo", "prime"),
        ("reinforce", "reinforce_prime"),
        ("grpo", "grpo_prime"),
        ("ppo", "ppo_prime"),
        ("rloo", "prm_value"),
    ),
    "prm_ablations": tuple(("prime", v) for v in TABLES["prm_ablations"].variants[1:]),
    "dense_credit": (
        ("rloo", "prime"),
        ("rloo", "oracle"),
        ("prime_whole", "prime"),
        ("rloo", "prime_whole"),
    ),
}
EFFICIENCY_METRIC, EFFICIENCY_WINDOW = "rollout/acc_all_samples", 10
TIMING_SKIP_STEPS = 2  # the first steps compile
PHASES = (
    ("time/sampling", "sampling"),
    ("time/grading", "grading"),
    ("time/update", "update"),
    ("time/prm_est", "PRM (est.)"),
    ("time/policy_est", "policy (est.)"),
    ("time/checkpoint", "checkpoint"),
)

CURVE_METRICS = (
    "eval/accuracy_greedy",
    "eval/accuracy_sampled",
    "rollout/acc_all_samples",
    "prm/acc_before",
    # The PRM's process credit on held-out mistake pairs (prime_jax.prm_credit), at every eval.
    "prm_credit/dip_mean",
    "prm_credit/localisation",
    "prm_credit/pair_accuracy",
)
SUMMARY_FILE = "summary.md"
