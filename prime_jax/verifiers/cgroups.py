"""Per-sandbox cgroups (v1 `pids` + `memory` controllers): the hard caps root cannot bypass.

`RLIMIT_NPROC` does not bind root and `RLIMIT_AS` is per process, so a fork bomb or a swarm of
memory-hungry children is only bounded by a cgroup: `pids.max` caps the task count (threads
included) of the whole sandbox, `memory.limit_in_bytes` its total memory (tmpfs pages included).
Each sandbox gets its own leaf, nested under the grader's own cgroup, removed afterwards.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
GROUP_DIR = "prime_jax_sandbox"  # parent of every sandbox leaf, under the grader's own cgroup


class CgroupUnavailableError(RuntimeError):
  """The pids/memory cgroup controllers cannot be used here."""


def _own_cgroup(controller: str) -> str:
  """This process's cgroup path for a v1 controller, e.g. '/' or '/user.slice'."""
  with open("/proc/self/cgroup") as f:
    for line in f:
      _, controllers, path = line.rstrip("\n").split(":", 2)
      if controller in controllers.split(","):
        return path
  raise CgroupUnavailableError(f"no cgroup v1 '{controller}' hierarchy in /proc/self/cgroup")


def controller_base(controller: str) -> str:
  """Directory holding this process's sandbox leaves for `controller` (created on demand)."""
  mount = os.path.join(CGROUP_ROOT, controller)
  if not os.path.isfile(os.path.join(mount, "cgroup.procs")):
    hint = (
        " (this host uses the unified cgroup v2 hierarchy, which the sandbox does not "
        "support yet)"
        if os.path.isfile(os.path.join(CGROUP_ROOT, "cgroup.controllers"))
        else ""
    )
    raise CgroupUnavailableError(
        f"cgroup v1 controller '{controller}' is not mounted at " f"{mount}{hint}"
    )
  base = os.path.join(mount, _own_cgroup(controller).lstrip("/"), GROUP_DIR)
  try:
    os.makedirs(base, exist_ok=True)
  except OSError as exc:
    raise CgroupUnavailableError(f"cannot create {base}: {exc.strerror}") from exc
  return base


def _write(path: str, value: int | str) -> None:
  with open(path, "w") as f:
    f.write(str(value))


def _read_pids(path: str) -> list[int]:
  try:
    with open(path) as f:
      return [int(x) for x in f.read().split()]
  except FileNotFoundError:
    return []


@dataclass
class SandboxCgroup:
  """One sandbox's leaf in the pids and memory hierarchies."""

  pids_dir: str
  memory_dir: str

  @classmethod
  def create(cls, max_tasks: int, memory_bytes: int) -> SandboxCgroup:
    """Make the leaves and set their limits; named `<grader pid>-<random>` (see sweep_stale)."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    pids_dir = os.path.join(controller_base("pids"), name)
    memory_dir = os.path.join(controller_base("memory"), name)
    group = cls(pids_dir, memory_dir)
    try:
      os.mkdir(pids_dir)
      _write(os.path.join(pids_dir, "pids.max"), max_tasks)
      os.mkdir(memory_dir)
      _write(os.path.join(memory_dir, "memory.limit_in_bytes"), memory_bytes)
      memsw = os.path.join(memory_dir, "memory.memsw.limit_in_bytes")
      if os.path.exists(memsw):  # no swapping around the limit either
        _write(memsw, memory_bytes)
    except OSError as exc:
      group.remove()
      raise CgroupUnavailableError(f"cannot set up sandbox cgroup: {exc}") from exc
    return group

  @property
  def procs_files(self) -> list[str]:
    """Files a process writes its pid into to join this sandbox's cgroups."""
    return [
        os.path.join(self.pids_dir, "cgroup.procs"),
        os.path.join(self.memory_dir, "cgroup.procs"),
    ]

  def pids(self) -> list[int]:
    return _read_pids(os.path.join(self.pids_dir, "cgroup.procs"))

  def kill_all(self, timeout_s: float = 5.0) -> bool:
    """SIGKILL every process in the sandbox until none is left; True when empty.

    Each pid is pinned with a pidfd and checked to still be in this cgroup before it is
    signalled, so a pid recycled by an unrelated process is never hit.
    """
    deadline = time.monotonic() + timeout_s
    while True:
      pids = self.pids()
      if not pids:
        return True
      if time.monotonic() > deadline:
        return False
      for pid in pids:
        _kill_if_member(pid, self.pids_dir)
      time.sleep(0.005)

  def remove(self) -> None:
    """Remove both leaves (they must be empty; call `kill_all` first)."""
    for d in (self.pids_dir, self.memory_dir):
      for _ in range(100):  # a just-killed task may take a moment to leave the cgroup
        try:
          os.rmdir(d)
          break
        except FileNotFoundError:
          break
        except OSError:
          time.sleep(0.01)

  def oom_kills(self) -> int:
    """Processes the kernel killed for hitting this sandbox's memory limit."""
    try:
      with open(os.path.join(self.memory_dir, "memory.oom_control")) as f:
        fields = dict(line.split() for line in f if line.strip())
      return int(fields.get("oom_kill", 0))
    except (OSError, ValueError):
      return 0


def _kill_if_member(pid: int, pids_dir: str) -> None:
  try:
    pidfd = os.pidfd_open(pid)
  except ProcessLookupError:
    return
  try:
    with open(f"/proc/{pid}/cgroup") as f:
      relative = pids_dir[len(os.path.join(CGROUP_ROOT, "pids")) :]
      member = any(line.rstrip("\n").split(":", 2)[2] == relative for line in f if ":pids:" in line)
    if member:
      signal.pidfd_send_signal(pidfd, signal.SIGKILL)
  except (ProcessLookupError, FileNotFoundError):
    pass
  finally:
    os.close(pidfd)


def sweep_stale() -> int:
  """Kill and remove sandbox leaves left by grader processes that no longer exist.

  A grader killed mid-run (e.g. a hung worker replaced by the pool) cannot clean up after
  itself; its leaves are recognised by the dead pid in their name. Returns how many were removed.
  """
  removed = 0
  try:
    pids_base, memory_base = controller_base("pids"), controller_base("memory")
  except CgroupUnavailableError:
    return 0
  for name in sorted(set(os.listdir(pids_base)) | set(os.listdir(memory_base))):
    if not os.path.isdir(os.path.join(pids_base, name)) and not os.path.isdir(
        os.path.join(memory_base, name)
    ):
      continue
    owner = name.split("-", 1)[0]
    if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
      continue
    group = SandboxCgroup(os.path.join(pids_base, name), os.path.join(memory_base, name))
    group.kill_all()
    group.remove()
    removed += 1
  return removed
