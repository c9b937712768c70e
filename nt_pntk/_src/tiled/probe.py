"""A few kernel entries computed by the kernel function itself: what identifies a kernel on disk.

A kernel function's name says little about what it computes (a changed
activation keeps the name; every flax module's is ``Module.apply``). So an
output records the *probe*: ``fn(x1[rows], x2[cols], params)`` for up to
`PROBE_SIZE` rows and columns spread over the inputs (first, last and between),
evaluated by ``fn`` itself one pair at a time (jitted, at ``"highest"`` matmul
precision, so that it is accurate on every platform), not by the tiling. A resumed run computes it
again and compares (`mismatch`); every fresh tile that holds a probe entry is
compared with it too (`TileCheck`), which catches a tiled route (Jacobian
features, padded tiles) that computes another kernel than ``fn``.

Tolerances are relative to the largest probe entry: the same function on the
same inputs differs only by rounding (another compiled program, device or XLA
version), and a fresh tile by a little more (another summation order, TF32 or
bfloat16 passes of accelerators' default matmul precision).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nt_pntk._src import checks

PyTree = Any
PROBE_SIZE = 4  # rows of x1 and of x2 (at most): 16 entries


def indices(n: int) -> list[int]:
    """Up to `PROBE_SIZE` indices spread over ``[0, n)``: the first, the last and between."""
    if n == 1:
        return [0]
    return sorted({round(k * (n - 1) / (PROBE_SIZE - 1)) for k in range(PROBE_SIZE)})


def _kernel(fn: Callable, params: PyTree, xa: PyTree, xb: PyTree) -> jax.Array:
    return fn(xa, xb, params)


# `fn` static: a second call with the same function (and shapes) reuses the compiled probe.
_kernel_jit = jax.jit(_kernel, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class Probe:
    rows: list[int]
    cols: list[int]
    values: np.ndarray  # (len(rows), len(cols)) float64, or complex128 for a complex kernel
    dtype: str
    jaxpr: str | None  # BLAKE2b of fn's printed jaxpr on the probe inputs: information only

    def to_json(self) -> dict:
        stored = {
            "rows": self.rows,
            "cols": self.cols,
            "values": [float(v) for v in self.values.real.ravel()],
            "dtype": self.dtype,
        }
        if np.iscomplexobj(self.values):
            stored["imag"] = [float(v) for v in self.values.imag.ravel()]
        return stored

    @classmethod
    def from_json(cls, stored: dict) -> Probe:
        """From a meta.json's ``probe`` (checked by `storage`)."""
        rows, cols = list(stored["rows"]), list(stored["cols"])
        values = np.asarray(stored["values"], np.float64).reshape(len(rows), len(cols))
        if "imag" in stored:
            values = values + 1j * np.asarray(stored["imag"], np.float64).reshape(values.shape)
        return cls(rows, cols, values, str(stored.get("dtype")), None)


def compute(
    fn: Callable, sides: Any, params: PyTree, x1: PyTree, x2: PyTree, n1: int, n2: int, symmetric: bool
) -> Probe:
    """The probe of ``fn`` on host inputs `x1` and `x2` (`x2` ignored when `symmetric`).

    One pair of examples per call (one compiled program, up to 16 runs): it
    needs no more memory than the smallest tile, and no entry depends on a batch.
    `sides` (`routes.Sides`): the keyword arguments of the whole x1 and x2,
    which each pair gets (as every tile does).
    """
    from nt_pntk._src.tiled import routes

    rows, cols = indices(n1), indices(n2)
    try:
        hash(fn)
        cacheable = not sides.given
    except TypeError:
        cacheable = False
    if cacheable:
        jitted, prefix = _kernel_jit, (fn, params)
    else:
        tile = routes.tile_function(fn, sides)
        jitted, prefix = jax.jit(lambda p, a, b: tile(a, b, p)), (params,)

    def example(x: PyTree, i: int) -> PyTree:
        return jax.tree_util.tree_map(lambda a: a[i : i + 1], x)

    values: np.ndarray | None = None
    with jax.default_matmul_precision("float32"):  # "highest" (JAX < 0.5 knows only this name)
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                entry = jitted(*prefix, example(x1, r), example(x1 if symmetric else x2, c))
                shape = getattr(entry, "shape", None)
                if not isinstance(entry, jax.Array) or tuple(shape) != (1, 1):
                    raise checks.UsageError(
                        "`fn` must return an (n1, n2) array, one kernel entry per pair of examples; for "
                        "batches of 1 and 1 examples it returned "
                        f"{shape if shape is not None else jax.tree_util.tree_map(jnp.shape, entry)}."
                    )
                if values is None:  # complex kernels keep their imaginary parts
                    values = np.empty((len(rows), len(cols)), np.result_type(entry.dtype, np.float64))
                values[a, b] = np.asarray(entry)[0, 0]
        try:
            traced = jitted.trace(*prefix, example(x1, rows[0]), example(x1 if symmetric else x2, cols[0]))
            text = re.sub(r" at 0x[0-9a-f]+", "", str(traced.jaxpr))
            jaxpr = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        except Exception:  # information only
            jaxpr = None
    return Probe(rows, cols, values, str(entry.dtype), jaxpr)


def precision(kernel_dtype: Any, *trees: PyTree) -> np.dtype:
    """The least precise of the kernel's dtype and the floating dtypes of the leaves of `trees` (the
    parameters and inputs): a float64 kernel of float32 parameters is only as exact as float32."""
    dtypes = [np.dtype(kernel_dtype)] + [
        np.dtype(leaf.dtype)
        for tree in trees
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    inexact = [d for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
    return max(inexact, key=lambda d: float(jnp.finfo(d).eps)) if inexact else np.dtype(kernel_dtype)


def rtol(dtype: Any) -> float:
    """Tolerance of a probe against a stored one, relative to the largest entry.

    float32: 1.2e-4; float64: 1e-9; float16 and bfloat16: 5e-2.
    """
    eps = float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.inexact) else 0.0
    return min(5e-2, max(1e-9, 1e3 * eps))


def tile_rtol(dtype: Any, platform: str) -> float:
    """Tolerance of a fresh tile against the probe, relative to the largest probe entry.

    Ten times `rtol` (another summation order), and 5e-2 for float32 on
    accelerators unless the matmul precision is "highest" or "float32": their
    default multiplies float32 in TF32 or bfloat16 passes (relative errors near 1e-3).
    """
    tol = 10 * rtol(dtype)
    precision = str(jax.config.jax_default_matmul_precision or "default").lower()
    single = jnp.issubdtype(dtype, jnp.inexact) and jnp.finfo(dtype).bits <= 32  # complex64 included
    if platform != "cpu" and single and precision not in ("highest", "float32"):
        tol = max(tol, 5e-2)
    return min(tol, 0.25)


def _scale(*values: np.ndarray) -> float:
    finite = [np.abs(v[np.isfinite(v)]).max(initial=0.0) for v in values]
    return max(*finite, np.finfo(np.float64).tiny)


def _differs(a: Any, b: Any, tol: float) -> Any:
    a, b = _wide(a), _wide(b)
    same_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        return ~(same_nan | (np.abs(a - b) <= tol))


def _wide(a: Any) -> np.ndarray:
    """`a` in float64 (complex128 if complex: the imaginary part is compared too)."""
    return np.asarray(a, np.complex128 if np.iscomplexobj(a) else np.float64)


def _show(v: Any) -> str:
    return f"{complex(v):.7g}" if np.iscomplexobj(v) else f"{float(v):.7g}"


def mismatch(stored: Probe, fresh: Probe, dtype: Any) -> str | None:
    """Why `fresh` is not the kernel of `stored`, in words, or None (`dtype`: what was computed in,
    see `precision`)."""
    if (stored.rows, stored.cols) != (fresh.rows, fresh.cols):
        return (
            f"the probe entries were taken at rows {stored.rows} and columns {stored.cols}, now at rows "
            f"{fresh.rows} and columns {fresh.cols}"
        )
    relative = rtol(dtype)
    scale = _scale(stored.values, fresh.values)
    bad = _differs(stored.values, fresh.values, relative * scale)
    if not bad.any():
        return None
    with np.errstate(invalid="ignore"):
        gap = np.where(bad, np.nan_to_num(np.abs(stored.values - fresh.values), nan=np.inf), -1.0)
    a, b = np.unravel_index(int(np.argmax(gap)), gap.shape)
    return (
        f"the kernel function computes different values than the one that started this output: probe "
        f"entry K[{stored.rows[a]}, {stored.cols[b]}] was {_show(stored.values[a, b])} and is now "
        f"{_show(fresh.values[a, b])} ({int(bad.sum())} of {bad.size} probe entries differ by more than "
        f"{relative:.2g} times the largest, {scale:.7g}). x1, x2, params and the keyword arguments are "
        "the same, so `fn` itself changed (e.g. another activation, architecture or apply function)"
    )


class TileCheck:
    """Compares every fresh tile holding probe entries with the probe; a `ValueError` on a mismatch."""

    def __init__(self, probe: Probe, tile: int, symmetric: bool, mode: str, platform: str, dtype: Any = None):
        """`dtype`: the dtype computed in (see `precision`); the probe's own by default."""
        self.mode = mode
        self.relative = tile_rtol(probe.dtype if dtype is None else dtype, platform)
        self.tol = self.relative * _scale(probe.values)
        self.entries: dict[tuple[int, int], list[tuple[int, int, Any, int, int]]] = {}
        for a, r in enumerate(probe.rows):
            for b, c in enumerate(probe.cols):
                i, j = r // tile, c // tile
                if symmetric and i > j:  # K[r, c] = K[c, r], held by tile (j, i) above the diagonal
                    key, local = (j, i), (c - j * tile, r - i * tile)
                else:
                    key, local = (i, j), (r - i * tile, c - j * tile)
                self.entries.setdefault(key, []).append((*local, probe.values[a, b], r, c))

    def __call__(self, i: int, j: int, tile: np.ndarray) -> None:
        for lr, lc, expected, r, c in self.entries.get((i, j), ()):
            got = tile[lr, lc]
            if _differs(got, expected, self.tol):
                route = (
                    "the tiles come from `fn.features_fn()`, which must give the same kernel as `fn` "
                    "(the Gram features of its approximation)"
                    if self.mode == "features"
                    else "`fn` is evaluated on tiles of examples, so the kernel of two examples must not "
                    "depend on the rest of their batch (as for nt.batch)"
                )
                raise ValueError(
                    f"kernel_matrix computed K[{r}, {c}] = {_show(got)} in tile ({i}, {j}), but `fn` "
                    f"itself gives {_show(expected)} for that pair (more than {self.relative:.2g} times the "
                    f"largest probe entry apart). In mode {self.mode!r} {route}. The tile was not recorded."
                )
