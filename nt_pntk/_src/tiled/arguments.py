"""The arguments of `kernel_matrix` and `plan_kernel_matrix`, checked and brought to the host.

Every refusal is a `checks.UsageError` (`checks.UsageTypeError` for a value of
the wrong type), the one type the command line reports as a usage error. The
checks that follow one rule across the package (a positive int, a byte count,
matching inputs, parameters present) are `checks`'; those here are kernel_matrix's
own: the kernel function, host inputs of examples along axis 0, finite rows
and parameters, one dtype for x1 and x2, and the keyword arguments it can tile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nt_pntk._src import checks
from nt_pntk._src.kernels import keyword_args
from nt_pntk._src.kernels.approximations import EmpiricalKernelFn, FullENTK
from nt_pntk._src.kernels.features import as_array, describe
from nt_pntk._src.tiled import compute, routes, sharding, storage

PyTree = Any


@dataclasses.dataclass
class Inputs:
    """A call's arguments, checked: host (NumPy) inputs and their sizes, parameters, output, budget."""

    params: PyTree
    x1: PyTree
    x2: PyTree  # x1 itself when symmetric
    n1: int
    n2: int
    symmetric: bool
    path: Path | None
    budget: int | None  # bytes, None: the default budget
    tile_size: int | None  # at most max(n1, n2)


def inputs(
    fn: Callable,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    output: Any,
    memory_budget: Any,
    tile_size: Any,
) -> Inputs:
    """Every check of the arguments but the keyword arguments' (see `sides`)."""
    check_fn(fn)
    checks.has_parameters(params)
    budget = checks.parse_bytes("memory_budget", memory_budget)
    tile_size = None if tile_size is None else checks.positive_int("tile_size", tile_size)
    path = storage.check_output_path(output)
    symmetric = x2 is None
    x1h, n1 = host_inputs("x1", x1)
    x2h, n2 = (x1h, n1) if symmetric else host_inputs("x2", x2)
    if not symmetric:
        checks.matching_inputs(x1h, x2h, 0)
        check_same_dtypes(x1h, x2h)
    # Python scalars as the (weakly typed) arrays jax.jit makes of them: every program takes their dtype.
    params = jax.tree_util.tree_map(as_array, params)
    check_finite_rows("x1", x1h, n1)
    if not symmetric:
        check_finite_rows("x2", x2h, n2)
    check_finite_params(params)
    if tile_size is not None:
        tile_size = min(tile_size, max(n1, n2))  # one tile holds the whole kernel: no padding beyond it
    processes = jax.process_count()
    if processes > 1 and path is None:
        raise checks.UsageError(
            f"`output` is None in a run of {processes} processes; each process computes only its share of "
            "the tiles, so pass output='<shared path>.zarr' (or .npy on a file system all processes share)."
        )
    return Inputs(params, x1h, x2h, n1, n2, symmetric, path, budget, tile_size)


def check_fn(fn: Callable) -> None:
    if not callable(fn):
        raise checks.UsageTypeError(
            f"`fn` must be a kernel function fn(x1, x2, params, **kwargs); got {fn!r}."
        )
    if isinstance(fn, EmpiricalKernelFn) and isinstance(fn.approximation, FullENTK):
        # Its trace_axes do not trace anything, so the generic hint of `programs` would not help.
        raise checks.UsageError(
            f"`fn` must give an (N1, N2) kernel; got the full eNTK {fn!r}, an (N1, N2, O, O) kernel. "
            "kernel_matrix tiles N×N kernels only: pass an N×N approximation's kernel function, "
            "e.g. nt_pntk.approximations.PNTK().kernel_fn(f) (the pNTK), Trace(), SingleLogit(k) or "
            "Projection(m)."
        )


def host_inputs(name: str, x: PyTree) -> tuple[PyTree, int]:
    """`x` with NumPy leaves, and its batch size (axis 0 of every leaf)."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise checks.UsageError(f"`{name}` has no arrays; pass an array of examples along axis 0.")
    x = jax.tree_util.tree_map(np.asarray, x)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(x)}
    if None in sizes or len(sizes) != 1:
        shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(x)]
        raise checks.UsageError(
            f"`{name}` must hold examples along axis 0 of every array, in equal numbers; got shapes {shapes}."
        )
    n = sizes.pop()
    if n < 1:
        raise checks.UsageError(f"`{name}` has no examples (shape {np.shape(leaves[0])}); pass at least one.")
    return x, n


def check_same_dtypes(x1: PyTree, x2: PyTree) -> None:
    """A `TypeError` for x2 of another dtype than x1: each route compiles one program for both."""
    paths = jax.tree_util.tree_leaves_with_path(x1)
    for (path, a), b in zip(paths, jax.tree_util.tree_leaves(x2), strict=True):
        if a.dtype != b.dtype:
            where = f" (leaf {jax.tree_util.keystr(path)})" if path else ""
            raise checks.UsageTypeError(
                f"`x2` has dtype {b.dtype} where `x1` has {a.dtype}{where}; kernel_matrix computes both "
                f"with one program per route. Pass both in one dtype, e.g. x2.astype(x1.dtype)."
            )


def check_finite_rows(name: str, x: PyTree, n: int) -> None:
    bad = np.zeros(n, bool)
    for leaf in jax.tree_util.tree_leaves(x):
        # jnp.issubdtype knows bfloat16, which NumPy's puts outside np.inexact.
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad |= ~np.isfinite(leaf.reshape(n, -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise checks.UsageError(
            f"`{name}` has a non-finite value (NaN or inf) in row {first} (the first bad row; "
            f"{int(bad.sum())} of {n} rows in all). Its kernel entries would be NaN: remove or repair "
            f"those rows, e.g. {name}[np.isfinite({name}).reshape(len({name}), -1).all(axis=1)]."
        )


def check_finite_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) else None
        if a is not None and not np.isfinite(a).all():
            raise checks.UsageError(
                f"`params` has non-finite values (NaN or inf) in leaf {jax.tree_util.keystr(path)} of shape "
                f"{a.shape}; every kernel entry would be NaN. Pass finite parameters."
            )


def sides(fn: Callable, kwargs: dict, x1: PyTree, x2: PyTree | None) -> routes.Sides:
    """The keyword arguments of x1 and x2, split once from the whole inputs as NT does (see
    `keyword_args`); every tile, feature block and probe entry gets these."""
    if not isinstance(fn, EmpiricalKernelFn) and keyword_args.RNG in kwargs:
        raise checks.UsageError(
            f"kernel_matrix cannot tile `fn`={describe(fn)} with `rng`: an NT-style kernel function derives "
            "x2's key from whether x2 equals x1, which differs from tile to tile. Pass an nt_pntk kernel "
            "function (e.g. nt_pntk.empirical_pntk_fn(f) or nt_pntk.approximations.Trace().kernel_fn(f)), "
            "whose tiles get the keys of the whole x1 and x2, or call fn(x1, x2, params, rng=key) itself."
        )
    if isinstance(fn, EmpiricalKernelFn):
        batched = keyword_args.batched(fn.vmap_axes, kwargs)
        if batched:
            raise checks.UsageError(
                f"kernel_matrix cannot tile keyword arguments batched by `vmap_axes`={fn.vmap_axes!r} "
                f"({', '.join(f'`{k}`' for k in batched)}): it takes rows of x1 and x2 only. Make them part "
                "of the inputs (e.g. x = {'x': x, '"
                + batched[0]
                + "': values}, a PyTree of examples along axis 0) or call fn(x1, x2, params, ...) itself."
            )
    kwargs1, kwargs2 = keyword_args.split(kwargs, x1, x2)
    keyword_args.bind(kwargs1, kwargs2)  # a TypeError now for values no network can take untraced
    return routes.Sides(dict(kwargs), kwargs1, kwargs2)


def programs(
    fn: Callable, kwargs: routes.Sides, lanes: sharding.Lanes, args: Inputs
) -> tuple[compute.Programs, np.dtype, routes.Choice]:
    """The programs of the route `fn` takes (see `routes`), the kernel's dtype, and the choice;
    a `UsageError` for inputs the network refuses, or an ``fn`` that gives no (n1, n2) kernel."""
    entries = args.n1 * (args.n1 + 1) // 2 if args.symmetric else args.n1 * args.n2
    rows = args.n1 if args.symmetric else args.n1 + args.n2
    try:
        taken, choice = routes.choose(fn, kwargs, lanes, args.params, args.x1, entries, rows)
        result = taken.kernel_struct(args.params, args.x1, args.x2)
    except TypeError as e:
        # The network refuses these inputs (e.g. stax's convolutions take only their weights' dtype).
        raise checks.UsageTypeError(
            f"`fn` fails on `x1` of dtype {_dtypes(args.x1)} with `params` of dtype {_dtypes(args.params)}: "
            f"{e} kernel_matrix takes the inputs `fn` takes: pass x1 (and x2) in a dtype the network "
            "accepts, e.g. x1.astype(np.float32)."
        ) from e
    if not isinstance(result, jax.ShapeDtypeStruct) or tuple(result.shape) != (2, 3):
        shape = getattr(result, "shape", None) or jax.tree_util.tree_map(lambda a: a.shape, result)
        raise checks.UsageError(
            "`fn` must return an (n1, n2) array, one kernel entry per pair of examples; for batches of 2 "
            f"and 3 examples it returned {shape}. kernel_matrix tiles 2-D kernels only: trace the "
            "network's output axes (e.g. trace_axes=(-1,)) or pass a function that selects one kernel."
        )
    return taken, np.dtype(result.dtype), choice


def _dtypes(tree: PyTree) -> str:
    names = sorted({str(jnp.result_type(leaf)) for leaf in jax.tree_util.tree_leaves(tree)})
    return "/".join(names) or "none"
