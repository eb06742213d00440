"""Sandbox supervisor: runs *inside* the isolation, one process per graded program.

Executed by `sandbox.run_program` as `python -I -B _sandbox_init.py` with a fixed environment
(none of the grader's variables).
It reads one JSON job from stdin and writes JSON lines to stdout:
``{"event": "ready", ...}``, one ``{"event": "test", ...}`` per test, then ``{"event": "done"}``;
or ``{"event": "setup_error", "message": ...}`` when the isolation could not be built (the caller
fails closed on that). Stdlib only: it must not import the project.

Process tree (strict isolation)::

    launcher (host pid ns, root, in the sandbox cgroups, PDEATHSIG=KILL from the grader)
      └─ init (pid 1 of fresh pid/net/mount/ipc/uts namespaces, root, minimal root filesystem)
           └─ one child per test: new session, rlimits, uid/gid dropped, then the program

The program never runs as root, never sees the grader's filesystem, network or processes, and
its expected outputs are never inside the sandbox: only inputs go in, raw outputs come out, and
the grader compares outside. When init exits, the kernel kills everything left in its pid
namespace, so daemons cannot outlive the sandbox.
"""

import builtins
import ctypes
import fcntl
import json
import math
import os
import platform
import resource
import select
import signal
import sys
import time
import traceback

# Linux constants (not all exposed by the 3.11 stdlib).
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)

# The released PRIME harness prepends these imports to every solution; programs rely on them.
IMPORT_PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\n"
    "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
    "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
    "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(6*10**5)\n"
)
PRELUDE_MODULES = (
    "string",
    "re",
    "datetime",
    "collections",
    "heapq",
    "bisect",
    "copy",
    "math",
    "random",
    "statistics",
    "itertools",
    "functools",
    "operator",
    "io",
    "json",
    "typing",
)


class SetupError(Exception):
  """The configured isolation could not be built; the caller must fail closed."""


def _check(ret, what):
  if ret != 0:
    err = ctypes.get_errno()
    raise SetupError(f"{what} failed: {os.strerror(err)} (errno {err})")


def _mount(src, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else s.encode()  # noqa: E731
  _check(
      _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
      f"mount {src or fstype} on {target}",
  )


def _emit(obj):
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


# ----------------------------------------------------------------------------------------------
# Building the isolation (runs as root)
# ----------------------------------------------------------------------------------------------


def _die_with_parent(expected_parent):
  _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
  if os.getppid() != expected_parent:  # the parent died before prctl took effect
    os._exit(1)


def _join_cgroups(procs_files):
  for path in procs_files:
    with open(path, "w") as f:
      f.write(str(os.getpid()))


def _bind(src, target, flags):
  """Non-recursive bind mount, then remount it with `flags` (e.g. read-only, nosuid, nodev)."""
  _mount(src, target, None, MS_BIND)
  _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _makedirs(path):
  os.makedirs(path, mode=0o755, exist_ok=True)


def _build_root(job):
  """Assemble a minimal read-only root in a tmpfs and pivot into it.

  Visible afterwards: system dirs (/usr, /bin, /lib*, /sbin), the Python installation, a fresh
  /proc of the new pid namespace (hidepid=2), a few /dev nodes, and /tmp: a size-limited
  tmpfs owned by the sandbox uid, which is the program's working directory. Bind sources are
  pinned with O_PATH fds first, because the staging mount may hide them (e.g. a venv in /tmp).
  """
  _mount(None, "/", None, MS_REC | MS_PRIVATE)
  system = [
      p
      for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
      if os.path.lexists(p)
  ]
  links = {p: os.readlink(p) for p in system if os.path.islink(p)}
  dirs = [p for p in system if p not in links]
  for path in job["python_dirs"]:
    # Skip a Python dir already visible through a bind of the same filesystem.
    if not any(
        (path + "/").startswith(d + "/") and os.stat(path).st_dev == os.stat(d).st_dev for d in dirs
    ):
      dirs.append(path)
  devices = ["/dev/" + n for n in ("null", "zero", "full", "random", "urandom")]
  pinned = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in dirs + devices}

  new = "/tmp"  # any existing directory works; the mount is private to this namespace
  _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
  _makedirs(new + "/tmp")
  _mount(
      "tmpfs",
      new + "/tmp",
      "tmpfs",
      MS_NOSUID | MS_NODEV,
      f"size={job['workdir_bytes']},mode=0700,uid={job['uid']},gid={job['gid']}",
  )
  ro = MS_RDONLY | MS_NOSUID | MS_NODEV
  for path, target in links.items():
    os.symlink(target, new + path)
  for path in dirs:  # in order: a Python dir may live inside /tmp, the workdir
    _makedirs(new + path)
    _bind(f"/proc/self/fd/{pinned[path]}", new + path, ro)
  _makedirs(new + "/dev")
  for path in devices:
    open(new + path, "w").close()
    _bind(f"/proc/self/fd/{pinned[path]}", new + path, MS_NOSUID | MS_NOEXEC)
  for fd in pinned.values():
    os.close(fd)
  for name, target in (
      ("fd", "/proc/self/fd"),
      ("stdin", "/proc/self/fd/0"),
      ("stdout", "/proc/self/fd/1"),
      ("stderr", "/proc/self/fd/2"),
      ("shm", "/tmp"),
  ):
    os.symlink(target, new + "/dev/" + name)
  for d in ("/proc", "/.oldroot"):
    _makedirs(new + d)
  pivot = SYS_PIVOT_ROOT.get(platform.machine())
  if pivot is None:
    raise SetupError(f"pivot_root syscall number unknown for {platform.machine()}")
  _check(_libc.syscall(pivot, new.encode(), (new + "/.oldroot").encode()), "pivot_root")
  os.chdir("/")
  _check(_libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
  os.rmdir("/.oldroot")
  _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
  _mount(None, "/", None, MS_REMOUNT | ro, "size=1m,mode=0755")


def _enter_namespaces(job):
  """Unshare, fork init (pid 1 of the new pid namespace) and return only in init."""
  _check(
      _libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS),
      "unshare(net, pid, mount, ipc, uts)",
  )
  pid = os.fork()
  if pid:  # launcher: wait for init and mirror its exit status
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
  _die_with_parent(0)  # our parent lives outside the new pid namespace, so getppid() is 0
  if os.getpid() != 1:
    raise SetupError("not pid 1 after unshare(CLONE_NEWPID)")
  _check(_libc.sethostname(b"sandbox", 7), "sethostname")
  _build_root(job)
  _set_oom_score_adj(-1000)  # under memory pressure the OOM killer takes the program


def _set_oom_score_adj(value):
  """Best effort: lowering needs CAP_SYS_RESOURCE, which some hosts withhold even from root."""
  try:
    with open("/proc/self/oom_score_adj", "w") as f:
      f.write(str(value))
  except OSError:
    pass


def _preload(modules):
  """Import modules once in init so each forked test starts warm (trusted, allow-listed)."""
  for name in modules:
    try:
      __import__(name)
    except Exception:  # a missing optional module only costs the program an import later
      pass


# ----------------------------------------------------------------------------------------------
# One test: forked child that drops privileges and runs the program
# ----------------------------------------------------------------------------------------------


def _sealed_memfd(data):
  fd = os.memfd_create("stdin", os.MFD_ALLOW_SEALING)
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view) :]
  fcntl.fcntl(
      fd,
      fcntl.F_ADD_SEALS,
      fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
  )
  os.lseek(fd, 0, os.SEEK_SET)
  return fd


def _close_fds_from(first):
  for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    if fd >= first:
      try:
        os.close(fd)
      except OSError:
        pass


def _set_limits(job):
  lim = job["limits"]
  cpu = int(math.ceil(job["per_test_timeout_s"])) + 1
  for res, value in (
      (resource.RLIMIT_AS, lim["address_space_bytes"]),
      (resource.RLIMIT_CPU, cpu),
      (resource.RLIMIT_FSIZE, lim["file_bytes"]),
      (resource.RLIMIT_NOFILE, lim["open_files"]),
      (resource.RLIMIT_NPROC, lim["processes"]),
      (resource.RLIMIT_CORE, 0),
      (resource.RLIMIT_MEMLOCK, 0),
      (resource.RLIMIT_MSGQUEUE, 0),
  ):
    hard = value + 1 if res == resource.RLIMIT_CPU else value  # SIGXCPU first, then SIGKILL
    resource.setrlimit(res, (value, hard))


def _drop_privileges(job):
  if os.getuid() == 0 or job["uid"] != os.getuid():
    os.setgroups([])
    os.setresgid(job["gid"], job["gid"], job["gid"])
    os.setresuid(job["uid"], job["uid"], job["uid"])
  _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
  if os.getresuid() != (job["uid"],) * 3 or os.getresgid() != (job["gid"],) * 3:
    os._exit(125)  # never run the program with any root id left
  supervisor = os.getppid()
  _die_with_parent(supervisor)  # a uid change clears PDEATHSIG, so set it afterwards
  if job["namespaces"]:
    # The uid change made us non-dumpable, which hides /proc/self (and /dev/stdin) from the
    # program. Alone in its pid namespace, nothing outside can ptrace it, so restore that.
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(DUMPABLE)")


def _jsonable(value):
  """Return value as JSON-compatible data (tuples and sets become lists, numpy to python)."""
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (set, frozenset)):
    items = [_jsonable(v) for v in value]
    try:
      return sorted(items)
    except TypeError:
      return items
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if hasattr(value, "tolist"):
    return _jsonable(value.tolist())
  return value


def _run_program(job, test_input):
  """Execute the solution in this (already unprivileged) process; return the exit code."""
  call_mode = job["fn_name"] is not None
  namespace = {
      "__name__": "__solution__" if call_mode else "__main__",
      "__builtins__": builtins,
      "__file__": "solution.py",
  }
  sys.argv = ["solution.py"]
  try:
    if job["import_prelude"]:
      exec(IMPORT_PRELUDE, namespace)
    exec(compile(job["code"], "solution.py", "exec"), namespace)
    if call_mode:
      fn_name = job["fn_name"]
      if "class Solution" in job["code"] and "Solution" in namespace:
        fn = getattr(namespace["Solution"](), fn_name)
      else:
        fn = namespace[fn_name]
      returned = fn(*test_input)
      payload = json.dumps(_jsonable(returned)).encode()
      with open(3, "wb", closefd=False) as out:
        out.write(payload)
    return 0
  except SystemExit as exc:
    if exc.code is None or isinstance(exc.code, int):
      return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1
  except BaseException:
    traceback.print_exc()
    return 1


def _test_child(job, test_input, stdin_fd, out_w, err_w, res_w):
  """Forked per test; never returns."""
  code = 126
  try:
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, 3)
    _close_fds_from(4)
    _set_oom_score_adj(1000)
    for sig in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
      signal.signal(sig, signal.SIG_DFL)  # SIGPIPE stays ignored, as in any Python
    _set_limits(job)
    _drop_privileges(job)
    os.chdir(job["workdir"])
    os.umask(0o077)
    sys.stdin = open(0, closefd=False, encoding="utf-8", errors="replace")
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8")
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
    code = _run_program(job, test_input)
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except BaseException:
        pass
  except BaseException:
    pass
  os._exit(code & 0xFF if isinstance(code, int) else 1)


def _descendants():
  """Pids of all live descendants of this process (one scan of /proc)."""
  children = {}
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat") as f:
          stat = f.read()
      except OSError:
        continue
      fields = stat[stat.rindex(")") + 2 :].split()
      if fields[0] != "Z":  # zombies are only reaped, not signalled
        children.setdefault(int(fields[1]), []).append(int(name))
  found, frontier = set(), [os.getpid()]
  while frontier:
    for kid in children.get(frontier.pop(), ()):
      if kid not in found:
        found.add(kid)
        frontier.append(kid)
  return found


def _signal_descendants(pids, sig):
  """Signal those of `pids` that are still our descendants once pinned by a pidfd, so a pid
  recycled by an unrelated process in between is never hit."""
  pinned = {}
  for pid in pids:
    try:
      pinned[pid] = os.pidfd_open(pid)
    except OSError:
      pass
  current = _descendants()
  for pid, fd in pinned.items():
    try:
      if pid in current:
        signal.pidfd_send_signal(fd, sig)
    except OSError:
      pass
    finally:
      os.close(fd)


def _kill_everyone_else(job):
  """SIGKILL every process of this sandbox except the supervisor itself, and reap them.

  Strict: we are pid 1 of a private pid namespace, so kill(-1) reaches exactly the sandbox.
  rlimits_only: we are a child subreaper, so descendants (daemons included) stay in our
  tree. They are all stopped first, until no new ones appear (a stopped process cannot fork,
  so a fork bomb cannot outrun us), then killed.
  """
  if job["namespaces"]:
    if os.getpid() != 1:  # in the host namespace kill(-1) would hit every process
      raise SetupError("refusing kill(-1) outside a private pid namespace")
    try:
      os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
      pass
  while True:
    if not job["namespaces"]:
      seen = set()
      while True:
        tree = _descendants()
        if tree <= seen:
          break
        _signal_descendants(tree - seen, signal.SIGSTOP)
        seen |= tree
      _signal_descendants(_descendants(), signal.SIGKILL)
    try:
      os.waitpid(-1, 0)
    except ChildProcessError:
      if not _descendants():
        return


def _read_available(fd, buf, cap):
  """Append what `fd` has now to buf (up to cap bytes); return (eof, overflowed)."""
  while True:
    try:
      chunk = os.read(fd, 65536)
    except BlockingIOError:
      return False, False
    if not chunk:
      return True, False
    room = cap - len(buf)
    buf += chunk[: max(room, 0)]
    if len(chunk) > room:
      return False, True


def _run_one_test(job, test_input, deadline):
  stdin_fd = _sealed_memfd(test_input.encode() if job["fn_name"] is None else b"")
  pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, returned value
  sys.stdout.flush()
  start = time.monotonic()
  pid = os.fork()
  if pid == 0:
    _test_child(job, test_input, stdin_fd, pipes[0][1], pipes[1][1], pipes[2][1])
  os.close(stdin_fd)
  for _, w in pipes:
    os.close(w)
  reads = [r for r, _ in pipes]
  for r in reads:
    os.set_blocking(r, False)
  caps = [job["max_stdout_bytes"], job["max_stderr_bytes"], job["max_stdout_bytes"]]
  bufs = [bytearray(), bytearray(), bytearray()]
  pidfd = os.pidfd_open(pid)
  status, exit_code, sig = None, None, None
  open_reads = set(reads)
  while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      status = "timeout"
      break
    ready, _, _ = select.select(list(open_reads) + [pidfd], [], [], remaining)
    overflow = False
    for r in ready:
      if r == pidfd:
        continue
      i = reads.index(r)
      eof, over = _read_available(r, bufs[i], caps[i])
      overflow |= over and i != 1  # stderr is only a diagnostic; truncating it is fine
      if eof:
        open_reads.discard(r)
    if overflow:
      status = "output_limit"
      break
    if pidfd in ready:
      for i, r in enumerate(reads):  # what the program wrote before exiting
        if r in open_reads:
          _, over = _read_available(r, bufs[i], caps[i])
          if over and i != 1:
            status = "output_limit"
      info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # stays a zombie for now
      if info.si_code == os.CLD_EXITED:
        exit_code = info.si_status
        status = status or ("ok" if exit_code == 0 else "runtime_error")
      else:
        sig = info.si_status
        status = status or "signaled"
      break
  wall = time.monotonic() - start
  os.close(pidfd)
  _kill_everyone_else(job)
  for r in reads:
    os.close(r)
  return {
      "event": "test",
      "status": status,
      "exit_code": exit_code,
      "signal": sig,
      "stdout": bufs[0].decode("utf-8", "replace"),
      "stderr": bufs[1].decode("utf-8", "replace"),
      "returned": bufs[2].decode("utf-8", "replace") if job["fn_name"] else None,
      "wall_s": round(wall, 4),
  }


def _serve(job, start):
  _preload(PRELUDE_MODULES + tuple(job["preload"]))
  sys.path[:] = [p for p in sys.path if any(p.startswith(d) for d in job["python_dirs"])]
  _emit({"event": "ready", "pid": os.getpid()})
  budget_end = start + job["budget_s"]
  for index, test_input in enumerate(job["inputs"]):
    deadline = min(time.monotonic() + job["per_test_timeout_s"], budget_end)
    if deadline <= time.monotonic():
      break  # remaining tests count as not run (failed) on the grader's side
    result = _run_one_test(job, test_input, deadline)
    result["index"] = index
    _emit(result)
  _emit({"event": "done"})


def main():
  start = time.monotonic()
  job = json.loads(sys.stdin.read())
  sys.stdin.close()
  try:
    _die_with_parent(job["grader_pid"])
    _join_cgroups(job["cgroup_procs_files"])
    if job["namespaces"]:
      _enter_namespaces(job)
      job["workdir"] = "/tmp"
    else:
      _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
  except (SetupError, OSError) as exc:
    where = traceback.extract_tb(exc.__traceback__)[-1]
    _emit({"event": "setup_error", "message": f"{exc} (at {where.name}:{where.lineno})"})
    os._exit(2)
  _serve(job, start)
  sys.stdout.flush()
  if job["namespaces"]:
    os._exit(0)  # init exiting tears down the namespace and everything still in it


if __name__ == "__main__":
  main()
