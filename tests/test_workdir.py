"""A gs:// --workdir: every file the trainer writes goes through etils.epath.

There is no GCS here: `fake_gcs.gcs` puts an in-memory filesystem with GCS's limits (no append)
behind epath's gs:// paths, so the code under test takes the same path as on a real bucket, minus
gcsfs itself. Each test also checks that nothing landed in a local folder called `gs:`.
"""

from __future__ import annotations

import json
import os
import types

import jax
import numpy as np
import pytest
from etils import epath

import prime_jax.train as train_module
from fake_gcs import gcs  # noqa: F401 (fixture)
from prime_jax import configs, paths, run_setup, sft
from prime_jax.checkpointing import Checkpointer
from prime_jax.metrics_log import METRICS_FILE, MetricsLog, read_metrics
from prime_jax.models import init_params, load_hf_checkpoint

RUN = "gs://bucket/prime-jax/run"


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path, monkeypatch):
  """Runs each test in an empty directory, and checks no local `gs:` folder appeared there."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield
  assert os.listdir(cwd) == []


def test_is_remote():
  assert paths.is_remote("gs://b/run") and paths.is_remote(epath.Path("gs://b/run"))
  assert not paths.is_remote("workdir/run") and not paths.is_remote("/abs/gs:/x")


def test_copy_tree_both_ways_with_the_marker_file_last(gcs, tmp_path):
  src = tmp_path / "src"
  (src / "sub").mkdir(parents=True)
  for name in ("z_info.json", "b.bin", "sub/c.txt", "a.txt"):
    (src / name).write_text(name)
  paths.copy_tree(src, "gs://bucket/up", last=("a.txt",))
  assert list(gcs.store) == [
      f"bucket/up/{n}" for n in ("b.bin", "sub/c.txt", "z_info.json", "a.txt")
  ]  # in the order written
  paths.copy_tree("gs://bucket/up", tmp_path / "down")
  assert sorted(
      str(p.relative_to(tmp_path / "down")) for p in (tmp_path / "down").rglob("*") if p.is_file()
  ) == ["a.txt", "b.bin", "sub/c.txt", "z_info.json"]
  assert (tmp_path / "down" / "sub" / "c.txt").read_text() == "sub/c.txt"


def _log_some(log: MetricsLog, steps) -> None:
  for step in steps:
    log.write(step, {"loss": step / 2, "bad": float("nan"), "name": "x"})


@pytest.mark.parametrize("tensorboard", [False, True])
def test_metrics_log_on_gcs_writes_truncates_and_reopens_like_a_local_one(
    gcs, tmp_path, tensorboard
):
  local = str(tmp_path / "local")
  os.makedirs(local)
  for workdir in (RUN, local):
    log = MetricsLog(workdir, tensorboard=tensorboard, upload_every_s=3600)
    log.remove()  # no file yet: nothing happens
    _log_some(log, range(4))
    log.close()
    log = MetricsLog(workdir, tensorboard=tensorboard, upload_every_s=3600)  # a resumed run
    log.truncate_after(2)
    _log_some(log, [3, 4])
    log.close()
  assert (
      read_metrics(RUN)
      == read_metrics(local)
      == [{"step": s, "bad": None, "loss": s / 2, "name": "x"} for s in (0, 1, 2, 3, 4)]
  )
  assert (epath.Path(RUN) / METRICS_FILE).read_text() == (
      epath.Path(local) / METRICS_FILE
  ).read_text()
  events = sorted(f for f in gcs.files() if "/tensorboard/" in f)
  if tensorboard:  # close() copies the event files up (one per writer and second)
    assert events and all("/tensorboard/events.out.tfevents." in f for f in events)
    assert os.listdir(os.path.join(local, "tensorboard"))
  else:
    assert not events and not os.path.exists(os.path.join(local, "tensorboard"))
  log = MetricsLog(RUN, tensorboard=False)
  log.remove()
  assert not (epath.Path(RUN) / METRICS_FILE).exists()


def test_tensorboard_events_are_copied_up_at_most_every_upload_every_s(gcs):
  def events():
    return [f for f in gcs.files() if "/tensorboard/" in f]

  log = MetricsLog(RUN, upload_every_s=3600)
  _log_some(log, range(3))
  assert not events()  # not yet
  log._upload_every_s = 0.0
  _log_some(log, [3])
  (uploaded,) = events()
  size = len(gcs.cat_file(uploaded))
  log.close()
  assert events() == [uploaded] and len(gcs.cat_file(uploaded)) >= size


def test_a_disabled_log_writes_nothing(gcs):
  log = MetricsLog(RUN, enabled=False)
  _log_some(log, range(2))
  log.truncate_after(0)
  log.close()
  assert gcs.files() == []


def test_checkpointer_keeps_a_gcs_path_and_makes_a_local_one_absolute(gcs, monkeypatch):
  from orbax.checkpoint._src.path import gcs_utils
  # orbax asks the bucket (google-cloud-storage) whether it has a hierarchical namespace
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  checkpointer = Checkpointer(f"{RUN}/checkpoints")
  assert os.fspath(checkpointer.manager.directory) == f"{RUN}/checkpoints"
  assert checkpointer.latest_step() is None
  checkpointer.close()
  checkpointer = Checkpointer("checkpoints")
  assert os.fspath(checkpointer.manager.directory) == os.path.abspath("checkpoints")
  checkpointer.close()
  os.rmdir("checkpoints")


def tiny_config(**overrides):
  config = configs.arithmetic_config()
  config.update_from_flattened_dict(
      {
          "policy.init.hidden_size": 16,
          "policy.init.num_layers": 1,
          "policy.init.num_heads": 2,
          "policy.init.num_kv_heads": 1,
          "policy.init.head_dim": 8,
          "policy.init.intermediate_size": 32,
          "task.num_train": 20,
          "task.num_eval": 4,
          **overrides,
      }
  )
  return config


def test_export_to_gcs_writes_the_same_files_as_a_local_export(gcs, tmp_path):
  model_config = sft.model_config_for(tiny_config(), vocab_size=40)
  shapes = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))  # no compile
  params = jax.tree_util.tree_map(
      lambda s: np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype), shapes
  )
  checkpoint_dir = tmp_path / "sft"
  checkpoint_dir.mkdir()
  (checkpoint_dir / "tokenizer.model").write_bytes(b"\x00tokenizer")
  state = types.SimpleNamespace(params=params)
  local = tmp_path / "local"
  for workdir in (RUN, str(local)):
    run = types.SimpleNamespace(
        workdir=workdir, model_config=model_config, checkpoint_dir=str(checkpoint_dir)
    )
    run_setup.export(run, state, state)
  for name in ("policy", "prm"):
    local_files = sorted(p.name for p in (local / "export" / name).iterdir())
    assert "config.json" in local_files and "tokenizer.model" in local_files
    remote = epath.Path(RUN) / "export" / name
    assert sorted(p.name for p in remote.iterdir()) == local_files
    for f in local_files:
      assert (remote / f).read_bytes() == (local / "export" / name / f).read_bytes()
    down = tmp_path / "down" / name
    paths.copy_tree(remote, down)
    config, loaded = load_hf_checkpoint(str(down))
    assert config == model_config
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def fake_run_sft(calls):
  """run_sft that 'trains' by writing a few files, or reuses a finished directory."""

  def run_sft(config, workdir):
    out = sft.sft_checkpoint_dir(config, workdir)
    assert not paths.is_remote(out)
    if sft.is_finished(out):
      calls.append(("reused", str(out)))
      return out
    calls.append(("trained", str(out)))
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "tokenizer.model").write_bytes(b"tok")
    (out / sft.SFT_INFO).write_text(json.dumps({"config": {}}))
    return out

  return run_sft


@pytest.mark.parametrize("where", ["workdir", "sft.checkpoint"])
def test_sft_for_a_gcs_workdir_is_trained_once_copied_up_and_later_copied_down(
    gcs, monkeypatch, where
):
  calls = []
  monkeypatch.setattr(run_setup, "run_sft", fake_run_sft(calls))
  if where == "workdir":
    config, workdir, remote = tiny_config(), RUN, f"{RUN}/sft"
  else:
    remote = "gs://bucket/shared/sft"
    config, workdir = tiny_config(**{"sft.checkpoint": remote}), "local_workdir"
  first = run_setup.initial_checkpoint(config, workdir)
  assert calls == [("trained", first)] and not paths.is_remote(first)
  assert list(gcs.store) == [
      f"{remote[5:]}/{n}" for n in ("config.json", "tokenizer.model", sft.SFT_INFO)
  ]  # the marker last
  assert config.sft.checkpoint == ("" if where == "workdir" else remote)  # left as it was
  second = run_setup.initial_checkpoint(config, workdir)  # a resumed run on a new VM
  assert calls[1] == ("reused", second) and second != first
  assert open(os.path.join(second, "tokenizer.model"), "rb").read() == b"tok"


def test_built_in_task_data_for_a_gcs_workdir_is_written_locally(gcs, tmp_path):
  config = tiny_config()
  train, eval_records = run_setup.task_data(config, RUN)
  assert gcs.files() == []  # tfds files never go to the bucket
  local_train, local_eval = run_setup.task_data(config, str(tmp_path / "local"))
  assert list(train) == list(local_train) and eval_records == local_eval
  with pytest.raises(ValueError, match="prepared data is read from a local directory"):
    run_setup.task_data(tiny_config(**{"task.data_dir": "gs://bucket/data"}), RUN)


def test_a_gcs_workdir_without_gcsfs_fails_at_once_naming_it():
  import importlib.util

  for module in ("gcsfs", "tensorflow"):  # with TensorFlow, epath would use its gfile instead
    if importlib.util.find_spec(module):
      pytest.skip(f"{module} is installed")
  with pytest.raises(ImportError, match="install gcsfs"):
    train_module.train(tiny_config(), RUN)  # the first thing setup does is make the workdir
