r"""Kernel regression in the primal: `regression.predict` on :math:`K = \Phi\Phi^\top` from the features Φ.

For features :math:`\Phi \in \mathbb{R}^{N \times d}` of the training inputs and
:math:`\Phi_*` of the test inputs, :math:`K = \Phi\Phi^\top` and :math:`K_* = \Phi_*\Phi^\top`.
With the eigendecomposition :math:`\Phi^\top\Phi = V \operatorname{diag}(s) V^\top`, the nonzero
eigenvalues of :math:`K` are the nonzero :math:`s_j`, with eigenvectors :math:`u_j = \Phi v_j /
\sqrt{s_j}`; :math:`K_*` vanishes on :math:`K`'s null space, so `regression.predict`'s

.. math::
    f_* = K_* (K + \lambda I)^{-1} \big(I - e^{-\tau (K + \lambda I)}\big) Y,
    \qquad \tau = \eta t / (NO),

is, with :math:`\sqrt{s_j}\, u_j^\top Y = v_j^\top \Phi^\top Y`,

.. math::
    f_* = \Phi_* V \operatorname{diag}\Big(\frac{1 - e^{-\tau (s_j + \lambda)}}{s_j + \lambda}\Big)
        V^\top \Phi^\top Y,
    \qquad f_*(\infty) = \Phi_* (\Phi^\top\Phi + \lambda I)^{-1} \Phi^\top Y

(the push-through identity :math:`\Phi^\top(\Phi\Phi^\top + \lambda I)^{-1} = (\Phi^\top\Phi +
\lambda I)^{-1}\Phi^\top`). The directions of Φ's null space (d > N) contribute
:math:`\Phi v_j = 0`: nothing. Everything else is `predict`'s: the ridge relative to the mean
diagonal of K, :math:`\lVert\Phi\rVert_F^2 / N`; infinite time by Cholesky unless
:math:`\Phi^\top\Phi + \lambda I` is within round-off of singular, then by the eigendecomposition,
whose eigenvalues within round-off of zero count as zero (:math:`\Phi_* \Phi^+ Y` at ridge 0, the
minimum-norm interpolant). It costs :math:`O(Nd^2 + d^3)` time and :math:`O(d^2)` memory, against
`predict`'s :math:`O(N^2 d + N^3)` and :math:`O(N^2)` with the kernel formed.

Φ is read in blocks of rows (a memmap or a Zarr array of 50,000 × 8,192 is never read whole):
:math:`\Phi^\top\Phi` and :math:`\Phi^\top Y` are accumulated in float64 block by block, then the
predictions are made block by block of :math:`\Phi_*`. Φ is scaled by a power of two (exact) as
it is read, so that squares neither overflow nor underflow, as `predict` scales K.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from nt_pntk._src import checks
from nt_pntk._src.kernels import regression

#: The float64 copy of one block of Φ's rows is at most this many bytes (one row at least).
BLOCK_BYTES = 64 * checks.MIB


def predict_features(
    phi_train: Any,
    y_train: Any,
    phi_test: Any = None,
    *,
    ridge: float = 0.0,
    t: float | None = None,
    learning_rate: float = 1.0,
    block_rows: int | None = None,
) -> np.ndarray:
    r"""Kernel-regression predictions of `predict` on the kernel :math:`\Phi\Phi^\top`, from the features Φ.

    .. math::
        f_* = \Phi_* V \operatorname{diag}\Big(\frac{1 - e^{-\eta t (s_j + \lambda)/(NO)}}{s_j +
        \lambda}\Big) V^\top \Phi^\top Y,
        \qquad \Phi^\top\Phi = V \operatorname{diag}(s) V^\top,
        \qquad \lambda = \texttt{ridge} \cdot \lVert\Phi\rVert_F^2 / N,

    which is ``predict(Φ @ Φ.T, y_train, Φ_* @ Φ.T, ...)`` (:math:`\Phi_* (\Phi^\top\Phi + \lambda
    I)^{-1} \Phi^\top Y` for ``t=None``; :math:`\Phi_* (\Phi^\top\Phi)^+ \Phi^\top Y`, the
    minimum-norm interpolant, at ``ridge=0``), in :math:`O(Nd^2 + d^3)` time and :math:`O(d^2)`
    memory besides Φ, d features per input: linear in N. Where d > N, ``predict`` on the kernel
    costs less.

    Args:
      phi_train: ``(N, k)`` features of the training inputs, or ``(N, rows, k)`` (``rows``
        Jacobian rows per input: the kernel is :math:`\sum_r \Phi_r \Phi_r^\top`, d = rows·k):
        a NumPy array, a memmap, a JAX array, a Zarr array (anything with ``shape``, ``dtype``
        and slicing), or the path of a ``.npy`` or ``.zarr`` file. Read in blocks of rows.
      y_train: ``(N, O)`` targets, as for `predict`.
      phi_test: features of the test inputs, ``(M, k)`` (resp. ``(M, rows, k)``), of the same
        kinds; ``None`` predicts on the training inputs.
      ridge: non-negative ridge, relative to the mean diagonal of :math:`\Phi\Phi^\top`, as in
        `predict`.
      t: training time, as in `predict`; ``None`` (or ``inf``) for infinite time.
      learning_rate: the learning rate :math:`\eta` multiplying ``t``.
      block_rows: inputs per block read from Φ; by default as many as keep a block's float64
        copy within 64 MiB.

    Returns:
      float64 predictions of shape ``(M, O)`` (``(N, O)`` when ``phi_test`` is ``None``).

    Raises:
      ValueError: features or targets of inconsistent shapes (the message names the argument and
        the expected shape) or with NaN or infinite entries; a path that is not a readable
        ``.npy`` or ``.zarr`` array; ``ridge``, ``t`` or ``learning_rate`` out of range, as in
        `predict`; a ``block_rows`` below 1.
      TypeError: features or targets that are not arrays of real numbers; ``ridge``, ``t``,
        ``learning_rate`` or ``block_rows`` of the wrong type.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import regression
      >>> phi = np.random.default_rng(0).standard_normal((100, 8))  # N = 100 inputs, k = 8 features
      >>> y = np.eye(3)[np.arange(100) % 3]  # one-hot targets, O = 3
      >>> primal = regression.predict_features(phi, y, phi[:5], ridge=1e-3, t=10.0)
      >>> dual = regression.predict(phi @ phi.T, y, phi[:5] @ phi.T, ridge=1e-3, t=10.0)
      >>> primal.shape, bool(np.allclose(primal, dual))
      ((5, 3), True)
    """
    train = _features("phi_train", phi_train)
    n, width = train.shape[0], math.prod(train.shape[1:])
    y = checks.real_array("y_train", y_train)
    if y.ndim != 2 or y.shape[0] != n or y.size == 0:
        raise checks.UsageError(
            f"`y_train` must have shape (N, O) = ({n}, O) for a `phi_train` of shape {train.shape}, O >= 1; "
            f"got shape {y.shape}. One-hot labels: `nt_pntk.experiments.data.centred_one_hot(labels, O)`; "
            "a single output: `y[:, None]`."
        )
    test = train if phi_test is None else _features("phi_test", phi_test)
    if test.ndim != train.ndim or test.shape[1:] != train.shape[1:]:
        expected = f"(M, {', '.join(map(str, train.shape[1:]))})"
        raise checks.UsageError(
            f"`phi_test` must have shape {expected} (test inputs × the features of `phi_train`, of shape "
            f"{train.shape}); got shape {test.shape}."
        )
    ridge, t, learning_rate = regression.checked_options(ridge, t, learning_rate)
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES // (8 * width))
    block_rows = checks.positive_int("block_rows", block_rows)
    outputs = y.shape[1]

    gram, cross, exponent = _accumulate(train, y, block_rows)  # Φᵀ Φ / 4^e and Φᵀ Y / 2^e
    # Like `predict`'s K / scale: the largest entry (on the diagonal of a Gram matrix), so the mean diagonal
    # too, at most 1, so that the ridge cannot overflow (ridge=1e308). Gradient flow on K / 2^E for 2^E τ
    # is gradient flow on K for τ.
    normal = math.frexp(float(np.max(gram.diagonal())))[1]
    np.ldexp(gram, -normal, out=gram)
    mean_diagonal = float(np.trace(gram)) / n
    lam = ridge * mean_diagonal
    time = math.inf if t is None else _ldexp(learning_rate * t / (n * outputs), 2 * exponent + normal)
    tolerance = max(n, 100) * _eps(train.dtype)
    coefficients = None
    if math.isinf(time):
        diagonal = gram.diagonal().copy()
        gram[np.diag_indices(width)] += lam
        coefficients = regression._cholesky_solve(gram, cross, tolerance)
        gram[np.diag_indices(width)] = diagonal
    if coefficients is None:
        evals, evecs = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False)
        # The solve drops eigenvalues within round-off of 0 as `predict` does: at ridge 0, those of Φ's
        # null space (d > N) and ΦᵀΦ's negative round-off; at ridge > 0 it keeps them, as `predict` keeps
        # K's null space, and they carry round-off only (Φv = 0, as K_* u = 0 there).
        coefficients = regression._gradient_flow_solve(evals + lam, evecs, cross, time, tolerance)
    del gram
    coefficients = np.ldexp(coefficients, -normal)  # f = (Φ_* / 2^e) · coefficients
    return _apply(test, coefficients, exponent, block_rows)


class _Rows:
    """Blocks of rows of an array-like (a NumPy or JAX array, a memmap, a Zarr array) as float64."""

    def __init__(self, name: str, array: Any):
        self.name, self.array = name, array
        self.shape, self.dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, float]:
        """Rows ``start:stop`` as a float64 ``(stop - start, d)`` array, and its largest magnitude
        (a `ValueError` naming the first non-finite entry, at its index in the whole array)."""
        block = np.asarray(self.array[start:stop]).astype(np.float64)
        largest = max(float(np.max(block)), -float(np.min(block)))  # NaN if any entry is
        if not math.isfinite(largest):
            bad = ~np.isfinite(block)
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise checks.UsageError(
                f"`{self.name}` must be finite; it has {int(bad.sum())} NaN or infinite entries in its rows "
                f"{start} to {stop - 1}, the first {block[first]} at index {(first[0] + start, *first[1:])}."
            )
        return block.reshape(stop - start, -1), largest


def _features(name: str, value: Any) -> _Rows:
    """`value` (an array-like or the path of a ``.npy`` or ``.zarr`` array) as `_Rows`, checked:
    real, (N, k) or (N, rows, k), no axis of size 0; its values are read later, block by block."""
    if isinstance(value, (str, os.PathLike)):
        value = _open(name, Path(value))
    elif isinstance(value, (list, tuple)):
        value = checks.real_array(name, value, finite=False)
    elif "jax" in sys.modules and isinstance(value, sys.modules["jax"].Array):
        value = np.asarray(value)  # on the host once, not a device slice per block
    elif not all(hasattr(value, a) for a in ("shape", "dtype", "__getitem__")):
        raise checks.UsageTypeError(
            f"`{name}` must be an array of features, (N, k) or (N, rows, k), or the path of a .npy or .zarr "
            f"array; got {value!r} of type {type(value).__name__}."
        )
    rows = _Rows(name, value)
    checks.real_dtype(name, rows.dtype)
    if rows.ndim not in (2, 3) or 0 in rows.shape:
        raise checks.UsageError(
            f"`{name}` must have shape (N, k) (k features per input) or (N, rows, k) (rows Jacobian rows of "
            f"k features per input), no axis of size 0; got shape {rows.shape}."
        )
    return rows


def _open(name: str, path: Path) -> Any:
    """The array at `path`, read-only: a memmap for ``.npy``, a Zarr array for ``.zarr``."""
    if path.suffix not in (".npy", ".zarr"):
        raise checks.UsageError(
            f"`{name}` must be an array or the path of a .npy (NumPy) or .zarr (Zarr) array; "
            f"got {str(path)!r}."
        )
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        import zarr

        return zarr.open_array(store=str(path), mode="r")
    except Exception as e:  # missing, not an array, an object array...
        raise checks.UsageError(f"`{name}`={str(path)!r} cannot be read as an array: {e}") from e


def _accumulate(rows: _Rows, y: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(ΦᵀΦ / 4^e, ΦᵀY / 2^e, e)`` in float64, 2^e a power of two above Φ's largest magnitude.

    Each block is scaled by 2^-e as it is read (exact); where a block raises the largest magnitude,
    the sums so far are scaled down to the new e (exact but for underflow far below round-off).
    dsyrk accumulates the upper triangle in place: no d × d temporary.
    """
    n, width = rows.shape[0], math.prod(rows.shape[1:])
    gram = np.zeros((width, width), order="F")
    cross = np.zeros((width, y.shape[1]))
    exponent = None
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block, largest = rows.read(start, stop)
        if largest == 0:
            continue
        needed = math.frexp(largest)[1]
        if exponent is None or needed > exponent:
            if exponent is not None:
                np.ldexp(gram, 2 * (exponent - needed), out=gram)
                np.ldexp(cross, exponent - needed, out=cross)
            exponent = needed
        np.ldexp(block, -exponent, out=block)
        scipy.linalg.blas.dsyrk(1.0, block.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
        cross += block.T @ y[start:stop]
    _symmetrize_upper(gram)
    return gram, cross, 0 if exponent is None else exponent


def _symmetrize_upper(a: np.ndarray, step: int = 1024) -> None:
    """Copies `a`'s upper triangle to its lower one in place, by blocks of columns (no full temporary)."""
    for start in range(0, len(a), step):
        stop = min(start + step, len(a))
        a[stop:, start:stop] = a[start:stop, stop:].T
        diagonal = a[start:stop, start:stop]
        a[start:stop, start:stop] = np.triu(diagonal) + np.triu(diagonal, 1).T


def _apply(rows: _Rows, coefficients: np.ndarray, exponent: int, block_rows: int) -> np.ndarray:
    """``(Φ_* / 2^e) @ coefficients``, block by block of Φ_*'s rows."""
    m = rows.shape[0]
    out = np.empty((m, coefficients.shape[1]))
    for start in range(0, m, block_rows):
        stop = min(start + block_rows, m)
        block, _ = rows.read(start, stop)
        out[start:stop] = np.ldexp(block, -exponent, out=block) @ coefficients
    return out


def _ldexp(value: float, exponent: int) -> float:
    """``value · 2^exponent``, infinite beyond float64's range (a time that long is infinite time)."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _eps(dtype: np.dtype) -> float:
    """The relative precision of Φ's values for the round-off tolerances, as `predict` takes K's:
    its dtype's eps, but float32's at least."""
    eps = float(np.finfo(np.float32).eps)
    try:  # (integers and bools are exact; bfloat16 has a finfo only where ml_dtypes registered one)
        eps = max(eps, float(np.finfo(dtype).eps))
    except (TypeError, ValueError):
        pass
    return eps
