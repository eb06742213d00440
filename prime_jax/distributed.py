"""Multi-process runs: when to call `jax.distributed.initialize`, and the few host-side exchanges
the trainer needs between processes.

One process per host (or per accelerator group) runs the same program (JAX's multi-controller
model). `initialize` decides from the command-line flags and the environment:

  * `--coordinator_address`, `--num_processes`, `--process_id`: passed to
    `jax.distributed.initialize` (on a TPU VM, SLURM or Open MPI, JAX fills in the ones left out);
    `--num_processes=1` alone forces a single-process run;
  * none given: initialise with JAX's own auto-detection only where it can find the other
    processes without being told: a Cloud TPU VM (the slice's workers come from the TPU metadata;
    a VM whose `TPU_WORKER_HOSTNAMES` names one host stays single-process), a SLURM step with
    more than one task, an Open MPI job with more than one rank;
  * otherwise (a laptop, one GPU box) nothing: a single process, which never connects anywhere.
With several processes on CPUs, cross-process collectives go through gloo.

`ProcessGroup` is how host code exchanges small values: `share(n)` is this process's contiguous
block of n items, `allgather(obj)` a JSON value from every process, `allgather_rows(a)` the
concatenation of every process's rows. With one process each is the identity, without a
collective. `to_host` fetches a (possibly multi-process) `jax.Array` as numpy on every process.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

_SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)  # what JAX's SlurmCluster needs to detect a SLURM step
_TPU_HOST_LISTS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
# How long the other processes wait at a barrier for process 0 (e.g. while it trains the SFT
# model); a process that dies is noticed sooner, by the coordination service's heartbeats.
LONG_WAIT_S = 24 * 3600


def _int(environ: Mapping[str, str], name: str, default: int = 1) -> int:
  try:
    return int(environ.get(name, default))
  except ValueError:
    return default


def initialize_kwargs(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    environ: Mapping[str, str],
    on_cloud_tpu_vm: bool,
) -> Optional[dict]:
  """The `jax.distributed.initialize` arguments for these flags in this environment, or None
  for a single-process run (see the module docstring). Pure: reads nothing but its arguments.

  Raises ValueError for flags that cannot start a multi-process run.
  """
  given = {
      k: v
      for k, v in dict(
          coordinator_address=coordinator_address,
          num_processes=num_processes,
          process_id=process_id,
      ).items()
      if v is not None
  }
  slurm = all(v in environ for v in _SLURM_VARS) and _int(environ, "SLURM_NTASKS") > 1
  ompi = "OMPI_MCA_orte_hnp_uri" in environ and _int(environ, "OMPI_COMM_WORLD_SIZE") > 1
  if given:
    if num_processes is not None and num_processes < 1:
      raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if num_processes == 1 and coordinator_address is None:
      if process_id not in (None, 0):
        raise ValueError(f"--process_id={process_id} with --num_processes=1")
      return None  # an explicit single-process run, whatever the environment
    missing = [
        f"--{k}" for k in ("coordinator_address", "num_processes", "process_id") if k not in given
    ]
    if missing and not (on_cloud_tpu_vm or slurm or ompi):
      raise ValueError(
          f"a multi-process run needs {', '.join(missing)} as well (given: "
          + ", ".join(f"--{k}={v}" for k, v in given.items())
          + "); JAX can fill them in only on a Cloud TPU VM, SLURM or "
          "Open MPI"
      )
    if (
        process_id is not None
        and num_processes is not None
        and not (0 <= process_id < num_processes)
    ):
      raise ValueError(
          f"--process_id={process_id} is not in [0, --num_processes=" f"{num_processes})"
      )
    return given
  if on_cloud_tpu_vm:
    hosts = next((environ[v] for v in _TPU_HOST_LISTS if environ.get(v)), None)
    single_host = hosts is not None and len(hosts.split(",")) == 1
    if not (single_host and _int(environ, "MEGASCALE_NUM_SLICES") <= 1):
      return {}
  if slurm or ompi:
    return {}
  return None


def on_cloud_tpu_vm() -> bool:
  """JAX's own finding, made at `import jax` from the PCI devices (TPU chips) and libtpu."""
  try:
    from jax._src import cloud_tpu_init
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> bool:
  """Starts JAX's distributed runtime when `initialize_kwargs` says so (call it before any
  other JAX use); returns whether it did. On processes other than 0, absl logs only warnings
  and above."""
  kwargs = initialize_kwargs(
      coordinator_address,
      num_processes,
      process_id,
      environ=os.environ,
      on_cloud_tpu_vm=on_cloud_tpu_vm(),
  )
  if kwargs is None:
    return False
  from jax._src import distributed as jax_distributed

  if jax_distributed.global_state.client is None:  # else the caller already initialised it
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
      # Cross-process collectives of the CPU backend (no effect on TPU / GPU devices).
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
  if jax.process_index() != 0:
    from absl import logging

    logging.set_verbosity(logging.WARNING)
  return True


def is_primary() -> bool:
  """Whether this is process 0, the one that writes metrics, summaries and exports."""
  return jax.process_index() == 0


_barriers = itertools.count()


def barrier(name: str, timeout_s: float = LONG_WAIT_S) -> None:
  """Blocks until every process reached `barrier(name)`; no-op with one process. Processes
  must pass their barriers in the same order (each gets a fresh key from a counter)."""
  if jax.process_count() == 1:
    return
  name = f"{name}:{next(_barriers)}"
  from jax._src import distributed as jax_distributed  # the coordination-service client

  client = jax_distributed.global_state.client
  if client is None:  # a multi-process backend started without jax.distributed
    multihost_utils.sync_global_devices(name)
  else:
    client.wait_at_barrier(f"prime_jax:{name}", int(timeout_s * 1000))


def to_host(x) -> np.ndarray:
  """`x` as a numpy array on this process. A `jax.Array` spread over several processes is
  gathered (a collective: every process must call this for the same arrays, in order)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def tree_to_host(tree):
  return jax.tree_util.tree_map(to_host, tree)


def host_to_global(tree, shardings):
  """Global `jax.Array`s of host numpy arrays that every process holds in full: each process
  places only the shards its own devices hold (`shardings` is one sharding or a tree)."""
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree_util.tree_map(host_to_global, tree, shardings)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_callback(np.shape(x), shardings, lambda i, x=x: x[i]), tree
  )


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
  """This process's place among the run's processes, and host-side exchanges between them.

  The exchanges are collectives: every process calls the same ones in the same order.
  """

  index: int = 0
  count: int = 1

  def share(self, n: int) -> range:
    """This process's contiguous block of `n` items (blocks in process order, sizes within
    one of each other; a process may get none)."""
    return range(self.index * n // self.count, (self.index + 1) * n // self.count)

  def allgather(self, obj: Any) -> list:
    """Every process's JSON-serialisable `obj`, in process order."""
    if self.count == 1:
      return [obj]
    return [json.loads(b) for b in self._allgather_bytes(json.dumps(obj).encode())]

  def allgather_rows(self, local: np.ndarray) -> np.ndarray:
    """The concatenation (axis 0, in process order) of every process's `local` rows; rows
    may differ in number, the other dimensions and the dtype must not."""
    if self.count == 1:
      return np.asarray(local)
    parts = []
    for data in self._allgather_bytes(_npy_bytes(local)):
      parts.append(np.load(io.BytesIO(data), allow_pickle=False))
    return np.concatenate(parts)

  def _allgather_bytes(self, data: bytes) -> list[bytes]:
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32)))
    sizes = sizes.reshape(self.count)
    # Padded to a power of two: each new shape compiles another small gather program.
    padded = np.zeros(max(256, 1 << (int(sizes.max()) - 1).bit_length()), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.process_allgather(padded)).reshape(self.count, -1)
    return [out[p, : sizes[p]].tobytes() for p in range(self.count)]


def _npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  return buffer.getvalue()


def process_group() -> ProcessGroup:
  """The group of this run's JAX processes."""
  return ProcessGroup(jax.process_index(), jax.process_count())
