"""Multi-process runs: the distributed-init decision, rollouts split over processes (simulated
with threads), and the trainer CLI as 2 processes x 4 CPU devices against 1 process x 8.

The 2-process runs talk through JAX's coordination service on a free localhost port and CPU
collectives (gloo). Collectives add up floats in another order than one process's in-memory
all-reduce, so float metrics agree to rounding (rtol 1e-5, atol 1e-6), the rest exactly.
"""

import dataclasses
import os
import re
import shutil
import socket
import threading
import time

import jax
import numpy as np
import pytest
from test_rollout import collect, record, rl_config
from test_train import compile_cache  # noqa: F401 (fixtures)
from test_train import (
    CONFIG_FILE,
    TrainCLI,
    base,
    deterministic,
    is_wall_clock,
)

import prime_jax.rollout as rollout_module
from prime_jax import distributed
from prime_jax.data import PromptIterator
from prime_jax.distributed import ProcessGroup, initialize_kwargs
from prime_jax.metrics_log import read_metrics
from prime_jax.verifiers import grading

# ---------------------------------------------------------------------------- init decision

LAPTOP = dict(environ={"HOME": "/home/me", "PATH": "/usr/bin"}, on_cloud_tpu_vm=False)
SLURM = {
    "SLURM_JOB_ID": "7",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


def test_no_flags_on_a_laptop_stays_single_process():
  assert initialize_kwargs(**LAPTOP) is None
  # A single-task SLURM step or a one-host TPU VM is one process too.
  assert initialize_kwargs(environ=dict(SLURM, SLURM_NTASKS="1"), on_cloud_tpu_vm=False) is None
  assert initialize_kwargs(environ={"TPU_WORKER_HOSTNAMES": "t1v-0"}, on_cloud_tpu_vm=True) is None


def test_no_flags_auto_detects_tpu_pod_slices_slurm_and_open_mpi():
  auto = {}  # jax.distributed.initialize() with no arguments: JAX fills everything in
  assert initialize_kwargs(environ={}, on_cloud_tpu_vm=True) == auto  # GCE: from metadata
  assert (
      initialize_kwargs(environ={"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3"}, on_cloud_tpu_vm=True)
      == auto
  )
  assert (
      initialize_kwargs(
          environ={"TPU_WORKER_HOSTNAMES": "h0", "MEGASCALE_NUM_SLICES": "2"}, on_cloud_tpu_vm=True
      )
      == auto
  )
  # TPU_* variables without TPU chips (say, copied into a laptop's shell) do nothing.
  assert initialize_kwargs(environ={"TPU_WORKER_HOSTNAMES": "h0,h1"}, on_cloud_tpu_vm=False) is None
  assert initialize_kwargs(environ=dict(SLURM, SLURM_NTASKS="2"), on_cloud_tpu_vm=False) == auto
  assert (
      initialize_kwargs(
          environ={"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"},
          on_cloud_tpu_vm=False,
      )
      == auto
  )


def test_explicit_flags_are_passed_through_and_checked():
  flags = dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)
  assert initialize_kwargs(**flags, **LAPTOP) == flags
  # --num_processes=1 forces one process, even on a TPU pod slice.
  assert initialize_kwargs(num_processes=1, environ={}, on_cloud_tpu_vm=True) is None
  # On a TPU VM, JAX fills in what is left out.
  assert initialize_kwargs(process_id=3, environ={}, on_cloud_tpu_vm=True) == {"process_id": 3}
  with pytest.raises(ValueError, match="needs --num_processes, --process_id as well"):
    initialize_kwargs(coordinator_address="localhost:1", **LAPTOP)
  with pytest.raises(ValueError, match=r"--process_id=2 is not in \[0, --num_processes=2\)"):
    initialize_kwargs(coordinator_address="h:1", num_processes=2, process_id=2, **LAPTOP)
  with pytest.raises(ValueError, match="--num_processes must be >= 1"):
    initialize_kwargs(coordinator_address="h:1", num_processes=0, process_id=0, **LAPTOP)


def test_initialize_on_this_machine_connects_nowhere(monkeypatch):
  for name in list(os.environ):
    if name.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_")):
      monkeypatch.delenv(name)
  monkeypatch.setattr(
      jax.distributed,
      "initialize",
      lambda **kwargs: pytest.fail(f"jax.distributed.initialize({kwargs})"),
  )
  if distributed.on_cloud_tpu_vm():
    pytest.skip("this machine is a Cloud TPU VM")
  assert distributed.initialize() is False
  assert distributed.initialize(num_processes=1) is False


def test_shares_are_contiguous_blocks_in_process_order():
  for n in range(7):
    for count in (1, 2, 3):
      blocks = [list(ProcessGroup(p, count).share(n)) for p in range(count)]
      assert sum(blocks, []) == list(range(n))
      assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


# ---------------------------------------------------------------------------- rollouts


class ThreadExchange:
  """All-gather between threads standing in for processes."""

  def __init__(self, count):
    self.slots = [None] * count
    self.barrier = threading.Barrier(count, timeout=60)

  def __call__(self, index, data):
    self.slots[index] = data
    self.barrier.wait()
    out = list(self.slots)
    self.barrier.wait()  # nobody overwrites a slot before everyone has read it
    return out


@dataclasses.dataclass(frozen=True)
class ThreadGroup(ProcessGroup):
  """A ProcessGroup whose byte exchange goes through a ThreadExchange instead of JAX: the
  rest (shares, JSON and array (de)serialisation) is the real code."""

  exchange: ThreadExchange = None

  def _allgather_bytes(self, data):
    return self.exchange(self.index, data)


# Groups with mean accuracy 0, 1/4, ..., 1 (filter 0.25..0.75 keeps k = 1, 2, 3), two prompts
# too long for max_prompt_len, one whose responses are truncated.
KS = [2, 0, 3, 4, 1, 2, 0, 1, 3, 2, 4, 1, 2, 3, 0, 2, 1, 3]
LONG = {4, 11}


def records():
  return [record(i, k, pad=30 if i in LONG else 0, truncated=i == 7) for i, k in enumerate(KS)]


def steps(rl, processes, num_steps=4):
  """`num_steps` consecutive collect_rollouts (buffer carried over) on one "process"."""
  recs = records()
  iterator = PromptIterator(recs, seed=1, shuffle=True)
  buffer, out = [], []
  for step in range(num_steps):
    batch, buffer, metrics, _ = collect(
        recs, rl, buffer=buffer, iterator=iterator, key=jax.random.key(step), processes=processes
    )
    metrics = {k: v for k, v in metrics.items() if not is_wall_clock(k)}
    out.append((batch, list(buffer), metrics, iterator.state()))
  return out


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("want,batch_prompts", [(5, 3), (1, 2), (2, 2)])
def test_rollouts_split_over_processes_equal_one_process(monkeypatch, count, want, batch_prompts):
  rl = rl_config(batch_prompts=batch_prompts, sample_batch_prompts=want, max_empty_rounds=20)
  graded = {}  # thread name -> the record ids it graded
  lock = threading.Lock()  # one grader pool, used by one thread at a time
  real_grade = rollout_module.grade_responses

  def grade(records, texts, n):
    with lock:
      graded.setdefault(threading.current_thread().name, []).extend(r.id for r in records)
      return real_grade(records, texts, n)

  monkeypatch.setattr(rollout_module, "grade_responses", grade)
  alone = steps(rl, ProcessGroup())
  alone_graded = graded.pop(threading.current_thread().name)
  assert sum(m["rollout/prompts_dropped_too_long"] for _, _, m, _ in alone) > 0

  exchange, results, errors = ThreadExchange(count), [None] * count, []

  def run(index):
    try:
      results[index] = steps(rl, ThreadGroup(index, count, exchange))
    except BaseException as e:  # noqa: BLE001 - reported below
      errors.append(e)
      exchange.barrier.abort()

  threads = [threading.Thread(target=run, args=(p,), name=f"process{p}") for p in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  for result in results:
    for (batch, buffer, metrics, state), (batch1, buffer1, metrics1, state1) in zip(result, alone):
      assert batch.record_indices == batch1.record_indices and batch.texts == batch1.texts
      for name, value in batch.update_inputs().items():
        np.testing.assert_array_equal(value, getattr(batch1, name), err_msg=name)
      assert (buffer, metrics, state) == (buffer1, metrics1, state1)
  # Each process graded only its share: together every graded row, once.
  per_process = [graded[f"process{p}"] for p in range(count)]
  assert sorted(sum(per_process, [])) == sorted(alone_graded)
  if want >= count:  # (with fewer prompts per round than processes, some get none)
    assert all(0 < len(ids) < len(alone_graded) for ids in per_process)


def test_merged_grader_metrics_add_counts_and_recompute_means():
  part = lambda scores, abilities, items, wall: dict(
      scores=scores,
      abilities=abilities,
      metrics={
          "verifier/math/items": items,
          "verifier/math/ok": items,
          "verifier/math/wall_s": wall,
          "verifier/math/items_per_s": items / wall,
          "verifier/math/max_item_s": wall / 2,
          "verifier/math/mean_score": float(np.mean(scores)),
      },
  )
  scores, merged = grading.merge_grader_metrics(
      [part([1.0, 0.0, 1.0], ["math"] * 3, 3, 2.0), part([0.0], ["math"], 1, 4.0)]
  )
  np.testing.assert_array_equal(scores, [1, 0, 1, 0])
  assert merged == {
      "verifier/math/items": 4,
      "verifier/math/ok": 4,
      "verifier/math/wall_s": 4.0,
      "verifier/math/items_per_s": 1.0,
      "verifier/math/max_item_s": 2.0,
      "verifier/math/mean_score": 0.5,
  }


# ---------------------------------------------------------------------------- the trainer

PROCESSES, LOCAL_DEVICES = 2, 4
MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=4"]  # fsdp inside a host, data across


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def cpu_env(devices):
  return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def start_processes(cli, workdir):
  port = free_port()
  return [
      cli.start(
          workdir,
          env=cpu_env(LOCAL_DEVICES),
          args=MESH
          + [
              f"--coordinator_address=localhost:{port}",
              f"--num_processes={PROCESSES}",
              f"--process_id={p}",
          ],
      )
      for p in range(PROCESSES)
  ]


def finish_all(cli, processes, timeout=600):
  """Waits for every process; the first failure kills the rest (they would wait for it)."""
  deadline = time.monotonic() + timeout
  while any(p.poll() is None for p in processes):
    failed = [p for p in processes if p.poll() not in (None, 0)]
    if failed or time.monotonic() > deadline:
      cli.kill_all()
      break
    time.sleep(0.2)
  for p in processes:
    assert p.returncode == 0, f"exit {p.returncode}:\n" + cli.output(p)[-4000:]
  return [cli.output(p) for p in processes]


def assert_close_metrics(got, want):
  """Same steps and keys; equal values, floats to rounding (see the module docstring)."""
  got, want = deterministic(got), deterministic(want)
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want):
    assert g.keys() == w.keys(), (g["step"], g.keys() ^ w.keys())
    differ = {
        k: (g[k], w[k])
        for k in g
        if not (
            g[k] == w[k]
            or (
                isinstance(g[k], float)
                and isinstance(w[k], float)
                and np.isclose(g[k], w[k], rtol=1e-5, atol=1e-6)
            )
        )
    }
    assert not differ, f"step {g['step']}: {differ}"


@pytest.fixture(scope="module")
def cli(base, compile_cache, tmp_path_factory):
  directory = tmp_path_factory.mktemp("multihost")
  config_file = directory / "tiny_prime.py"
  config_file.write_text(
      CONFIG_FILE.format(overrides={k: v for k, v in base.items() if k != "total_steps"})
  )
  cli = TrainCLI(str(config_file), compile_cache, str(directory))
  yield cli
  cli.kill_all()


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory):
  """(2-process workdir, its processes' outputs, 1-process workdir): the two runs of the same
  config and mesh, started together."""
  two, one = tmp_path_factory.mktemp("two_processes"), tmp_path_factory.mktemp("one_process")
  processes = start_processes(cli, str(two))
  single = cli.start(str(one), env=cpu_env(PROCESSES * LOCAL_DEVICES), args=MESH)
  outputs = finish_all(cli, processes + [single])
  return two, outputs[:PROCESSES], one


@pytest.mark.slow
def test_two_processes_reproduce_one_process_on_eight_devices(runs):
  two, outputs, one = runs
  rows = read_metrics(str(two))
  assert [r["step"] for r in rows] == [0, 1, 2, 3]
  assert all(r["rollout/rounds"] == 1 and r["rollout/refill_buffer"] == 2 for r in rows[1:])
  assert_close_metrics(rows, read_metrics(str(one)))
  assert (two / "summary.md").read_text() == (one / "summary.md").read_text()


@pytest.mark.slow
def test_only_process_0_writes_metrics_logs_and_exports(runs):
  two, (first, second), _ = runs
  assert len(os.listdir(two / "tensorboard")) == 1  # one events file: process 0's
  assert "| held-out split |" in first and "| held-out split |" not in second
  assert "RL: " in first and "RL: " not in second  # the progress bar
  assert re.search(r"^eval at step 3: ", first, re.M)  # one line per eval, process 0 only
  assert not re.search(r"^eval at step", second, re.M)
  # No library INFO flood on either process without --verbosity (absl INFO lines start I<date>).
  assert not re.search(r"^I\d{4} ", first, re.M) and not re.search(r"^I\d{4} ", second, re.M)
  assert os.path.isdir(two / "export" / "policy") and os.path.isdir(two / "export" / "prm")


@pytest.mark.slow
def test_two_processes_resume_from_a_checkpoint(runs, cli, tmp_path):
  two, _, _ = runs
  workdir = tmp_path / "resumed"
  shutil.copytree(two, workdir)
  shutil.rmtree(workdir / "checkpoints" / "3")  # as if both died after step 2's checkpoint
  shutil.rmtree(workdir / "export")
  (workdir / "summary.md").unlink()
  first, second = finish_all(cli, start_processes(cli, str(workdir)))
  assert re.search(r"resumed from step 2\b", first), first[-3000:]
  assert "resumed from step" not in second  # process 1 logs warnings only
  assert deterministic(read_metrics(str(workdir))) == deterministic(read_metrics(str(two)))
  assert (workdir / "summary.md").read_text() == (two / "summary.md").read_text()
