#!/usr/bin/env bash
# Cloud TPU VM launcher for `python -m prime_jax.train`: create a TPU VM (slice), ship the code to
# every worker, run the same trainer command on all of them, follow the logs, stop, delete, and
# supervise a preemptible run (recreate + resume). See launch/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SELF="$LAUNCH_DIR/tpu.sh"

usage() {
  cat <<'EOF'
usage: launch/tpu.sh SUBCOMMAND [flags] [-- trainer flags]

subcommands:
  create     create the TPU VM: on-demand (default), --spot, and/or --queued (a queued resource)
  setup      copy git HEAD to every worker and install the venv (requirements.txt + jax[tpu]
             + gcsfs, for the gs:// workdir)
  run        start the trainer on every worker, detached, one log per worker
  tail       print / follow a worker's log (--worker=0 default, or --worker=all)
  stop       stop the trainer on every worker
  delete     delete the TPU VM (with --queued: the queued resource and its VM)
  supervise  poll the TPU; when it is preempted or gone, recreate it, set up and run again
             (the trainer resumes from the last checkpoint in the GCS workdir)

flags (every subcommand):
  --project=P   GCP project      (default: $PRIME_TPU_PROJECT)
  --zone=Z      zone             (default: $PRIME_TPU_ZONE)
  --name=N      TPU VM name      (default: $PRIME_TPU_NAME)
  --dry_run     print the commands (one per line, "+ " then a pasteable command), run nothing
  -h, --help    this text
create, supervise:
  --accelerator_type=T  v5p-64, v4-32, v5litepod-256, v6e-8 ... (default: $PRIME_TPU_TYPE)
  --version=V           runtime image (default per generation: v2-alpha-tpuv5 for v5p,
                        v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv6e for v6e,
                        tpu-ubuntu2204-base for v4 and older)
  --spot                a Spot VM (preemptible, much cheaper)
  --queued              go through `gcloud compute tpus queued-resources` (waits for capacity)
delete: --queued
run, supervise:
  --config=FILE         experiment config, relative to the repo root
                        (default: experiments/configs/arithmetic_prime.py)
  --bucket=B            workdir gs://B/prime-jax/RUN_NAME (default: $PRIME_TPU_BUCKET)
  --workdir=gs://...    or give the workdir itself; it must be on GCS so that every worker and
                        every recreated VM sees the same checkpoints
  --run_name=R          (default: the config file's name)
  -- FLAGS...           passed to the trainer, e.g. -- --config.mesh.fsdp=8 --config.rl.beta=0.05
tail:
  --worker=N|all        (default 0)   --lines=N (default 100)   --no_follow
supervise:
  --max_restarts=N      give up after N recreations / relaunches (default 10)
  --poll_seconds=S      time between checks (default 60)

examples:
  launch/tpu.sh create --project=my-proj --zone=us-east5-a --name=prime \
      --accelerator_type=v5p-64 --spot
  launch/tpu.sh setup  --project=my-proj --zone=us-east5-a --name=prime
  launch/tpu.sh run    --project=my-proj --zone=us-east5-a --name=prime --bucket=my-bucket \
      --config=experiments/configs/arithmetic_prime.py -- --config.mesh.fsdp=8
EOF
}

# Defaults; flags override them. Project, zone, name, type and bucket also come from the environment
# so that a shell session can set them once.
FLAG_project=${PRIME_TPU_PROJECT:-}
FLAG_zone=${PRIME_TPU_ZONE:-}
FLAG_name=${PRIME_TPU_NAME:-}
FLAG_accelerator_type=${PRIME_TPU_TYPE:-}
FLAG_version=""
FLAG_spot=0
FLAG_queued=0
FLAG_bucket=${PRIME_TPU_BUCKET:-}
FLAG_workdir=""
FLAG_config=experiments/configs/arithmetic_prime.py
FLAG_run_name=""
FLAG_worker=0
FLAG_lines=100
FLAG_no_follow=0
FLAG_max_restarts=10
FLAG_poll_seconds=60
FLAG_dry_run=0

# Layout on every worker (see REMOTE_ROOT in common.sh).
SRC="$REMOTE_ROOT/src"
VENV="$REMOTE_ROOT/venv"
LOGS="$REMOTE_ROOT/logs"
TARBALL_NAME=prime-jax-src.tar.gz  # scp puts it in the workers' home directories
# shellcheck disable=SC2088  # the tilde is for the workers' shells to expand
REMOTE_TARBALL="~/$TARBALL_NAME"

# The trainer's --workdir is on GCS: etils.epath (metrics, summaries, exports, orbax's metadata)
# reaches gs:// through gcsfs, which also brings google-cloud-storage (orbax asks it about the
# bucket). Not in requirements.txt: a CPU run does not need it.
GCSFS_REQUIREMENT=gcsfs==2026.10.1

TARGET_FLAGS="project zone name"
RUN_FLAGS="config workdir bucket run_name"
CREATE_FLAGS="accelerator_type version"

# ---------------------------------------------------------------------------------------------

require_target() {
  require project PRIME_TPU_PROJECT
  require zone PRIME_TPU_ZONE
  require name PRIME_TPU_NAME
  LOC=("--zone=$FLAG_zone" "--project=$FLAG_project")
}

default_runtime() {  # default_runtime ACCELERATOR_TYPE: the JAX runtime image of its generation
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

resolve_version() {  # sets VERSION from --version or the accelerator type's generation
  require accelerator_type PRIME_TPU_TYPE
  [[ $FLAG_accelerator_type =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] ||
    usage_error "--accelerator_type must look like v5p-64 / v4-32 / v5litepod-256," \
      "got '$FLAG_accelerator_type'"
  VERSION=$FLAG_version
  if [[ -z $VERSION ]]; then
    VERSION=$(default_runtime "$FLAG_accelerator_type") ||
      usage_error "no default runtime for '$FLAG_accelerator_type'; pass --version"
  fi
}

resolve_workdir() {  # sets WORKDIR (gs://...) from --workdir or --bucket + run name
  local run_name=${FLAG_run_name:-$(run_name_of "$FLAG_config")} bucket
  if [[ -n $FLAG_workdir ]]; then
    [[ $FLAG_workdir == gs://?* ]] || usage_error "--workdir must be a gs:// path (every worker" \
      "and every recreated VM must see the same checkpoints), got '$FLAG_workdir'"
    WORKDIR=${FLAG_workdir%/}
  elif [[ -n $FLAG_bucket ]]; then
    bucket=${FLAG_bucket#gs://}
    WORKDIR="gs://${bucket%/}/prime-jax/$run_name"
  else
    usage_error "--bucket is required (or --workdir=gs://..., or set PRIME_TPU_BUCKET)"
  fi
}

# ---------------------------------------------------------------------------------------------
# Subcommands.

cmd_create() {
  require_target
  resolve_version
  local spot=()
  if ((FLAG_spot)); then spot=(--spot); fi
  if ((FLAG_queued)); then
    # The queued resource and its node share the name, so every other subcommand finds the VM.
    run_cmd gcloud compute tpus queued-resources create "$FLAG_name" "--node-id=$FLAG_name" \
      "${LOC[@]}" "--accelerator-type=$FLAG_accelerator_type" "--runtime-version=$VERSION" \
      ${spot[@]+"${spot[@]}"}
    note "queued: the VM exists once the request is ACTIVE; check with"
    note "  gcloud compute tpus queued-resources describe $FLAG_name ${LOC[*]}" \
      "--format='value(state.state)'"
  else
    run_cmd gcloud compute tpus tpu-vm create "$FLAG_name" "${LOC[@]}" \
      "--accelerator-type=$FLAG_accelerator_type" "--version=$VERSION" ${spot[@]+"${spot[@]}"}
  fi
}

cmd_setup() {
  require_target
  local jax_req tarball
  jax_req="jax[tpu]==$(pinned_version jax)"
  tarball="${TMPDIR:-/tmp}/prime-jax-src-$$.tar.gz"
  if ((!DRY_RUN)); then
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -f $(shquote "$tarball")" EXIT
  fi
  make_tarball "$tarball"
  run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$FLAG_name:$TARBALL_NAME" --worker=all \
    "${LOC[@]}"
  run_cmd gcloud compute tpus tpu-vm ssh "$FLAG_name" --worker=all "${LOC[@]}" \
    "--command=$(setup_line "$SRC" "$VENV" "$REMOTE_TARBALL" "$jax_req" "$GCSFS_REQUIREMENT")"
}

cmd_run() {
  require_target
  resolve_workdir
  trainer_argv "$FLAG_config" "$WORKDIR" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  # Every worker runs the identical command; on a multi-host slice the trainer's
  # jax.distributed.initialize() finds its peers from the TPU metadata.
  run_cmd gcloud compute tpus tpu-vm ssh "$FLAG_name" --worker=all "${LOC[@]}" \
    "--command=$(start_line "$SRC" "$VENV" "$LOGS" -- "${TRAINER_ARGV[@]}")"
  note "workdir $WORKDIR; follow with: $0 tail --worker=0 (or --worker=all)"
}

cmd_tail() {
  require_target
  local prefix=0
  [[ $FLAG_worker == all || $FLAG_worker =~ ^[0-9]+$ ]] ||
    usage_error "--worker must be a worker number or 'all', got '$FLAG_worker'"
  require_uint lines
  if [[ $FLAG_worker == all ]]; then prefix=1; fi
  run_cmd gcloud compute tpus tpu-vm ssh "$FLAG_name" "--worker=$FLAG_worker" "${LOC[@]}" \
    "--command=$(tail_line "$LOGS" "$FLAG_lines" $((!FLAG_no_follow)) "$prefix")"
}

cmd_stop() {
  require_target
  run_cmd gcloud compute tpus tpu-vm ssh "$FLAG_name" --worker=all "${LOC[@]}" \
    "--command=$(stop_line "$LOGS")"
}

cmd_delete() {
  require_target
  if ((FLAG_queued)); then
    # --force also deletes the VM the queued resource holds.
    run_cmd gcloud compute tpus queued-resources delete "$FLAG_name" "${LOC[@]}" --force --quiet
  else
    run_cmd gcloud compute tpus tpu-vm delete "$FLAG_name" "${LOC[@]}" --quiet
  fi
}

# ---------------------------------------------------------------------------------------------
# supervise: a poll loop. Each step it is not sure about is a child `tpu.sh` process, so that a
# failing step stops that step (errexit holds inside it) and the loop decides what to do next.

GONE_STATES=" PREEMPTED TERMINATED SUSPENDED FAILED MISSING "
DRY_NODE_STATE=PREEMPTED  # what --dry_run pretends the TPU's state is, to show the recreate plan

describe_state() {  # describe_state KIND FIELD: STATE := the resource's FIELD, MISSING or UNKNOWN
  local cmd=(gcloud compute tpus "$1" describe "$FLAG_name" "${LOC[@]}" "--format=value($2)")
  local errf rc=0
  if ((DRY_RUN)); then
    print_cmd "${cmd[@]}"
    if [[ $1 == queued-resources ]]; then STATE=ACTIVE; else STATE=$DRY_NODE_STATE; fi
    return 0
  fi
  errf=$(mktemp)
  STATE=$("${cmd[@]}" 2>"$errf") || rc=$?
  if ((rc)); then
    # Only a definite "not found" counts as gone: a network blip must not look like a preemption.
    if grep -qiE 'NOT_FOUND|not found' "$errf"; then
      STATE=MISSING
    else
      STATE=UNKNOWN
      note "describe failed: $(head -n 2 "$errf")"
    fi
  fi
  rm -f "$errf"
  STATE=${STATE:-UNKNOWN}
}

tpu_state() {  # STATE := the TPU's state (READY, PREEMPTED, ...), MISSING or UNKNOWN
  if ((FLAG_queued)); then
    # A request still waiting for capacity has no VM yet; that is not a preemption.
    describe_state queued-resources state.state
    [[ $STATE == ACTIVE ]] || return 0
  fi
  describe_state tpu-vm state
}

run_finished() {  # the trainer writes summary.md into the workdir as its very last act
  if ((DRY_RUN)); then
    print_cmd gcloud storage ls "$WORKDIR/summary.md"
    return 1
  fi
  gcloud storage ls "$WORKDIR/summary.md" >/dev/null 2>&1
}

wait_ready() {  # until the new VM is READY (a queued request may wait for hours); 1 if it is gone
  while :; do
    DRY_NODE_STATE=READY
    tpu_state
    if [[ $STATE == READY ]]; then return 0; fi
    if [[ $GONE_STATES == *" $STATE "* ]]; then
      note "$FLAG_name is $STATE while waiting for it"
      return 1
    fi
    note "waiting for $FLAG_name to be READY (now $STATE)"
    sleep "$FLAG_poll_seconds"
  done
}

cmd_supervise() {
  require_target
  resolve_version
  resolve_workdir
  require_uint max_restarts
  require_uint poll_seconds
  local child=("--project=$FLAG_project" "--zone=$FLAG_zone" "--name=$FLAG_name")
  if ((DRY_RUN)); then child+=(--dry_run); fi
  local kind=() create=("--accelerator_type=$FLAG_accelerator_type" "--version=$VERSION")
  if ((FLAG_queued)); then kind=(--queued); fi
  if ((FLAG_spot)); then create+=(--spot); fi
  local run=("--config=$FLAG_config" "--workdir=$WORKDIR" -- ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
  local restarts=0 launch_pending=0

  while :; do
    if run_finished; then
      note "$WORKDIR/summary.md exists: the run is finished"
      return 0
    fi
    DRY_NODE_STATE=PREEMPTED
    tpu_state
    if [[ $GONE_STATES == *" $STATE "* ]]; then
      ((restarts < FLAG_max_restarts)) ||
        die "$FLAG_name is $STATE and all --max_restarts=$FLAG_max_restarts restarts are used"
      restarts=$((restarts + 1))
      note "$(date -u +%FT%TZ) $FLAG_name is $STATE: recreating it" \
        "(restart $restarts of $FLAG_max_restarts)"
      if [[ $STATE != MISSING ]]; then
        "$BASH" "$SELF" delete "${child[@]}" ${kind[@]+"${kind[@]}"} ||
          note "delete failed; creating anyway"
      fi
      if "$BASH" "$SELF" create "${child[@]}" ${kind[@]+"${kind[@]}"} "${create[@]}"; then
        launch_pending=1
      else
        note "create failed; trying again at the next poll"
      fi
    elif ((!launch_pending)); then
      note "$(date -u +%FT%TZ) $FLAG_name is $STATE"
    fi

    if ((launch_pending)); then
      if ! wait_ready; then
        :  # gone again before it was READY: the next poll recreates it (and counts that)
      elif "$BASH" "$SELF" setup "${child[@]}" &&
        "$BASH" "$SELF" run "${child[@]}" "${run[@]}"; then
        launch_pending=0  # the trainer resumes by itself from the last checkpoint in $WORKDIR
      elif ((restarts < FLAG_max_restarts)); then
        restarts=$((restarts + 1))
        note "setup/run did not complete; retrying at the next poll" \
          "(restart $restarts of $FLAG_max_restarts)"
      else
        die "setup/run failed and all --max_restarts=$FLAG_max_restarts restarts are used"
      fi
    fi

    if ((DRY_RUN)); then
      note "dry run: one iteration shown, as if $FLAG_name had been preempted"
      return 0
    fi
    sleep "$FLAG_poll_seconds"
  done
}

# ---------------------------------------------------------------------------------------------

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  SUBCOMMAND=$1
  shift
  local values bools="dry_run"
  case $SUBCOMMAND in
    -h | --help | help) usage; exit 0 ;;
    create) values="$TARGET_FLAGS $CREATE_FLAGS"; bools+=" spot queued" ;;
    setup | stop) values=$TARGET_FLAGS ;;
    run) values="$TARGET_FLAGS $RUN_FLAGS" ;;
    tail) values="$TARGET_FLAGS worker lines"; bools+=" no_follow" ;;
    delete) values=$TARGET_FLAGS; bools+=" queued" ;;
    supervise)
      values="$TARGET_FLAGS $CREATE_FLAGS $RUN_FLAGS max_restarts poll_seconds"
      bools+=" spot queued"
      ;;
    *) usage_error "unknown subcommand '$SUBCOMMAND'" ;;
  esac
  parse_flags "$values" "$bools" "$@"
  if ((${#EXTRA_ARGS[@]})) && [[ $SUBCOMMAND != run && $SUBCOMMAND != supervise ]]; then
    usage_error "'$SUBCOMMAND' takes no trainer flags (after --)"
  fi
  DRY_RUN=$FLAG_dry_run
  "cmd_$SUBCOMMAND"
}

main "$@"
