r"""Evaluate a checkpoint on the PRIME paper's benchmarks (Table 1 layout).

  python -m prime_jax.eval --checkpoint DIR --data_dir DATA \
      --benchmarks math500,aime24,amc,minerva,olympiadbench[,leetcode,livecodebench] \
      [--mode greedy|avg@16|greedy,aime24=avg@16] [--max_new_tokens N|name=N,...] \
      [--limit N] [--batch_size B] [--math_grader strict|released] [--out OUTDIR]

DIR: a Hugging Face checkpoint directory (config.json + safetensors + tokenizer.json) or a trainer
workdir (its export/policy). DATA: one file per benchmark, DATA/<name>.jsonl or
DATA/<name>/test.jsonl (.parquet too); layouts in docs/eval.md. Writes OUTDIR/<benchmark>.jsonl
(per problem: prompt, responses, extracted answers / code, scores), OUTDIR/results.json and
OUTDIR/results.md (the table). The logic is `prime_jax.evaluation`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from prime_jax import evaluation
from prime_jax.tools import _cli  # --checkpoint, --out, --batch_size, --dtype
from prime_jax.verifiers import SandboxUnavailableError

flags.DEFINE_string(
    "benchmarks",
    None,
    "Comma-separated benchmarks: " f"{','.join(evaluation.TABLE_ORDER)} (or all).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Directory with <name>.jsonl or <name>/test.jsonl per " "benchmark (docs/eval.md).",
)
flags.DEFINE_string(
    "mode",
    "greedy",
    "greedy (pass@1 at temperature 0) or avg@K (K samples at "
    "--temperature/--top_p, mean per-sample score); per benchmark with "
    "name=MODE, e.g. greedy,aime24=avg@16,amc=avg@16.",
)
flags.DEFINE_string(
    "max_new_tokens",
    None,
    "Response budget: one number for all benchmarks "
    "and/or name=N overrides; default per benchmark (AIME/AMC/Minerva/"
    "OlympiadBench 4096, MATH-500/LeetCode/LiveCodeBench 8192), cut to what "
    "the model's context leaves.",
)
flags.DEFINE_integer("limit", None, "Evaluate only the first N problems of each benchmark.")
flags.DEFINE_float("temperature", 0.3, "Sampling temperature of avg@K.")
flags.DEFINE_float("top_p", 0.95, "Nucleus mass of avg@K.")
flags.DEFINE_integer("seed", 0, "PRNG seed of avg@K sampling.")
flags.DEFINE_enum(
    "system_prompt",
    "eurus",
    ["eurus", "none"],
    "System prompt (the Eurus " "action-centric one, or none).",
)
flags.DEFINE_bool(
    "user_suffix",
    True,
    "Append the ability's instruction (box the answer / " "a ```python block) to the problem.",
)
flags.DEFINE_bool("apply_chat_template", True, "Render with the tokenizer's chat template.")
flags.DEFINE_integer("code_max_tests", 0, "Test cases run per code problem (0: all).")
flags.DEFINE_enum(
    "code_isolation",
    "strict",
    ["strict", "rlimits_only"],
    "Code sandbox " "isolation (docs/verifiers.md); rlimits_only only inside a container/VM.",
)
flags.DEFINE_enum(
    "math_grader",
    "strict",
    ["strict", "released"],
    "Math grading (docs/math_grading.md): strict "
    "(prime-jax's) or released (the released PRIME grader's decisions, as the paper's labels); "
    "results.md names the one used.",
)
flags.DEFINE_string(
    "mesh",
    "data=-1,fsdp=1,tensor=1",
    "Device mesh axes (-1: the remaining " "devices); params follow the default rule table.",
)
flags.DEFINE_string("name", None, "Row label in the table (default: the checkpoint's name).")
FLAGS = flags.FLAGS


def _run() -> None:
  import jax

  out = FLAGS.out or f"eval/{evaluation.default_label(FLAGS.checkpoint)}"
  try:
    evaluation.run_evaluation(
        FLAGS.checkpoint,
        FLAGS.benchmarks,
        FLAGS.data_dir,
        out,
        mode=FLAGS.mode,
        max_new_tokens=FLAGS.max_new_tokens,
        limit=FLAGS.limit,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        temperature=FLAGS.temperature,
        top_p=FLAGS.top_p,
        dtype=FLAGS.dtype,
        mesh=FLAGS.mesh,
        system_prompt=FLAGS.system_prompt,
        user_suffix=FLAGS.user_suffix,
        apply_chat_template=FLAGS.apply_chat_template,
        code_max_tests=FLAGS.code_max_tests,
        code_isolation=FLAGS.code_isolation,
        math_grader=FLAGS.math_grader,
        label=FLAGS.name,
        log=lambda line: print(line, flush=True),
    )
  except (evaluation.EvalError, FileNotFoundError) as e:
    raise _cli.InputError(str(e)) from None
  except SandboxUnavailableError as e:
    raise _cli.InputError(
        f"the code sandbox is unavailable: {e} (inside a container or VM that "
        "is the security boundary, --code_isolation=rlimits_only)"
    ) from None
  if jax.process_index() == 0:
    with open(f"{out}/results.md", encoding="utf-8") as f:
      sys.stdout.write("\n" + f.read())


def main(argv):
  _cli.run_main(argv, _run)


if __name__ == "__main__":
  FLAGS.set_default("dtype", "bfloat16")
  flags.mark_flags_as_required(["checkpoint", "benchmarks", "data_dir"])
  app.run(main)
