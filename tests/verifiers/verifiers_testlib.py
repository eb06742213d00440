"""Shared helpers for the verifier tests (fast sandbox limits, leftover checks)."""

import os

from prime_jax.verifiers.cgroups import controller_base
from prime_jax.verifiers.sandbox import SandboxConfig

SANDBOX_UID = 65534

# Short limits keep the hostile battery fast; the memory bounds stay far below the machine's.
FAST_SANDBOX = SandboxConfig(
    per_test_timeout_s=1.0, memory_bytes=512 << 20, address_space_bytes=512 << 20, setup_grace_s=3.0
)


def processes_of_uid(uid: int) -> list[str]:
  """'pid cmdline' of every live (non-zombie) process whose real uid is `uid`."""
  found = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
      with open(f"/proc/{name}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
      continue
    if int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith("Z"):
      found.append(f"{name} {cmd}")
  return found


def sandbox_leaves() -> list[str]:
  """Sandbox cgroup leaves that currently exist (pids and memory hierarchies)."""
  leaves = []
  for controller in ("pids", "memory"):
    base = controller_base(controller)
    leaves += [
        os.path.join(base, d) for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))
    ]
  return leaves


def leaves_of(pids) -> list[str]:
  """Sandbox cgroup leaves created by any of `pids` (leaf names start with the creator pid)."""
  pids = {str(p) for p in pids}
  return [leaf for leaf in sandbox_leaves() if os.path.basename(leaf).split("-")[0] in pids]
