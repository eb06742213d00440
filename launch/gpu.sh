#!/usr/bin/env bash
# GPU launcher for `python -m prime_jax.train`: one host with one or more GPUs, this machine or
# another one over ssh (--host user@machine). One process drives all the host's GPUs; the mesh is
# the trainer's --config.mesh.* flags. See launch/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/gpu.sh SUBCOMMAND [flags] [-- trainer flags]

subcommands:
  setup   make the venv and install requirements.txt + jax[cuda12] (the pinned jax version);
          with --host, first copy git HEAD to ~/prime-jax/src there
  run     start the trainer detached, logging to LOGS/train.log
  tail    print / follow the log
  stop    stop the trainer

flags (every subcommand):
  --host=USER@MACHINE  run over ssh there (code in ~/prime-jax/src, venv ~/prime-jax/venv, logs
                       ~/prime-jax/logs); without it, here (this checkout, .venv, workdir/logs)
  --dry_run            print the commands (one per line, "+ " then a pasteable command), run nothing
  -h, --help           this text
run:
  --config=FILE        experiment config, relative to the repo root
                       (default: experiments/configs/arithmetic_prime.py)
  --workdir=DIR        relative to the code directory, or absolute, or gs://...
                       (default: workdir/RUN_NAME here, ../runs/RUN_NAME = ~/prime-jax/runs/RUN_NAME
                       with --host, outside src/ so that a new setup keeps it)
  --run_name=R         (default: the config file's name)
  --gpus=0,1,...       CUDA_VISIBLE_DEVICES (default: all GPUs)
  --mem_fraction=F     XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.90: JAX's 0.75 leaves a quarter
                       of each GPU unused, and the sampler's KV cache and the update step share it)
  -- FLAGS...          passed to the trainer, e.g. -- --config.mesh.data=-1 --config.mesh.fsdp=2
tail:
  --lines=N (default 100)   --no_follow

examples:
  launch/gpu.sh setup --host=me@gpubox
  launch/gpu.sh run --host=me@gpubox --gpus=0,1,2,3 -- --config.mesh.fsdp=4 --config.total_steps=200
  launch/gpu.sh tail --host=me@gpubox
EOF
}

FLAG_host=""
FLAG_config=experiments/configs/arithmetic_prime.py
FLAG_workdir=""
FLAG_run_name=""
FLAG_gpus=""
FLAG_mem_fraction=0.90
FLAG_lines=100
FLAG_no_follow=0
FLAG_dry_run=0

# ---------------------------------------------------------------------------------------------

layout() {  # SRC, VENV, LOGS (as shell words for the target's shell) and the default workdir
  local run_name=${FLAG_run_name:-$(run_name_of "$FLAG_config")}
  if [[ -n $FLAG_host ]]; then
    SRC="$REMOTE_ROOT/src"
    VENV="$REMOTE_ROOT/venv"
    LOGS="$REMOTE_ROOT/logs"
    DEFAULT_WORKDIR="../runs/$run_name"  # the trainer runs in src/; a re-setup replaces src/
  else
    SRC=$(shquote "$REPO_ROOT")
    VENV=$(shquote "$REPO_ROOT/.venv")
    LOGS=$(shquote "$REPO_ROOT/workdir/logs")
    DEFAULT_WORKDIR="workdir/$run_name"  # the README's default place (git-ignored)
  fi
}

on_target() {  # on_target LINE: run the shell line on the host (ssh) or here, always in bash
  if [[ -n $FLAG_host ]]; then
    # ssh hands its command to the login shell, which need not be bash: wrap it.
    run_cmd ssh "$FLAG_host" "bash -c $(shquote "$1")"
  else
    run_cmd bash -c "$1"
  fi
}

check_host() {
  [[ -z $FLAG_host || $FLAG_host =~ ^[A-Za-z0-9._@:-]+$ ]] ||
    usage_error "--host must look like user@machine, got '$FLAG_host'"
}

# ---------------------------------------------------------------------------------------------
# Subcommands.

cmd_setup() {
  local jax_req tarball="" remote_tarball=""
  jax_req="jax[cuda12]==$(pinned_version jax)"
  if [[ -n $FLAG_host ]]; then
    tarball="${TMPDIR:-/tmp}/prime-jax-src-$$.tar.gz"
    # shellcheck disable=SC2088  # the tilde is for the host's shell
    remote_tarball="~/prime-jax-src.tar.gz"
    if ((!DRY_RUN)); then
      # shellcheck disable=SC2064  # expand now: the path is fixed
      trap "rm -f $(shquote "$tarball")" EXIT
    fi
    make_tarball "$tarball"
    run_cmd scp "$tarball" "$FLAG_host:prime-jax-src.tar.gz"
  fi
  on_target "$(setup_line "$SRC" "$VENV" "$remote_tarball" "$jax_req")"
}

cmd_run() {
  [[ -z $FLAG_gpus || $FLAG_gpus =~ ^[0-9]+(,[0-9]+)*$ ]] ||
    usage_error "--gpus must be a comma-separated list of GPU numbers like 0,1,2, got '$FLAG_gpus'"
  [[ $FLAG_mem_fraction =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] ||
    usage_error "--mem_fraction must be in (0, 1], got '$FLAG_mem_fraction'"
  local envs=("XLA_PYTHON_CLIENT_MEM_FRACTION=$FLAG_mem_fraction")
  if [[ -n $FLAG_gpus ]]; then envs+=("CUDA_VISIBLE_DEVICES=$FLAG_gpus"); fi
  trainer_argv "$FLAG_config" "${FLAG_workdir:-$DEFAULT_WORKDIR}" \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  on_target "$(start_line "$SRC" "$VENV" "$LOGS" "${envs[@]}" -- "${TRAINER_ARGV[@]}")"
}

cmd_tail() {
  require_uint lines
  on_target "$(tail_line "$LOGS" "$FLAG_lines" $((!FLAG_no_follow)) 0)"
}

cmd_stop() {
  on_target "$(stop_line "$LOGS")"
}

# ---------------------------------------------------------------------------------------------

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  SUBCOMMAND=$1
  shift
  local values="host" bools="dry_run"
  case $SUBCOMMAND in
    -h | --help | help) usage; exit 0 ;;
    setup | stop) ;;
    run) values+=" config workdir run_name gpus mem_fraction" ;;
    tail) values+=" lines"; bools+=" no_follow" ;;
    *) usage_error "unknown subcommand '$SUBCOMMAND'" ;;
  esac
  parse_flags "$values" "$bools" "$@"
  if ((${#EXTRA_ARGS[@]})) && [[ $SUBCOMMAND != run ]]; then
    usage_error "'$SUBCOMMAND' takes no trainer flags (after --)"
  fi
  DRY_RUN=$FLAG_dry_run
  check_host
  layout
  "cmd_$SUBCOMMAND"
}

main "$@"
