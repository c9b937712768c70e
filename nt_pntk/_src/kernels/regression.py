r"""Kernel regression with an N×N kernel used as K ⊗ I_O, or with the full (N, N, O, O) eNTK.

An N×N kernel :math:`K` (the pNTK or another approximation) stands for the
NO×NO kernel :math:`K \otimes I_O`: the O outputs are regressed independently,
all with the same N×N system, so the solve costs one Cholesky factorization of
an N×N matrix (:math:`N^3/3`) instead of an NO×NO one (:math:`O^3` times more).

The predictions are those of `nt.predict.gradient_descent_mse` started from
zero outputs (``fx_train_0 = fx_test_0 = 0``): gradient flow on the loss
:math:`\frac{1}{2NO}\lVert f - Y\rVert^2` for a time ``learning_rate · t``,

.. math::
    f_\text{test}(t) = K_{*} (K + \lambda I)^{-1}
        \big(I - e^{-\eta t (K + \lambda I) / (NO)}\big) Y,
    \qquad f_\text{test}(\infty) = K_{*} (K + \lambda I)^{-1} Y,

with the ridge :math:`\lambda = \texttt{ridge} \cdot \operatorname{mean}
\operatorname{diag}(K)`, *relative* to the mean diagonal like NT's default
``diag_reg`` (so the same ``ridge`` suits kernels of any scale, and K ⊗ I and
the eNTK get the same relative regularization). ``t=None`` (infinite time) is
solved with a Cholesky factorization, finite ``t`` with an eigendecomposition.
All the linear algebra runs in float64 NumPy/SciPy, whatever the input dtype.

Example:
  >>> import numpy as np
  >>> from nt_pntk import regression
  >>> x = np.random.default_rng(0).standard_normal((6, 3))
  >>> k = x @ x.T + np.eye(6)  # an N×N kernel, N = 6
  >>> y = np.eye(4)[[0, 1, 2, 3, 0, 1]]  # one-hot targets, O = 4
  >>> regression.predict(k, y, k[:2], ridge=1e-3).shape
  (2, 4)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg


def predict(
    k_train_train: Any,
    y_train: Any,
    k_test_train: Any = None,
    *,
    ridge: float = 0.0,
    t: float | None = None,
    learning_rate: float = 1.0,
) -> np.ndarray:
    r"""Kernel-regression predictions with ``k_train_train`` as :math:`K \otimes I_O` or as the full eNTK.

    .. math::
        f_* = K_{*} (K + \lambda I)^{-1} \big(I - e^{-\eta t (K + \lambda I)/(NO)}\big) Y,
        \qquad \lambda = \texttt{ridge} \cdot \operatorname{mean} \operatorname{diag}(K),

    (the last factor is :math:`I` for ``t=None``). For an ``(N, N)`` kernel the
    O columns of :math:`Y` share one N×N solve (:math:`K \otimes I_O` is never
    formed); for an ``(N, N, O, O)`` eNTK (NT's ``trace_axes=()`` layout) the
    system is the NO×NO matrix with rows ordered (example, output).

    Args:
      k_train_train: ``(N, N)`` kernel :math:`K` (used as :math:`K \otimes
        I_O`) or ``(N, N, O, O)`` full eNTK, symmetric positive semi-definite.
      y_train: ``(N, O)`` targets, e.g. one-hot labels (`nt_pntk.data.one_hot`)
        or real values.
      k_test_train: ``(M, N)`` (resp. ``(M, N, O, O)``) kernel between test and
        training inputs; ``None`` predicts on the training inputs
        (``k_test_train = k_train_train``).
      ridge: non-negative ridge, relative to the mean diagonal of
        ``k_train_train``, as NT's ``diag_reg`` with
        ``diag_reg_absolute_scale=False``.
      t: training time, in the units of `nt.predict.gradient_descent_mse`;
        ``None`` (or ``inf``) for infinite time.
      learning_rate: the learning rate :math:`\eta` multiplying ``t``.

    Returns:
      float64 predictions of shape ``(M, O)`` (``(N, O)`` when
      ``k_test_train`` is ``None``).

    Raises:
      ValueError: kernels or targets of inconsistent shapes (the message names
        the argument and the expected shape) or with NaN or infinite entries; a
        ``k_train_train`` that is not symmetric beyond round-off (relative
        asymmetry ‖K − Kᵀ‖/‖K‖ above 100·eps, eps of its dtype but float32's at
        least); a negative or non-finite ``ridge``, a negative ``t``, a
        non-positive ``learning_rate``; for ``t=None``, a regularized kernel that
        is not positive definite, and for a finite ``t`` one with an eigenvalue
        below −max(N, 100)·eps·λmax (round-off; raise ``ridge``).
      TypeError: ``ridge``, ``t`` or ``learning_rate`` that is not a number.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import regression
      >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
      >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
      >>> np.allclose(regression.predict(k, y), y)  # interpolates at t=None, ridge=0
      True
    """
    k, y, k_star, eps = _checked(k_train_train, y_train, k_test_train)
    ridge = _non_negative("ridge", ridge)
    if t is not None:
        t = _real("t", t)
        if not t >= 0:  # also NaN
            raise ValueError(f"`t` must be a time >= 0, or None (or inf) for infinite time; got t={t!r}.")
        t = None if math.isinf(t) else t
    learning_rate = _positive("learning_rate", learning_rate)
    n, out = y.shape
    full = k.ndim == 4
    if full:
        k, k_star, y = _as_matrix(k), _as_matrix(k_star), y.reshape(n * out, 1)
    _check_symmetric(k, eps, full)
    mean_diagonal = float(np.mean(np.diag(k)))
    k_reg = k + ridge * mean_diagonal * np.eye(len(k))
    if t is None:
        coefficients = _cholesky_solve(k_reg, y, ridge)
    else:
        evals, evecs = scipy.linalg.eigh(k_reg)
        _check_semi_definite(evals, ridge, mean_diagonal, eps)
        coefficients = _gradient_flow_solve(evals, evecs, y, learning_rate * t / (n * out))
    prediction = k_star @ coefficients
    return prediction.reshape(-1, out)


def _cholesky_solve(k_reg: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """(K + λI)^{-1} Y by Cholesky."""
    try:
        factor = scipy.linalg.cho_factor(k_reg, lower=True, check_finite=True)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"`k_train_train` plus the ridge (ridge={ridge} × mean diagonal) is not positive "
            "definite, so the regression has no unique solution; pass a larger `ridge`, e.g. "
            "ridge=1e-3 (relative to the mean diagonal)."
        ) from None
    return scipy.linalg.cho_solve(factor, y, check_finite=False)


def _check_semi_definite(evals: np.ndarray, ridge: float, mean_diagonal: float, eps: float) -> None:
    """A ValueError when the regularized kernel's eigenvalues `evals` go negative beyond round-off.

    Round-off moves the eigenvalues of a PSD matrix by up to about N·eps·λmax (the bound of
    numpy's matrix_rank), 100·eps at least for small N. Beyond it, gradient flow diverges
    along the negative eigenvalue's direction, which clipping it at 0 would hide.
    """
    tolerance = max(len(evals), 100) * eps
    scale = float(np.max(np.abs(evals)))
    if not evals[0] < -tolerance * scale:
        return
    fix = "pass a larger `ridge`"
    if mean_diagonal > 0:  # a ridge that lifts the most negative eigenvalue above 0 twice over
        fix += f", e.g. ridge={float(f'{ridge + 2 * -evals[0] / mean_diagonal:.1g}'):g}"
    fix += " (relative to the mean diagonal)"
    raise ValueError(
        f"`k_train_train` plus the ridge (ridge={ridge} × mean diagonal) must be positive semi-definite "
        f"for a finite `t`; its most negative eigenvalue is {evals[0]:.3g}, {-evals[0] / scale:.2g} × its "
        f"largest magnitude {scale:.3g}, beyond round-off ({tolerance:.1g} × it). Check that it is a kernel "
        f"(a Gram matrix), or {fix}."
    )


def _gradient_flow_solve(evals: np.ndarray, evecs: np.ndarray, y: np.ndarray, time: float) -> np.ndarray:
    """(K + λI)^{-1} (I - exp(-time (K + λI))) Y from the eigendecomposition of K + λI.

    Eigenvalues are clipped at 0 (round-off of a PSD kernel: `_check_semi_definite`) and
    the factor (1 - e^{-λ τ}) / λ takes its limit τ at λ = 0.
    """
    evals = np.maximum(evals, 0.0)
    safe = np.where(evals > 0, evals, 1.0)
    factors = np.where(evals > 0, -np.expm1(-evals * time) / safe, time)
    return evecs @ (factors[:, None] * (evecs.T @ y))


def _check_symmetric(k: np.ndarray, eps: float, full: bool) -> None:
    """A ValueError for a `k_train_train` (as an N×N or NO×NO matrix) that is not symmetric.

    Cholesky and eigh read one triangle only, so a non-symmetric kernel would give a silently
    wrong answer. The tolerance, 100·eps, admits round-off (NT's implementations 2 and 3 give
    JAX float32 kernels an asymmetry of about 1e-7) and catches wrong arguments (a test-train
    block, an eNTK in another layout), whose asymmetry is of order 1.
    """
    norm = np.linalg.norm(k)
    asymmetry = np.linalg.norm(k - k.T) / norm if norm > 0 else 0.0
    tolerance = 100 * eps
    if asymmetry > tolerance:
        transpose, layout = (
            ("K.transpose(1, 0, 3, 2)", "an (N, N, O, O) eNTK (NT's trace_axes=() layout, not (N, O, N, O))")
            if full
            else ("K.T", "an (N, N) kernel of the training inputs with themselves")
        )
        raise ValueError(
            f"`k_train_train` must be symmetric, {layout}; its relative asymmetry "
            f"‖K − Kᵀ‖/‖K‖ is {asymmetry:.3g}, above round-off ({tolerance:.1g}). If it is a kernel "
            f"with round-off errors, symmetrize it: (K + {transpose}) / 2."
        )


def _as_matrix(k: np.ndarray) -> np.ndarray:
    """(N1, N2, O, O) -> (N1·O, N2·O) with (example, output) rows."""
    n1, n2, o1, o2 = k.shape
    return k.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)


def _checked(k_train_train: Any, y_train: Any, k_test_train: Any) -> tuple[np.ndarray, ...]:
    """The arguments as float64 arrays of consistent shapes, or a ValueError naming the culprit.

    Also returns the relative precision of `k_train_train`'s values for the round-off tolerances:
    its dtype's eps, but float32's at least, as a float64 kernel is often a float32 one cast
    (JAX computes in float32 by default, and the validation sweep casts its kernels).
    """
    k = np.asarray(k_train_train)
    eps = float(np.finfo(np.float32).eps)
    try:  # (integer kernels are exact; bfloat16 has a finfo only where ml_dtypes registered one)
        eps = max(eps, float(np.finfo(k.dtype).eps))
    except (TypeError, ValueError):
        pass
    k = k.astype(np.float64, copy=False)
    square = k.ndim in (2, 4) and k.shape[0] == k.shape[1] and (k.ndim == 2 or k.shape[2] == k.shape[3])
    if not square or 0 in k.shape:
        raise ValueError(
            "`k_train_train` must be an (N, N) kernel (used as K ⊗ I_O) or an (N, N, O, O) full "
            f"eNTK (NT's trace_axes=() layout), N and O at least 1; got shape {k.shape}."
        )
    n = k.shape[0]
    y = np.asarray(y_train, np.float64)
    expected = f"(N, O) = ({n}, O)" if k.ndim == 2 else f"(N, O) = ({n}, {k.shape[2]})"
    if y.ndim != 2 or y.shape[0] != n or (k.ndim == 4 and y.shape[1] != k.shape[2]):
        raise ValueError(
            f"`y_train` must have shape {expected} for a `k_train_train` of shape {k.shape}; got "
            f"shape {y.shape}. One-hot labels: `nt_pntk.data.centred_one_hot(labels, O)`; a single output: "
            "`y[:, None]`."
        )
    for name, array in (("k_train_train", k), ("y_train", y)):
        _check_finite(name, array)
    if k_test_train is None:
        return k, y, k, eps
    k_star = np.asarray(k_test_train, np.float64)
    if k.ndim == 2:
        ok, expected = k_star.ndim == 2 and k_star.shape[1] == n, f"(M, {n})"
    else:
        ok = k_star.ndim == 4 and k_star.shape[1:] == k.shape[1:]
        expected = f"(M, {', '.join(map(str, k.shape[1:]))})"
    if not ok:
        raise ValueError(
            f"`k_test_train` must have shape {expected} (test inputs × training inputs) for a "
            f"`k_train_train` of shape {k.shape}; got shape {k_star.shape}."
        )
    _check_finite("k_test_train", k_star)
    return k, y, k_star, eps


def _check_finite(name: str, array: np.ndarray) -> None:
    bad = np.size(array) - np.count_nonzero(np.isfinite(array))
    if bad:
        raise ValueError(
            f"`{name}` must be finite; it has {bad} NaN or infinite entries of {np.size(array)}."
        )


def _non_negative(name: str, value: Any) -> float:
    value = _real(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0; got {name}={value!r}.")
    return value


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0; got {name}={value!r}.")
    return value


def _real(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number; got {value!r}.") from None
