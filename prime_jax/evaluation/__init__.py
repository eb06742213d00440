"""The evaluation harness: the PRIME paper's benchmarks (Table 1) on a Hugging Face checkpoint.

    python -m prime_jax.eval --checkpoint DIR --benchmarks math500,aime24 --data_dir DATA

(CLI: `prime_jax/eval.py`; layouts, flags and the defaults' sources: `docs/eval.md`.)

The steps, each a function of this package (`benchmarks`: the benchmark table, modes and data;
`responses`: the model and its generation; `grading`: extraction and the verifiers; `harness`:
one benchmark, the table, the whole run):
  1. `load_benchmark`: a local JSONL/Parquet file (`find_benchmark_file`: DIR/<name>.jsonl or
     DIR/<name>/test.jsonl) read with `prime_jax.data.formats` (math: the `problems` layout, code:
     the `code` layout); a malformed row is an error, not a silent skip, since it would change
     the denominator;
  2. `encode_prompts`: the released run's prompt (Eurus action-centric system prompt + the ability's user
     suffix + the tokenizer's chat template), by `prime_jax.data.PromptEncoder`;
  3. `generate_responses`: prompts sorted by length, cut into fixed-size batches and sampled by
     `prime_jax.generation.generate` (the shared jitted sampler, prompt widths bucketed); greedy,
     or k samples per prompt for avg@k. A prompt whose budget would pass the model's context gets
     what is left (rounded down to `BUDGET_STEP` so batches share compiled shapes), as vLLM stops at
     `max_model_len`;
  4. `score_items`: the verifier registry; math 0/1 (`prime_jax.verifiers` "math", in the mode
     `math_grader` names: strict or released, docs/math_grading.md), code 1 when
     every test case passes (pass@1 as LeetCode / LiveCodeBench count it; the fraction passed is
     kept next to it), run in the sandbox with all of the item's tests (not training's 10);
  5. `render_table`: the paper's Table 1 layout, "–" for benchmarks not run (left out of avg).
`run_evaluation` chains them and writes OUT/<benchmark>.jsonl, OUT/results.json, OUT/results.md.
"""

from prime_jax.evaluation.benchmarks import (
    ALIASES,
    ALL_TESTS,
    BENCHMARKS,
    BUDGET_STEP,
    EVAL_CODE_ABILITY,
    MAX_REPORTED,
    MISSING,
    TABLE_ORDER,
    Benchmark,
    EvalError,
    EvalMode,
    encode_prompts,
    find_benchmark_file,
    load_benchmark,
    parse_mode,
    parse_per_benchmark,
    positive_int,
    prompt_format,
    resolve_benchmarks,
)
from prime_jax.evaluation.grading import Scores, extract, register_code_ability, score_items
from prime_jax.evaluation.harness import (
    BenchmarkResult,
    default_label,
    evaluate_benchmark,
    render_table,
    results_markdown,
    run_evaluation,
    table_average,
)
from prime_jax.evaluation.responses import (
    BatchGroup,
    LoadedModel,
    generate_responses,
    load_model,
    plan_generation,
    resolve_checkpoint,
)

__all__ = [
    "ALIASES",
    "ALL_TESTS",
    "BENCHMARKS",
    "BUDGET_STEP",
    "BatchGroup",
    "Benchmark",
    "BenchmarkResult",
    "EVAL_CODE_ABILITY",
    "EvalError",
    "EvalMode",
    "LoadedModel",
    "MAX_REPORTED",
    "MISSING",
    "Scores",
    "TABLE_ORDER",
    "default_label",
    "encode_prompts",
    "evaluate_benchmark",
    "extract",
    "find_benchmark_file",
    "generate_responses",
    "load_benchmark",
    "load_model",
    "parse_mode",
    "parse_per_benchmark",
    "plan_generation",
    "positive_int",
    "prompt_format",
    "register_code_ability",
    "render_table",
    "resolve_benchmarks",
    "resolve_checkpoint",
    "results_markdown",
    "run_evaluation",
    "score_items",
    "table_average",
]
