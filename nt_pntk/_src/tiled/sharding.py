"""Tiles over devices: a 1-D mesh ('tiles') of this process's devices, and tiles over processes.

Every step runs one tile per local device: the inputs of the D tiles are
stacked on a leading axis of size D and placed with
``NamedSharding(mesh, P('tiles'))``, so device d holds the d-th tile's slice; a
``shard_map`` runs the single-tile program on each device (the same program as
with one device, so the result does not depend on the device count).

Across hosts (after ``jax.distributed.initialize()``), every process builds its
mesh from ``jax.local_devices()`` only and computes the tiles of the row groups
`assign` gives it; processes share the output and its tile record through the
file system and never communicate through XLA collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "tiles"


class Lanes:
    """This process's devices as a mesh; helpers to move per-device blocks in and out of it."""

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        self.devices = list(devices if devices is not None else jax.local_devices())
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.replicated = NamedSharding(self.mesh, P())

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def platform(self) -> str:
        return self.devices[0].platform

    def put_stack(self, blocks: Sequence[Any]) -> Any:
        """One host PyTree per device -> a PyTree of (D, ...) arrays, the d-th slice on device d."""
        return jax.tree_util.tree_map(lambda *leaves: jax.device_put(np.stack(leaves), self.sharded), *blocks)

    def split(self, stacked: Any) -> list[Any]:
        """A PyTree of (D, ...) sharded arrays -> one PyTree of (1, ...) single-device arrays per device."""
        leaves, treedef = jax.tree_util.tree_flatten(stacked)
        per_leaf = []
        for leaf in leaves:
            by_device = {shard.device: shard.data for shard in leaf.addressable_shards}
            per_leaf.append([by_device[d] for d in self.devices])
        return [treedef.unflatten([pl[d] for pl in per_leaf]) for d in range(self.count)]

    def join(self, per_device: Sequence[Any]) -> Any:
        """The inverse of `split`: no copy, each (1, ...) array stays on its device."""

        def join_leaf(*arrays: jax.Array) -> jax.Array:
            shape = (self.count, *arrays[0].shape[1:])
            return jax.make_array_from_single_device_arrays(shape, self.sharded, list(arrays))

        return jax.tree_util.tree_map(join_leaf, *per_device)

    def replicate(self, block: Any, source: int) -> list[Any]:
        """A block living on device `source` -> a copy on every device (itself on `source`)."""
        return [
            block if d == source else jax.device_put(block, device) for d, device in enumerate(self.devices)
        ]


def assign(work: Sequence[int], count: int, index: int) -> list[int]:
    """The groups (indices into `work`) process `index` of `count` computes: greedy, largest first."""
    loads = [0] * count
    owner = {}
    for g in sorted(range(len(work)), key=lambda g: (-work[g], g)):
        p = min(range(count), key=lambda q: (loads[q], q))
        owner[g] = p
        loads[p] += work[g]
    return sorted(g for g, p in owner.items() if p == index)


def release_free_memory() -> None:
    """Returns the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Called between groups of row blocks, so that memory freed by one group and
    fragmented by small allocations does not add up over a long run.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def delete(tree: Any) -> None:
    """Frees the device buffers of a PyTree of arrays now (not when Python collects them)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_deleted():
            leaf.delete()


def shard_map(f, *, mesh, in_specs, out_specs, check_vma: bool = True):
    """`jax.shard_map` (JAX >= 0.6), or `jax.experimental.shard_map` on older JAX.

    The older one takes the same arguments except that replication checking is
    called `check_rep`.
    """
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma)
    from jax.experimental.shard_map import shard_map as experimental_shard_map

    return experimental_shard_map(f, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=check_vma)
