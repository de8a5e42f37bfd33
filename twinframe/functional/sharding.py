"""Data parallelism with JAX's own sharding: a 1-D device mesh over the batch axis.

Params, optimizer state and constants are replicated; per-example arrays (carry, inputs,
targets, noise) are split along axis 0. `jit` propagates the shardings, and XLA inserts the
gradient all-reduce, so the train step itself is unchanged. With one device everything is a
no-op. Try it on CPU with XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)


def data_mesh(batch: int, devices: list | None = None) -> Mesh | None:
    """Mesh('data') over all devices when there are several and they divide the batch."""
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) < 2:
        return None
    if batch % len(devices):
        log.warning("batch %d not divisible by %d devices: running unsharded", batch,
                    len(devices))
        return None
    return Mesh(devices, ("data",))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf copied to every device of the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf split along its leading (batch) axis."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("data")))
