"""Data parallelism over a one-axis device mesh ('data'): the same code on 1 CPU or a pod.

The global batch is sharded along 'data', the train state is replicated, and `jax.jit`
inserts the collectives: a mean over the batch axis inside the step is a mean over the
*global* batch, so BN statistics, banks and per-class statistics do not depend on the number
of devices or processes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: every device of every process), classic Auto axis type."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """Raises ValueError unless the global batch splits evenly over devices and processes."""
    devices, processes = mesh.devices.size, jax.process_count()
    if global_batch_size % devices or global_batch_size % processes:
        raise ValueError(
            f"{what}={global_batch_size} must be divisible by the number of devices ({devices}) "
            f"and processes ({processes}); set --config.{what} to a multiple of {devices}"
        )


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's rows of the global batch into arrays sharded over 'data'."""
    sharding = batch_sharded(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in local_batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host PyTree on every device of the mesh (copies; never aliases the input)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: jax.device_put(np.array(x), sharding), tree)


def gather_to_host(array: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array as a NumPy array on every process."""
    if array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
