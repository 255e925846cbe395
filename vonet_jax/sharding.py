"""Device mesh and array placement: one data axis over every device of every process.

Batches are split along the data axis; parameters, optimiser state and rngs are replicated.
The same code runs on 1 CPU, 1 GPU, N GPUs and N hosts (no pmap).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """Mesh with the single axis 'data' over `devices` (default: all global devices)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(mesh: Mesh, local_batch):
  """Host-local numpy batch (this process's share) -> global jax arrays sharded on axis 0."""
  sharding = data_sharded(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def replicate(mesh: Mesh, tree):
  """Places every leaf of tree (identical on all processes) replicated over the mesh."""
  sharding = replicated(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def to_host(tree):
  """Global arrays -> numpy on this host: replicated leaves whole, sharded leaves this
  process's share (its addressable shards, in order along axis 0)."""
  def fetch(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.sharding.is_fully_replicated:
      return np.asarray(x.addressable_shards[0].data)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards], axis=0)
  return jax.tree_util.tree_map(fetch, tree)
