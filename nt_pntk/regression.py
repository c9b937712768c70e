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
        the argument and the expected shape); a negative or non-finite
        ``ridge``, a negative ``t``, a non-positive ``learning_rate``; and,
        for ``t=None``, a regularized kernel that is not positive definite
        (raise ``ridge``).
      TypeError: ``ridge``, ``t`` or ``learning_rate`` that is not a number.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import regression
      >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
      >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
      >>> np.allclose(regression.predict(k, y), y)  # interpolates at t=None, ridge=0
      True
    """
    k, y, k_star = _checked(k_train_train, y_train, k_test_train)
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
    k_reg = k + ridge * np.mean(np.diag(k)) * np.eye(len(k))
    if t is None:
        coefficients = _cholesky_solve(k_reg, y, ridge)
    else:
        coefficients = _gradient_flow_solve(k_reg, y, learning_rate * t / (n * out))
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


def _gradient_flow_solve(k_reg: np.ndarray, y: np.ndarray, time: float) -> np.ndarray:
    """(K + λI)^{-1} (I - exp(-time (K + λI))) Y by eigendecomposition.

    Eigenvalues are clipped at 0 (round-off of a PSD kernel) and the factor
    (1 - e^{-λ τ}) / λ takes its limit τ at λ = 0.
    """
    evals, evecs = scipy.linalg.eigh(k_reg)
    evals = np.maximum(evals, 0.0)
    safe = np.where(evals > 0, evals, 1.0)
    factors = np.where(evals > 0, -np.expm1(-evals * time) / safe, time)
    return evecs @ (factors[:, None] * (evecs.T @ y))


def _as_matrix(k: np.ndarray) -> np.ndarray:
    """(N1, N2, O, O) -> (N1·O, N2·O) with (example, output) rows."""
    n1, n2, o1, o2 = k.shape
    return k.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)


def _checked(k_train_train: Any, y_train: Any, k_test_train: Any) -> tuple[np.ndarray, ...]:
    """The arguments as float64 arrays of consistent shapes, or a ValueError naming the culprit."""
    k = np.asarray(k_train_train, np.float64)
    if k.ndim not in (2, 4) or k.shape[0] != k.shape[1] or (k.ndim == 4 and k.shape[2] != k.shape[3]):
        raise ValueError(
            "`k_train_train` must be an (N, N) kernel (used as K ⊗ I_O) or an (N, N, O, O) full "
            f"eNTK (NT's trace_axes=() layout); got shape {k.shape}."
        )
    n = k.shape[0]
    y = np.asarray(y_train, np.float64)
    expected = f"(N, O) = ({n}, O)" if k.ndim == 2 else f"(N, O) = ({n}, {k.shape[2]})"
    if y.ndim != 2 or y.shape[0] != n or (k.ndim == 4 and y.shape[1] != k.shape[2]):
        raise ValueError(
            f"`y_train` must have shape {expected} for a `k_train_train` of shape {k.shape}; got "
            f"shape {y.shape}. One-hot labels: `nt_pntk.data.one_hot(labels, O)`; a single output: "
            "`y[:, None]`."
        )
    if k_test_train is None:
        return k, y, k
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
    return k, y, k_star


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
