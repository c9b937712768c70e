"""Internals of `nt_pntk.tiled.kernel_matrix`, one job per module.

* ``features``: per-example Jacobians ("features") F with K = F(x1) F(x2)ᵀ, and
  the ``jacobian_features`` attribute that marks kernel functions which have them;
* ``planning``: memory budgets, the memory estimate of a tile, the choice of the
  tile size and of how many row blocks stay resident;
* ``storage``: the output (memory, ``.npy``, ``.zarr``), the finished-tile record,
  the lock of an output and the fingerprint of the inputs;
* ``probe``: a few kernel entries computed by the kernel function itself, which
  identify the kernel of an output and check the tiles;
* ``compute``: the jitted per-device programs (Jacobian block, Gram tile, opaque tile);
* ``sharding``: the mesh of local devices, stacking one tile per device, and which
  tiles each process of a multi-host run computes.

This package imports nothing heavy at import time: ``nt_pntk._pntk`` imports
``features`` from it.
"""
