"""Spread vmapped ensembles over every local device with :mod:`jax.sharding`.

An ensemble chunk of ``S`` members is one program ``vmap``-ed over a leading *member* axis. With ``D``
local devices (GPUs, or CPU devices forced with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``),
the chunk is rounded up to a multiple of ``D`` (:func:`chunk_for_devices`; the extra members repeat the
last one and are dropped), the per-member inputs (PRNG keys, learning rates, weight decays) are placed
with ``NamedSharding(Mesh(devices, ("members",)), P("members"))`` (:func:`shard_members`) and the shared
inputs (the dataset) replicated (:func:`replicate`). ``jit`` then partitions the program along the member
axis: each device trains ``S / D`` members, with no communication (members are independent), so every
member computes exactly what it computes on one device.

``SHARD_MEMBERS = False`` (module attribute) switches this off; with one device everything is a no-op.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: shard ensembles over all local devices (set False to keep everything on the default device)
SHARD_MEMBERS = True
AXIS = "members"


def member_devices() -> Sequence[Any]:
    """The devices ensembles are spread over: all local devices of the default backend (one when
    :data:`SHARD_MEMBERS` is off)."""
    devs = jax.local_devices()
    return devs if SHARD_MEMBERS else devs[:1]


def member_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A one-axis mesh ``("members",)`` over ``devices`` (default :func:`member_devices`)."""
    import numpy as np
    return Mesh(np.asarray(list(devices if devices is not None else member_devices())), (AXIS,))


def chunk_for_devices(size: int, n_devices: Optional[int] = None) -> int:
    """``size`` rounded up to a multiple of the number of member devices."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    d = len(member_devices()) if n_devices is None else int(n_devices)
    return -(-size // d) * d


def shard_members(tree: Any, mesh: Optional[Mesh] = None) -> Any:
    """Place every array of ``tree`` split along its leading (member) axis over the mesh devices; a no-op
    with one device. The leading axis must be a multiple of the device count (:func:`chunk_for_devices`)."""
    mesh = mesh if mesh is not None else member_mesh()
    if mesh.size == 1:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))

    def put(a):
        if a.shape[0] % mesh.size:
            raise ValueError(f"the member axis ({a.shape[0]}) must be a multiple of the {mesh.size} devices")
        return jax.device_put(a, sharding)
    return jax.tree_util.tree_map(put, tree)


def replicate(tree: Any, mesh: Optional[Mesh] = None) -> Any:
    """Place every array of ``tree`` whole on every mesh device (a no-op with one device)."""
    mesh = mesh if mesh is not None else member_mesh()
    if mesh.size == 1:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


__all__ = ["SHARD_MEMBERS", "member_devices", "member_mesh", "chunk_for_devices", "shard_members",
           "replicate"]
