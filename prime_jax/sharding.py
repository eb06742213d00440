"""Meshes and the logical-axis rule table: one code path for a CPU, one GPU and a TPU pod.

Every param carries logical axis names (see `prime_jax.models.decoder`); a rule table maps each
name to a mesh axis (or None = replicated). Changing the layout is changing the table, not code.

The tables a run uses: `training_rules(config)` (`config.sharding_rules`) for params, optimiser
states, batches and the update step's activations; `sampler_rules(config)`
(`config.sampler_rules`) for the sampler's copy of the params (`reshard_params`), its KV cache and
activations. Activation constraints (`nn.with_logical_constraint` in the decoder) take effect only
in functions traced under `activation_rules(mesh, rules)`, as the update step and sampler are.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from prime_jax.models.decoder import init_params, param_logical_axes

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or a tuple of axes, or None). Params: FSDP over `embed`, Megatron-style
# tensor parallelism over heads / MLP / vocab. Activations: batch over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("length", None),
    ("act_embed", None),
)

# A decode-friendly layout (`config.sampler_rules = DECODE_RULES`): params replicated over `fsdp`
# (no all-gather of every weight at every decoded token), still tensor-parallel over heads / MLP /
# vocab; activations and the KV cache keep batch over data and fsdp.
DECODE_RULES: tuple[tuple[str, object], ...] = tuple(
    (name, None if name == "embed" else axes) for name, axes in DEFAULT_RULES
)


def training_rules(config) -> tuple:
  """`config.sharding_rules` as a rule tuple; `()` means DEFAULT_RULES."""
  return as_rules(config.sharding_rules) or DEFAULT_RULES


def sampler_rules(config) -> tuple:
  """`config.sampler_rules` as a rule tuple; `()` means the training rules."""
  return as_rules(config.get("sampler_rules", ())) or training_rules(config)


def as_rules(rules) -> tuple:
  """A hashable rule tuple ((name, axes), ...), axes None, a mesh axis or a tuple of them (a
  config may hold lists)."""

  def axes(a):
    return a if a is None or isinstance(a, str) else tuple(a)

  return tuple((str(name), axes(a)) for name, a in (rules or ()))


def mesh_sizes(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """The axis sizes of `axes` on `num_devices` devices: at most one size may be -1 (all the
  remaining devices). Raises ValueError for unknown axes or sizes that do not multiply out."""
  names, sizes = list(axes), [int(v) for v in axes.values()]
  unknown = [n for n in names if n not in MESH_AXES]
  if unknown:
    raise ValueError(f"unknown mesh axes {unknown}; allowed: {MESH_AXES}")
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(axes)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split as {dict(axes)}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices, "
        f"{num_devices} available"
    )
  return dict(zip(names, sizes))


def parse_mesh(spec: str | Mapping[str, int]) -> dict[str, int]:
  """Mesh axis sizes from a command line: "data=-1,fsdp=1,tensor=1" -> {"data": -1, "fsdp": 1,
  "tensor": 1} (a mapping passes through with int sizes). ValueError naming a malformed part."""
  if isinstance(spec, Mapping):
    return {str(k): int(v) for k, v in spec.items()}
  axes = {}
  for part in (p.strip() for p in spec.split(",") if p.strip()):
    name, sep, size = part.partition("=")
    if not sep:
      raise ValueError(f"mesh axis {part!r} is not NAME=SIZE")
    try:
      axes[name.strip()] = int(size)
    except ValueError:
      raise ValueError(f"mesh axis {part!r}: size must be an integer") from None
  if not axes:
    raise ValueError("mesh: no axes given")
  return axes


def make_mesh(axes: Mapping[str, int], devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh with the named axes; one size may be -1 (all remaining devices).

  Example: `make_mesh({"data": 1, "fsdp": -1, "tensor": 2})` on 8 devices is 1 x 4 x 2.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_sizes(axes, len(devices))
  return jax.make_mesh(
      tuple(sizes.values()), tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes), devices=devices
  )


def rules_for_mesh(rules, mesh: Mesh):
  """Drops the mesh axes a rule names that `mesh` does not have (a mesh without `tensor`
  simply replicates what the rules would split over it)."""

  def keep(axes):
    names = tuple(
        a for a in ((axes,) if isinstance(axes, str) else (axes or ())) if a in mesh.axis_names
    )
    return names[0] if len(names) == 1 else (names or None)

  return tuple((logical, keep(axes)) for logical, axes in rules)


@contextlib.contextmanager
def activation_rules(mesh: Optional[Mesh], rules=DEFAULT_RULES):
  """Makes the models' `nn.with_logical_constraint`s take effect while a function is traced.

  Enter it inside the function given to `jax.jit` (it sets the mesh abstractly, so it is allowed
  under a trace, unlike `jax.set_mesh`): activations are then constrained to the layout `rules`
  give on `mesh` (batch over data x fsdp, heads over tensor, ...). No-op for mesh None.
  """
  if mesh is None:
    yield
    return
  with (
      jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
      nn.logical_axis_rules(rules_for_mesh(as_rules(rules), mesh)),
  ):
    yield


def logical_sharding(mesh: Mesh, logical_axes: PartitionSpec | Sequence, rules=DEFAULT_RULES):
  """NamedSharding for one array with the given logical axis names."""
  return NamedSharding(
      mesh, nn.logical_to_mesh_axes(tuple(logical_axes), rules_for_mesh(rules, mesh))
  )


def tree_shardings(mesh: Mesh, logical_tree, rules=DEFAULT_RULES):
  """Maps a pytree of logical `PartitionSpec`s (e.g. `param_logical_axes`) to NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, rules_for_mesh(rules, mesh))


def fit_to_shape(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
  """Replicates any dimension whose size its mesh axes do not divide (e.g. a vocab of 97 on 2
  tensor shards), so one rule table serves every model size."""
  mesh, fitted = sharding.mesh, []
  for dim, axes in zip(shape, tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(mesh.shape[a] for a in names)
    fitted.append(axes if dim % ways == 0 else None)
  return NamedSharding(mesh, PartitionSpec(*fitted))


def param_shardings(config, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedSharding pytree shaped like the decoder params of `config`."""
  shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  return jax.tree_util.tree_map(
      lambda s, a: fit_to_shape(s, a.shape),
      tree_shardings(mesh, param_logical_axes(config), rules),
      shapes,
  )


def reshard_params(params, model_config, mesh: Mesh, rules=DEFAULT_RULES):
  """`params` laid out as `rules` say on `mesh`, e.g. the sampler's layout (`sampler_rules`) of
  the training params. `jax.device_put` between shardings of one mesh moves shards device to
  device, never through the host; leaves already laid out so are returned as they are (no copy),
  so with equal rules this is free and the result aliases `params`."""
  return jax.device_put(params, param_shardings(model_config, mesh, rules))
