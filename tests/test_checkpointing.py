"""Orbax checkpoints of sharded TrainStates: saved under one mesh, restored onto another."""

from multidevice import run_with_devices

_SAVE_RESTORE = """
import jax, numpy as np
from prime_jax.algo.step_placement import update_step_shardings
from prime_jax.checkpointing import Checkpointer
from prime_jax.sharding import make_mesh
from test_update_step import MODEL, make_config, make_states

assert jax.device_count() == 8
config = make_config()
policy, prm, _ = make_states(config)
policy = policy.replace(step=policy.step + 3)
expected = jax.device_get((policy, prm))
save_mesh, restore_mesh = make_mesh({"fsdp": 8}), make_mesh({"data": 2, "tensor": 4})
saved = update_step_shardings(config, save_mesh, MODEL)
policy, prm = jax.device_put((policy, prm), (saved["policy"], saved["prm"]))
q = policy.params["layers"]["self_attn"]["q_proj"]["kernel"]
assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None, None), q.sharding

checkpointer = Checkpointer(DIRECTORY, async_save=True)
checkpointer.save(5, policy, prm, {"note": "fsdp=8"})
checkpointer.wait()
checkpointer.close()

target = update_step_shardings(config, restore_mesh, MODEL)
abstract = lambda state, shardings: jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
checkpointer = Checkpointer(DIRECTORY)
assert checkpointer.latest_step() == 5
got_policy, got_prm, run_state = checkpointer.restore(
    5, abstract(expected[0], target["policy"]), abstract(expected[1], target["prm"]))
checkpointer.close()
assert run_state == {"note": "fsdp=8"}
count = 0
for got, want, shardings in ((got_policy, expected[0], target["policy"]),
                             (got_prm, expected[1], target["prm"])):
    for (path, g), w, s in zip(jax.tree_util.tree_leaves_with_path(got),
                               jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(shardings)):
        assert g.sharding == s, (jax.tree_util.keystr(path), g.sharding, s)
        np.testing.assert_array_equal(np.asarray(g), w, err_msg=jax.tree_util.keystr(path))
        count += 1
q = got_policy.params["layers"]["self_attn"]["q_proj"]["kernel"]
assert q.sharding.mesh.shape == {"data": 2, "tensor": 4} and q.sharding.spec[2] == "tensor"
assert int(got_policy.step) == 3
print("restored", count)
"""


def test_save_on_one_mesh_restore_onto_another(tmp_path):
  """TrainStates saved from an fsdp=8 mesh restore onto data=2 x tensor=4 with equal values
  (params, Adam moments, step counts), each array on the target sharding."""
  out = run_with_devices(_SAVE_RESTORE.replace("DIRECTORY", repr(str(tmp_path / "ckpt"))))
  assert "restored" in out and int(out.split("restored")[-1]) > 20, out
