# shellcheck shell=bash
# shellcheck disable=SC2016  # remote shell code is built in single quotes on purpose
# Shared pieces of launch/tpu.sh and launch/gpu.sh; sourced, never run on its own.
#
# What lives here: flag parsing, the --dry_run-aware command runner, errors, and the shell lines
# that run ON a target host (install, start, stop, tail the trainer) -- those are the same on a TPU
# worker and a GPU box, only the transport differs (gcloud ssh --worker=all, plain ssh, local bash).
#
# Written for bash >= 3.2 (a Mac's /bin/bash launches too): no associative arrays, no ${x,,},
# and empty arrays are expanded as ${a[@]+"${a[@]}"} because bash < 4.4 calls "${a[@]}" unbound.
set -euo pipefail

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAUNCH_DIR/.." && pwd)
DRY_RUN=0
SUBCOMMAND=""
EXTRA_ARGS=()

# Everything the launcher puts on a remote host lives under this directory (relative to $HOME):
# src/ is replaced on each setup, venv/ and logs/ and runs/ survive it.
# shellcheck disable=SC2088,SC2034  # the remote shell expands the tilde; used by the scripts
REMOTE_ROOT="~/prime-jax"

# ---------------------------------------------------------------------------------------------
# Errors and messages. Notes go to stderr so that stdout of --dry_run is only the commands.

die() {  # die MESSAGE: a failure while doing the work (exit 1)
  echo "error: $*" >&2
  exit 1
}

usage_error() {  # usage_error MESSAGE: the command line is wrong (exit 2, like getopt tools)
  echo "error: $*" >&2
  echo "(run '$(basename "$0") ${SUBCOMMAND:-SUBCOMMAND} --help' for usage)" >&2
  exit 2
}

note() {
  echo "# $*" >&2
}

# ---------------------------------------------------------------------------------------------
# Quoting and running commands.

# shquote WORD: WORD as one shell word, quoted only when needed (the rules of Python's shlex.quote)
shquote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    local q="'\\''"
    printf "'%s'" "${s//\'/$q}"
  fi
}

join_quoted() {  # join_quoted WORD...: the words as one pasteable command line
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(shquote "$word")"
  done
  printf '%s' "$out"
}

print_cmd() {
  printf '+ %s\n' "$(join_quoted "$@")"
}

run_cmd() {  # run_cmd CMD ARGS...: print it (--dry_run) or echo it to stderr and run it
  if ((DRY_RUN)); then
    print_cmd "$@"
  else
    print_cmd "$@" >&2
    "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# Flag parsing.

# parse_flags "VALUE_FLAGS" "BOOL_FLAGS" ARG...
# Accepts --name=value or --name value for each name in VALUE_FLAGS, and --name for each name in
# BOOL_FLAGS; dashes in a name read as underscores (--accelerator-type == --accelerator_type).
# Each sets the global FLAG_<name>, which the caller pre-sets to its default. Everything after
# "--" lands in EXTRA_ARGS (the trainer's own flags). The caller defines usage().
# shellcheck disable=SC2034  # EXTRA_ARGS is read by the scripts
parse_flags() {
  local values=" $1 " bools=" $2 " arg name
  shift 2
  EXTRA_ARGS=()
  while (($#)); do
    arg=$1
    shift
    case $arg in
      --) EXTRA_ARGS=("$@"); return 0 ;;
      -h | --help) usage; exit 0 ;;
      --?*) ;;
      *) usage_error "unexpected argument '$arg' (trainer flags go after --)" ;;
    esac
    name=${arg#--}
    name=${name%%=*}
    name=${name//-/_}
    if [[ $values == *" $name "* ]]; then
      if [[ $arg == *=* ]]; then
        printf -v "FLAG_$name" '%s' "${arg#*=}"
      elif (($#)); then
        printf -v "FLAG_$name" '%s' "$1"
        shift
      else
        usage_error "--$name needs a value"
      fi
    elif [[ $bools == *" $name "* ]]; then
      [[ $arg != *=* ]] || usage_error "--$name takes no value"
      printf -v "FLAG_$name" '%s' 1
    else
      usage_error "unknown flag '$arg' for '$SUBCOMMAND'"
    fi
  done
}

require() {  # require NAME [ENV_VAR]: usage error naming --NAME when FLAG_NAME is empty
  local var="FLAG_$1"
  [[ -n ${!var:-} ]] || usage_error "--$1 is required${2:+ (or set $2)}"
}

require_uint() {  # require_uint NAME: FLAG_NAME must be a non-negative integer
  local var="FLAG_$1"
  [[ ${!var} =~ ^[0-9]+$ ]] || usage_error "--$1 must be a non-negative integer, got '${!var}'"
}

# ---------------------------------------------------------------------------------------------
# Project facts.

pinned_version() {  # pinned_version PACKAGE: the X of the "PACKAGE==X" line of requirements.txt
  local v
  v=$(sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$REPO_ROOT/requirements.txt" | head -n 1)
  [[ -n $v ]] || die "requirements.txt has no '$1==VERSION' line"
  printf '%s' "$v"
}

# run_name_of CONFIG: experiments/configs/arithmetic_prime.py[:arg] -> arithmetic_prime
run_name_of() {
  local base=${1%%:*}
  base=${base##*/}
  printf '%s' "${base%.py}"
}

trainer_argv() {  # trainer_argv CONFIG WORKDIR EXTRA...: the trainer's command line, one word each
  TRAINER_ARGV=(-m prime_jax.train "--config=$1" "--workdir=$2")
  shift 2
  TRAINER_ARGV+=("$@")
}

make_tarball() {  # make_tarball PATH: the committed tree (git HEAD) as a .tar.gz
  if ((!DRY_RUN)) && [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no) ]]; then
    note "the working tree has uncommitted changes; only the committed HEAD is shipped"
  fi
  run_cmd git -C "$REPO_ROOT" archive --format=tar.gz "--output=$1" HEAD
}

# ---------------------------------------------------------------------------------------------
# Shell lines run on a target host. Each returns ONE line, because that is what `ssh HOST LINE` and
# `gcloud ... ssh --command=LINE` take (and --dry_run prints one command per line). The code for
# the target is written in single quotes (so its $ are the target's) with @NAME@ placeholders
# for our values, which are shell words already: quoted with shquote, except "~/..." which stays
# unquoted so that the target's shell expands it.

_fill() {  # _fill TEMPLATE NAME VALUE...: TEMPLATE with each @NAME@ replaced by its VALUE
  local out=$1
  shift
  while (($#)); do
    out=${out//@$1@/"$2"}
    shift 2
  done
  printf '%s' "$out"
}

# setup_line SRC VENV TARBALL JAX_REQUIREMENT [REQUIREMENT...]: unpack TARBALL (unless empty) into a
# fresh SRC, make VENV if it does not exist (it survives a re-setup, which then only installs what
# changed), and install the pinned requirements plus the accelerator's jax build (and any further
# REQUIREMENTs, e.g. gcsfs) in one resolver run.
setup_line() {
  local t='set -euo pipefail; '
  if [[ -n $3 ]]; then
    t+='rm -rf @SRC@; mkdir -p @SRC@; tar -xzf @TARBALL@ -C @SRC@; rm -f @TARBALL@; '
  fi
  # jax needs Python >= 3.11, TPU VM images are Ubuntu 22.04 with 3.10: use the first python3.x
  # that is new enough, else install python3.11 (and, if venv lacks ensurepip, PY-venv) from apt.
  t+='if [ ! -x @VENV@/bin/python ]; then '
  t+='PY=""; for p in python3 python3.13 python3.12 python3.11; do '
  t+='if command -v "$p" >/dev/null && "$p" -c "import sys; sys.exit(sys.version_info < (3, 11))"; '
  t+='then PY=$p; break; fi; done; '
  t+='if [ -z "$PY" ]; then PY=python3.11; sudo apt-get -qq update; '
  t+='sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3.11 python3.11-venv; fi; '
  t+='"$PY" -m venv @VENV@ || { sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y '
  t+='"$PY-venv" && "$PY" -m venv --clear @VENV@; }; '
  t+='fi; '
  t+='@VENV@/bin/python -m pip install -q -U pip; '
  t+='@VENV@/bin/python -m pip install -q -r @SRC@/requirements.txt @REQS@; '
  t+='echo "$(hostname): $(@VENV@/bin/python -c '\''import jax; print("jax", jax.__version__)'\'')'
  t+=' ready"'
  _fill "$t" SRC "$1" VENV "$2" TARBALL "$3" REQS "$(join_quoted "${@:4}")"
}

# start_line SRC VENV LOGS NAME=VALUE... -- PYTHON_ARG...: start `python ARGS` in SRC, detached
# (nohup, stdin from /dev/null, output to a timestamped log that LOGS/train.log points at) so that
# the ssh session can end, with the NAME=VALUEs in its environment; its pid goes to LOGS/train.pid
# for `stop`. Refuses to start a second one.
start_line() {
  local src=$1 venv=$2 logs=$3 envs="" t
  shift 3
  while (($#)) && [[ $1 != -- ]]; do
    # Only the value may be quoted, or the shell no longer sees an assignment.
    [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "start_line: '$1' is not NAME=VALUE"
    envs+="${1%%=*}=$(shquote "${1#*=}") "
    shift
  done
  shift
  t='set -euo pipefail; mkdir -p @LOGS@; '
  t+='if [ -f @LOGS@/train.pid ] && kill -0 "$(cat @LOGS@/train.pid)" 2>/dev/null; then '
  t+='echo "$(hostname): a trainer is already running (pid $(cat @LOGS@/train.pid));'
  t+=' stop it first" >&2; '
  t+='exit 1; '
  t+='fi; '
  t+='log=@LOGS@/train-$(date +%Y%m%d-%H%M%S).log; ln -sfn "$log" @LOGS@/train.log; cd @SRC@; '
  t+='@ENV@nohup @VENV@/bin/python @ARGS@ > "$log" 2>&1 < /dev/null & echo $! > @LOGS@/train.pid; '
  t+='echo "$(hostname): trainer pid $! logging to $log"'
  _fill "$t" LOGS "$logs" SRC "$src" VENV "$venv" ENV "$envs" ARGS "$(join_quoted "$@")"
}

# stop_line LOGS: SIGTERM the pid in LOGS/train.pid, SIGKILL after 60 s (the accelerator is free
# only once the process is gone). Only that pid: no pattern matching on command lines.
stop_line() {
  local t='pidf=@LOGS@/train.pid; '
  t+='if [ -f "$pidf" ] && pid=$(cat "$pidf") && kill -0 "$pid" 2>/dev/null; then '
  t+='kill "$pid"; for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done; '
  t+='kill -9 "$pid" 2>/dev/null || true; echo "$(hostname): stopped trainer $pid"; '
  t+='else echo "$(hostname): no trainer running"; fi; '
  t+='rm -f "$pidf"'
  _fill "$t" LOGS "$1"
}

# tail_line LOGS LINES FOLLOW PREFIX: the last LINES lines of the current log, followed across
# restarts (tail -F) when FOLLOW=1; PREFIX=1 tags lines with the host, for many workers at once.
tail_line() {
  local t='tail -n @LINES@'
  if (($3)); then t+=' -F'; fi
  t+=' @LOGS@/train.log'
  if (($4)); then t+=' | sed -u "s/^/[$(hostname)] /"'; fi
  _fill "$t" LOGS "$1" LINES "$2"
}
