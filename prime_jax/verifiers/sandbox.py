"""Run untrusted Python programs against test inputs in an isolated, resource-capped sandbox.

`run_program` starts one supervisor process per program (`_sandbox_init.py`), which forks one
child per test. What each isolation level provides, and what it does not, is documented in
docs/verifiers.md; in short:

- ``"strict"`` (default; needs root, namespaces and cgroup v1): fresh network (no interfaces
  up), pid, mount, ipc and uts namespaces; a minimal read-only root filesystem (system dirs and
  the Python installation only) with a size-capped tmpfs as working directory; pids and memory
  cgroups; the program runs as an unprivileged uid with rlimits; everything it started is killed
  with the namespace.
- ``"rlimits_only"`` (explicit opt-down, e.g. inside a container that is the real boundary):
  new session, rlimits (the process cap then relies on RLIMIT_NPROC of an unprivileged uid),
  empty environment, fresh temporary directory; no network or filesystem isolation.

Expected outputs never enter the sandbox: it receives inputs and returns raw outputs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from prime_jax.verifiers.cgroups import CgroupUnavailableError, SandboxCgroup

logger = logging.getLogger(__name__)

ISOLATION_LEVELS = ("strict", "rlimits_only")
INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_init.py")


class SandboxUnavailableError(RuntimeError):
  """The configured isolation cannot be provided here; nothing was run (fail closed)."""


@dataclass(frozen=True)
class SandboxConfig:
  """Limits and isolation for one program run. Sizes in bytes, times in seconds.

  `address_space_bytes` caps each process (RLIMIT_AS); `memory_bytes` the whole sandbox
  (memory cgroup, strict only); `max_processes` its task count, threads included (pids cgroup
  and RLIMIT_NPROC). `per_test_timeout_s` is wall time, and also sets RLIMIT_CPU
  (ceil(timeout) + 1 s).
  """

  isolation: str = "strict"
  per_test_timeout_s: float = 5.0
  address_space_bytes: int = 1 << 30
  memory_bytes: int = 2 << 30
  max_processes: int = 32
  max_open_files: int = 64
  max_file_bytes: int = 16 << 20
  workdir_bytes: int = 64 << 20
  max_stdout_bytes: int = 1 << 20
  max_stderr_bytes: int = 16 << 10
  uid: int = 65534
  gid: int = 65534
  setup_grace_s: float = 3.0
  env: tuple[tuple[str, str], ...] = (
      ("PATH", "/usr/local/bin:/usr/bin:/bin"),
      ("LANG", "C.UTF-8"),
      ("OPENBLAS_NUM_THREADS", "1"),
      ("OMP_NUM_THREADS", "1"),
      ("MKL_NUM_THREADS", "1"),
      ("MALLOC_ARENA_MAX", "2"),
  )  # fewer 64 MiB malloc arenas under RLIMIT_AS

  def __post_init__(self):
    if self.isolation not in ISOLATION_LEVELS:
      raise ValueError(
          f"SandboxConfig.isolation must be one of {ISOLATION_LEVELS}, " f"got {self.isolation!r}"
      )
    if self.uid == 0 or self.gid == 0:
      raise ValueError("SandboxConfig.uid/gid must not be 0: programs never run as root")
    for name in (
        "per_test_timeout_s",
        "address_space_bytes",
        "memory_bytes",
        "max_processes",
        "max_open_files",
        "max_file_bytes",
        "workdir_bytes",
        "max_stdout_bytes",
        "max_stderr_bytes",
        "setup_grace_s",
    ):
      if getattr(self, name) <= 0:
        raise ValueError(f"SandboxConfig.{name} must be > 0, got {getattr(self, name)}")
    if self.max_processes < 4:
      raise ValueError("SandboxConfig.max_processes must be >= 4 (supervisor + program)")


@dataclass(frozen=True)
class Program:
  """A program and its test inputs.

  `inputs`: stdin strings (stdin/stdout problems, `fn_name` None) or argument lists (call-based
  problems: `fn_name` is called, or `Solution().fn_name` when the code defines `Solution`).
  `preload`: module names imported by the supervisor before forking tests (must be trusted).
  """

  code: str
  inputs: tuple
  fn_name: str | None = None
  preload: tuple[str, ...] = ()
  import_prelude: bool = True


@dataclass(frozen=True)
class CaseOutcome:
  """Raw outcome of one test case.

  status: 'ok' (exit 0), 'runtime_error' (other exit code), 'signaled' (killed by a signal,
  e.g. SIGXCPU or an OOM kill), 'timeout', 'output_limit' or 'not_run' (budget spent or the
  sandbox died first). `returned` is the JSON text of a call-based return value.
  """

  status: str
  stdout: str = ""
  stderr: str = ""
  returned: str | None = None
  exit_code: int | None = None
  signal: int | None = None
  wall_s: float = 0.0


@dataclass(frozen=True)
class SandboxRun:
  """All tests of one program (`tests[i]` is input i; unreached tests are 'not_run').

  `error` is set when the sandbox itself failed (setup, supervisor killed or over budget).
  """

  tests: tuple[CaseOutcome, ...]
  error: str | None = None
  wall_s: float = 0.0
  oom_kills: int = 0


def _python_dirs() -> list[str]:
  dirs = {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix}
  return sorted(d for d in dirs if os.path.isdir(d))


def _tasks_of_uid(uid: int) -> int:
  """Tasks (threads) currently owned by real uid `uid`: what RLIMIT_NPROC counts."""
  total = 0
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
      if int(fields["Uid"].split()[0]) == uid:
        total += int(fields["Threads"])
    except (OSError, KeyError, ValueError):
      continue
  return total


def _static_check(config: SandboxConfig) -> None:
  if not sys.platform.startswith("linux"):
    raise SandboxUnavailableError("the code sandbox needs Linux")
  if config.isolation == "strict" and os.geteuid() != 0:
    raise SandboxUnavailableError(
        "strict sandbox isolation needs root (namespaces, cgroups, dropping to an "
        "unprivileged uid). Run the grader as root, or, only inside a container or VM that "
        "you trust as the security boundary, opt down explicitly with "
        "SandboxConfig(isolation='rlimits_only')."
    )
  if config.isolation == "strict":
    try:
      SandboxCgroup.create(config.max_processes, config.memory_bytes).remove()
    except CgroupUnavailableError as exc:
      raise SandboxUnavailableError(
          f"strict sandbox isolation needs writable cgroup v1 pids and memory controllers: "
          f"{exc}. Opt down explicitly with SandboxConfig(isolation='rlimits_only') only "
          f"inside a container that is the real boundary."
      ) from exc


_PROBE = """
import json, os, socket
report = {"uid": os.getuid(), "gid": os.getgid(), "env": sorted(os.environ)}
try:
    socket.create_connection(("127.0.0.1", 9), timeout=0.5).close()
    report["net"] = "connected"
except OSError as exc:
    report["net"] = exc.errno
report["host_fs"] = os.path.exists(%r)
report["stdlib_readable"] = os.access(os.path.dirname(os.__file__), os.R_OK | os.X_OK)
print(json.dumps(report))
"""


@functools.lru_cache(maxsize=8)
def check_isolation(config: SandboxConfig) -> None:
  """Fail closed: raise SandboxUnavailableError unless `config`'s isolation works here.

  Runs a trusted probe program through the real sandbox and checks what it observes
  (uid, network, host filesystem). Cached per config and process.
  """
  _static_check(config)
  probe = Program(
      code=_PROBE % INIT_SCRIPT,
      inputs=("",),
      preload=("socket", "encodings.idna"),
      import_prelude=False,
  )
  run = run_program(probe, config, budget_s=config.setup_grace_s, _checked=True)
  test = run.tests[0]
  if run.error or test.status != "ok":
    raise SandboxUnavailableError(
        f"sandbox probe failed ({run.error or test.status}): {test.stderr.strip()[-500:]}"
    )
  seen = json.loads(test.stdout)
  expected_uid = config.uid if os.geteuid() == 0 else os.getuid()
  problems = []
  if seen["uid"] != expected_uid or seen["uid"] == 0:
    problems.append(f"program ran as uid {seen['uid']}, expected {expected_uid}")
  if config.isolation == "strict":
    if seen["net"] == "connected":
      problems.append("program reached 127.0.0.1 (network namespace missing)")
    if seen["host_fs"]:
      problems.append("program can see the grader's files (mount isolation missing)")
  if problems:
    raise SandboxUnavailableError("sandbox isolation check failed: " + "; ".join(problems))
  if not seen["stdlib_readable"]:
    logger.warning(
        "the sandbox uid cannot read the Python installation (%s): programs can "
        "only import the preloaded modules",
        os.path.dirname(os.__file__),
    )


def _job(
    program: Program, config: SandboxConfig, budget_s: float, workdir: str, procs_files: list[str]
) -> dict:
  if config.isolation == "strict":
    # The pids cgroup is the per-sandbox cap. RLIMIT_NPROC counts the uid's tasks machine-wide,
    # so as a second fence it is sized for many concurrent sandboxes sharing the uid.
    uid, gid = config.uid, config.gid
    nproc = config.max_processes * max(8, os.cpu_count() or 1)
  elif os.geteuid() == 0:  # only RLIMIT_NPROC caps processes; shared by concurrent sandboxes
    uid, gid, nproc = config.uid, config.gid, config.max_processes
  else:  # unprivileged grader: RLIMIT_NPROC counts all of our uid's tasks
    uid, gid = os.getuid(), os.getgid()
    nproc = _tasks_of_uid(uid) + config.max_processes
  return {
      "grader_pid": os.getpid(),
      "cgroup_procs_files": procs_files,
      "namespaces": config.isolation == "strict",
      "python_dirs": _python_dirs(),
      "workdir": workdir,
      "workdir_bytes": config.workdir_bytes,
      "uid": uid,
      "gid": gid,
      "limits": {
          "address_space_bytes": config.address_space_bytes,
          "file_bytes": config.max_file_bytes,
          "open_files": config.max_open_files,
          "processes": nproc,
      },
      "per_test_timeout_s": config.per_test_timeout_s,
      "budget_s": budget_s,
      "max_stdout_bytes": config.max_stdout_bytes,
      "max_stderr_bytes": config.max_stderr_bytes,
      "code": program.code,
      "fn_name": program.fn_name,
      "inputs": list(program.inputs),
      "preload": list(program.preload),
      "import_prelude": program.import_prelude,
  }


def _exchange(
    proc: subprocess.Popen, job: bytes, deadline: float, cap: int
) -> tuple[list[dict], str]:
  """Send the job and collect the supervisor's JSON events until 'done', EOF, the deadline
  or `cap` bytes; never blocks past the deadline. Returns (events, tail of its stderr)."""
  out, err = bytearray(), bytearray()
  reads = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
  stdin = proc.stdin.fileno()
  for fd in (*reads, stdin):
    os.set_blocking(fd, False)
  pending = memoryview(job)
  while reads:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or len(out) > cap:
      break
    readable, writable, _ = select.select(list(reads), [stdin] if pending else [], [], remaining)
    if writable:
      try:
        pending = pending[os.write(stdin, pending[: 1 << 16]) :]
      except BrokenPipeError:  # the supervisor died; its stderr says why
        pending = pending[:0]
      if not pending:
        proc.stdin.close()
    for fd in readable:
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        del reads[fd]
      elif len(reads[fd]) < cap:
        reads[fd] += chunk
    if b'"event": "done"' in out[-64:]:
      break
  events = []
  for line in out.split(b"\n"):
    try:
      events.append(json.loads(line))
    except ValueError:
      continue
  return events, err[-4000:].decode("utf-8", "replace")


def _stop(proc: subprocess.Popen, cgroup: SandboxCgroup | None, finished: bool) -> None:
  """Kill the supervisor (its namespace dies with it) and anything left in the cgroup.

  A supervisor that reported 'done' gets a moment to exit on its own.
  """
  try:
    proc.wait(timeout=1.0 if finished else 0.0)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # not yet reaped, so the group id is still ours
    proc.wait()
  for stream in (proc.stdin, proc.stdout, proc.stderr):
    stream.close()
  if cgroup is not None and not cgroup.kill_all():
    raise RuntimeError(f"sandbox cgroup {cgroup.pids_dir} could not be emptied")


def run_program(
    program: Program, config: SandboxConfig, budget_s: float, *, _checked: bool = False
) -> SandboxRun:
  """Run `program` on each of its inputs in the sandbox; never raises for program behaviour.

  budget_s: wall time for all tests together (setup gets `config.setup_grace_s` on top);
  tests not reached within it are reported 'not_run'. Raises SandboxUnavailableError when the
  isolation is unavailable.
  """
  if not _checked:
    check_isolation(config)
  start = time.monotonic()
  cgroup = workdir = None
  events: list[dict] = []
  n = len(program.inputs)
  try:
    if config.isolation == "strict":
      cgroup = SandboxCgroup.create(config.max_processes, config.memory_bytes)
    else:
      workdir = tempfile.mkdtemp(prefix="prime_jax_sandbox_")
      if os.geteuid() == 0:
        os.chown(workdir, config.uid, config.gid)
      os.chmod(workdir, 0o700)
    job = _job(program, config, budget_s, workdir or "/tmp", cgroup.procs_files if cgroup else [])
    env = dict(config.env, HOME=workdir or "/tmp")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", INIT_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    try:
      cap = 8 * n * (2 * config.max_stdout_bytes + config.max_stderr_bytes) + (1 << 20)
      events, stderr = _exchange(
          proc, json.dumps(job).encode(), start + budget_s + config.setup_grace_s, cap
      )
    finally:
      _stop(proc, cgroup, finished=any(e.get("event") == "done" for e in events))
    oom_kills = cgroup.oom_kills() if cgroup else 0
  finally:
    if cgroup is not None:
      cgroup.remove()
    if workdir is not None:
      shutil.rmtree(workdir, ignore_errors=True)
  setup_errors = [e["message"] for e in events if e.get("event") == "setup_error"]
  if setup_errors:
    raise SandboxUnavailableError(f"sandbox setup failed: {setup_errors[0]}")
  tests = [CaseOutcome("not_run")] * n
  for e in events:
    if e.get("event") == "test" and 0 <= e.get("index", -1) < n:
      tests[e["index"]] = CaseOutcome(**{k: e[k] for k in CaseOutcome.__dataclass_fields__})
  error = None
  if not any(e.get("event") == "ready" for e in events):
    error = f"supervisor did not start: {stderr.strip()[-1000:]}"
  elif not any(e.get("event") == "done" for e in events):
    error = "supervisor stopped before finishing (killed or over budget)"
  return SandboxRun(tuple(tests), error, time.monotonic() - start, oom_kills)
