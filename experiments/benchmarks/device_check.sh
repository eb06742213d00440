#!/usr/bin/env bash
# One-shot device check for a borrowed GPU's few minutes (issue 17, item 4). From the repository
# root, with the repository's .venv set up (jax with CUDA on a GPU):
#
#   bash experiments/benchmarks/device_check.sh [--dry_run] [--cpu] [--out DIR]
#
# Steps, each in its own process under `timeout` with the budget below, output captured in
# <step>.log: env (fails at once when no GPU is visible, with the install hint), the GPU-relevant
# tests (HF parity, sampler equalities, sharding), the sampler and update-step benchmarks in bf16
# (tokens/s, MFU against the card's datasheet peak: CARDS in device_check.py), the planner against
# device.memory_stats() peaks, a 20-step default run, and the report. The budgets sum to under
# 8 minutes; the run fails (exit 1, naming the steps) if any step fails or times out, or the total
# passes 8 minutes. A failed step does not stop the later ones (the device time is spent
# measuring), except env.
#
#   --dry_run  print each step's command and budget, run nothing
#   --cpu      every step on the CPU at tiny sizes (exercises the whole pipeline; budgets x8, no
#              8-minute limit); output in a scratch folder, never experiments/results/device/
#   --out DIR  where the report (DIR/<card>.md) and the raw logs and JSON (DIR/<card>_raw/) go;
#              default experiments/results/device (GPU) or /tmp/device_check_cpu (--cpu)
#   --steps a,b  run only these steps (env always runs: the report needs the card), e.g. after a
#              failed step, into DEVICE_CHECK_WORK holding the earlier run's files: the rerun
#              steps' lines in its steps.tsv are replaced, the others kept for the report
set -euo pipefail

DRY_RUN=0
CPU=0
OUT=""
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --cpu) CPU=1 ;;
    --out) OUT="$2"; shift ;;
    --steps) ONLY="env,$2"; shift ;;
    *) echo "device_check: unknown argument $1 (use --dry_run, --cpu, --out DIR, --steps a,b)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-.venv/bin/python}
HELPER=experiments/benchmarks/device_check.py
TOTAL_BUDGET=480
if [[ $CPU == 1 ]]; then
  OUT=${OUT:-/tmp/device_check_cpu}
  SCALE=8
  MODE=--cpu
  export JAX_PLATFORMS=cpu
  SAMPLER_SIZES="--batch 4 --prompt 16 --new_tokens 16 --repeats 1"
  MODEL_SIZES="--vocab 2048 --hidden 128 --layers 2 --heads 4 --kv_heads 2 --head_dim 32 --mlp 384"
  UPDATE_SIZES="$MODEL_SIZES --responses 8 --prompt 16 --response 32 --micro_batch 4 --score_chunk 32 --repeats 1"
  MEMORY_SIZES="$MODEL_SIZES --responses 8 --prompt 16 --response 32 --micro_batch 4 --score_chunk 32 --repeats 1"
  TESTS="tests/models/test_decoder.py::test_logits_match_transformers tests/test_sampling.py::test_kv_cache_decoding_equals_full_forward tests/test_sharding.py::test_parse_mesh_reads_axis_sizes_and_names_a_bad_part"
  RUN_FLAGS="--config.sft.steps=10 --config.total_steps=2 --config.eval_every=2 --config.ckpt_every=2 --config.task.num_train=500 --config.task.num_eval=16 --config.rl.filter_lo=0.0 --config.rl.filter_hi=1.0"
else
  OUT=${OUT:-experiments/results/device}
  SCALE=1
  MODE=""
  SAMPLER_SIZES="--batch 64 --prompt 128 --new_tokens 512 --repeats 3"
  UPDATE_SIZES="--responses 64 --prompt 128 --response 512 --micro_batch 16 --repeats 3"
  MEMORY_SIZES="--responses 16 --prompt 128 --response 512 --micro_batch 8 --repeats 1"
  # The GPU-relevant tests only: on an H200 (2026-12-04) tests/models/test_decoder.py alone took
  # 107 s, nearly all of it compiling.
  TESTS="tests/models/test_decoder.py tests/test_sampling.py tests/test_sharding.py"
  TESTS+=" -k 'transformers or decode_steps or bfloat16 or activation_constraints or kv_cache"
  TESTS+=" or logprobs or same_key or parse_mesh or whole_blocks'"
  RUN_FLAGS="--config.total_steps=20"
fi
WORK=${DEVICE_CHECK_WORK:-$(mktemp -d /tmp/device_check.XXXXXX)}
mkdir -p "$WORK"

# name | budget (s, before SCALE) | command. f32 parity tests run at full f32 matmul precision
# (XLA:GPU would otherwise use TF32 on these cards).
# Budgets from the first H200 run (2026-12-04, experiments/results/device/nvidia_h200.md): sampler
# took 26 s, update 43 s; memory printed nothing in 40 s, and the default run's SFT and first eval
# took about 50 s but its first RL step had not ended at 120 s, so the default run logs each
# compilation and its time (JAX_LOG_COMPILES) to show where that step's time goes. No -x: one failure must not hide
# the other tests' results.
STEPS=(
  "env|20|$PY $HELPER env $MODE --json $WORK/env.json"
  "tests|130|env JAX_DEFAULT_MATMUL_PRECISION=highest $PY -m pytest -q -p no:cacheprovider $TESTS"
  "sampler|40|$PY $HELPER sampler $MODE $SAMPLER_SIZES --dtype bfloat16 --json $WORK/sampler.json"
  "update|60|$PY $HELPER update $MODE $UPDATE_SIZES --dtype bfloat16 --json $WORK/update.json"
  "memory|70|$PY $HELPER memory $MODE $MEMORY_SIZES --dtype bfloat16 --json $WORK/memory.json"
  "default_run|150|env JAX_LOG_COMPILES=1 $PY -m prime_jax.train --workdir=$WORK/run $RUN_FLAGS"
  "report|10|$PY $HELPER report --dir $WORK"
)

if [[ -n $ONLY ]]; then
  kept=()
  for step in "${STEPS[@]}"; do
    [[ ",$ONLY," == *",${step%%|*},"* ]] && kept+=("$step")
  done
  for name in ${ONLY//,/ }; do
    if [[ " $(printf '%s ' "${STEPS[@]%%|*}") " != *" $name "* ]]; then
      echo "device_check: unknown step $name in --steps" >&2
      exit 2
    fi
  done
  STEPS=("${kept[@]}")
fi

budget_sum=0
for step in "${STEPS[@]}"; do
  IFS='|' read -r name budget cmd <<<"$step"
  budget_sum=$((budget_sum + budget))
done
if [[ $CPU == 0 && $budget_sum -gt $TOTAL_BUDGET ]]; then
  echo "device_check: step budgets sum to ${budget_sum} s, over the ${TOTAL_BUDGET} s limit" >&2
  exit 1
fi

if [[ $DRY_RUN == 1 ]]; then
  echo "device_check dry run: $([[ $CPU == 1 ]] && echo cpu || echo gpu) mode, out $OUT, work $WORK"
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name budget cmd <<<"$step"
    echo "step $name timeout $((budget * SCALE))s: $cmd"
  done
  echo "total budget $((budget_sum * SCALE))s (limit ${TOTAL_BUDGET}s on a GPU)"
  rmdir "$WORK" 2>/dev/null || true
  exit 0
fi

export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
echo "device_check: work folder $WORK"
if [[ -n $ONLY ]]; then
  # Keep the earlier run's lines for the steps not rerun.
  touch "$WORK/steps.tsv"
  grep -v -E "^(${ONLY//,/|})"$'\t' "$WORK/steps.tsv" >"$WORK/steps.keep" || true
  mv "$WORK/steps.keep" "$WORK/steps.tsv"
else
  : >"$WORK/steps.tsv"
fi
failed=()
start=$SECONDS
for step in "${STEPS[@]}"; do
  IFS='|' read -r name budget cmd <<<"$step"
  limit=$((budget * SCALE))
  if [[ $name == report ]]; then
    # The report needs the card, known after env: write it beside the raw folder.
    card=$(sed -n 's/.*"card": "\(.*\)".*/\1/p' "$WORK/env.json")
    cmd="$cmd --out $OUT/$card.md"
  fi
  echo "=== $name (timeout ${limit}s): $cmd"
  t0=$SECONDS
  set +e
  timeout --kill-after=5 "$limit" bash -c "$cmd" >"$WORK/$name.log" 2>&1
  rc=$?
  set -e
  took=$((SECONDS - t0))
  if [[ $rc == 0 ]]; then
    status=ok
  elif [[ $rc == 124 || $rc == 137 ]]; then
    status="timeout"
  else
    status="failed rc=$rc"
  fi
  tail -n 15 "$WORK/$name.log"
  echo "=== $name: $status in ${took}s"
  [[ $name == report ]] || printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$limit" >>"$WORK/steps.tsv"
  if [[ $status != ok ]]; then
    failed+=("$name ($status, log $WORK/$name.log)")
    if [[ $name == env ]]; then
      echo "device_check: FAILED at env; nothing else can run" >&2
      exit 1
    fi
  fi
done
elapsed=$((SECONDS - start))
if [[ -n ${card:-} ]]; then
  mkdir -p "$OUT/${card}_raw"
  cp "$WORK"/*.json "$WORK"/*.log "$WORK/steps.tsv" "$OUT/${card}_raw/" 2>/dev/null || true
fi
echo "device_check: ${elapsed}s in all; report $OUT/${card:-?}.md, raw logs $OUT/${card:-?}_raw/"
# A --steps rerun's verdict covers the kept steps too: the check passes when every step has.
while IFS=$'\t' read -r name status _; do
  if [[ $status != ok && " ${failed[*]} " != *" $name ("* ]]; then
    failed+=("$name ($status, earlier run)")
  fi
done <"$WORK/steps.tsv"
if [[ $CPU == 0 && $elapsed -gt $TOTAL_BUDGET ]]; then
  failed+=("total time ${elapsed}s over ${TOTAL_BUDGET}s")
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "device_check: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "device_check: all steps passed"
