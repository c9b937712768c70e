"""Internals of `nt_pntk.tiled.kernel_matrix`, one job per module.

* ``kernel_matrix``: the orchestration (checks, record, plan, run, result);
* ``arguments``: the checks of its arguments, and the host inputs;
* ``routes``: which programs compute the tiles (rows, structured, direct), and why;
* ``planning``: memory budgets, the memory estimate of a tile, the choice of the
  tile size and of how many row blocks stay resident (``planning.BudgetTooSmall``);
* ``writer``: a run's output and record checked against its arguments, opened,
  verified, and each tile checked, written and recorded;
* ``storage``: the output (memory, ``.npy``, ``.zarr``), the finished-tile record,
  the lock of an output and the fingerprint of the inputs;
* ``probe``: a few kernel entries computed by the kernel function itself, which
  identify the kernel of an output and check the tiles;
* ``compute``: the jitted per-device programs (Jacobian block, Gram tile, opaque
  tile), each route's as a ``compute.Programs`` (``plan`` and ``run``), and their loops;
* ``sharding``: the mesh of local devices, stacking one tile per device, and which
  tiles each process of a multi-host run computes.

The Gram features it reuses come from the kernels layer
(`nt_pntk._src.kernels.features`), which never imports this package.
"""
