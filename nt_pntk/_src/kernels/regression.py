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

Singular kernels (a repeated input, more inputs than features) are well-defined
at every ``t``: eigenvalues of :math:`K + \lambda I` within round-off of zero
count as zero, their directions contribute nothing (for a kernel, :math:`K_*`
vanishes on :math:`K`'s null space), and infinite time gives the pseudo-inverse
:math:`K_* K^+ Y`, the minimum-norm interpolant that gradient flow from zero
converges to. Infinite time switches from Cholesky to the eigendecomposition
where :math:`K + \lambda I` is that close to singular. Here NT differs: its
Cholesky gives NaN and its eigenbasis divides round-off by round-off (or
multiplies it by ``t``). On kernels well away from singular both agree.

Only real kernels and targets: the kernels of real networks are real, and for
complex ones NT's predictions (an eigenbasis used without conjugation) are not
those of gradient flow; complex arrays are refused rather than cast (which
drops the imaginary part).

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
import scipy.linalg.lapack

from nt_pntk._src import checks, numerics


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
      y_train: ``(N, O)`` targets, e.g. one-hot labels (`nt_pntk.experiments.data.centred_one_hot`)
        or real values.
      k_test_train: ``(M, N)`` (resp. ``(M, N, O, O)``) kernel between test and
        training inputs; ``None`` predicts on the training inputs
        (``k_test_train = k_train_train``).
      ridge: non-negative ridge, relative to the mean diagonal of
        ``k_train_train``, as NT's ``diag_reg`` with
        ``diag_reg_absolute_scale=False``.
      t: training time, in the units of `nt.predict.gradient_descent_mse`;
        ``None`` (or ``inf``) for infinite time. A product ``learning_rate · t``
        beyond float64's range is infinite time.
      learning_rate: the learning rate :math:`\eta` multiplying ``t``.

    Returns:
      float64 predictions of shape ``(M, O)`` (``(N, O)`` when
      ``k_test_train`` is ``None``).

    Raises:
      ValueError: kernels or targets of inconsistent shapes (the message names
        the argument and the expected shape) or with NaN or infinite entries; a
        ``k_train_train`` that is not symmetric beyond round-off (relative
        asymmetry ‖K − Kᵀ‖/‖K‖ above 100·eps, eps of its dtype but float32's at
        least); a negative or non-finite ``ridge``, a negative or NaN ``t``, a
        non-positive or non-finite ``learning_rate``; a regularized kernel with
        an eigenvalue below −max(N, 100)·eps·λmax (beyond round-off; raise
        ``ridge``). Eigenvalues within ±max(N, 100)·eps·λmax count as zero.
      TypeError: ``ridge``, ``t`` or ``learning_rate`` that is not a real number
        (bools and strings included); kernels or targets that are not arrays of
        real numbers (strings, objects, complex numbers).

    Example:
      >>> import numpy as np
      >>> from nt_pntk import regression
      >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
      >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
      >>> np.allclose(regression.predict(k, y), y)  # interpolates at t=None, ridge=0
      True
    """
    k, y, k_star, eps = _checked(k_train_train, y_train, k_test_train)
    ridge, t, learning_rate = checked_options(ridge, t, learning_rate)
    n, outputs = y.shape
    full = k.ndim == 4
    if full:
        k, k_star, y = numerics.entk_matrix(k), numerics.entk_matrix(k_star), y.reshape(n * outputs, 1)
    # Entries of at most 1 by a power of two, which scales exactly: the norms, the mean diagonal and
    # the ridge cannot overflow (ridge=1e308). Gradient flow on K/s for s·τ is gradient flow on K for τ.
    scale = _power_of_two_above(float(np.max(np.abs(k))))
    k, k_star = k / scale, k_star / scale
    _check_symmetric(k, eps, full)
    mean_diagonal = float(np.mean(np.diag(k)))
    k_reg = k + ridge * mean_diagonal * np.eye(len(k))
    # An η·t beyond float64's range is infinite time, the limit it stands for (e^{-λτ} is 0 either way).
    time = math.inf if t is None else learning_rate * (t * scale) / (n * outputs)
    tolerance = max(len(k), 100) * eps
    coefficients = _cholesky_solve(k_reg, y, tolerance) if math.isinf(time) else None
    if coefficients is None:
        evals, evecs = scipy.linalg.eigh(k_reg)
        _check_semi_definite(evals, ridge, mean_diagonal, tolerance, scale)
        coefficients = _gradient_flow_solve(evals, evecs, y, time, tolerance)
    prediction = k_star @ coefficients
    return prediction.reshape(-1, outputs)


def checked_options(ridge: Any, t: Any, learning_rate: Any) -> tuple[float, float | None, float]:
    """`predict`'s options ``ridge``, ``t`` and ``learning_rate`` as floats (``t`` None or a float)."""
    ridge = checks.non_negative("ridge", ridge)
    if t is not None:
        t = checks.real("t", t)
        if not t >= 0:  # also NaN
            raise checks.UsageError(
                f"`t` must be a time >= 0, or None (or inf) for infinite time; got t={t!r}."
            )
    learning_rate = checks.positive("learning_rate", learning_rate)
    return ridge, t, learning_rate


def _power_of_two_above(value: float) -> float:
    """The power of two 2^e with value / 2^e in [0.5, 1); 1 for 0."""
    return math.ldexp(1.0, math.frexp(value)[1]) if value > 0 else 1.0


def _cholesky_solve(k_reg: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray | None:
    """(K + λI)^{-1} Y by Cholesky, or None where K + λI may have eigenvalues within round-off
    (`tolerance` × λmax) of 0 or below: `_gradient_flow_solve` then drops them.

    LAPACK's estimate of 1/(‖A‖₁‖A⁻¹‖₁) is at most λmin/λmax (‖A‖₂ <= ‖A‖₁ for a symmetric A)
    and overestimates it by a small factor at worst, hence the margin of 10.
    """
    try:
        factor = scipy.linalg.cho_factor(k_reg, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    rcond, _ = scipy.linalg.lapack.dpocon(factor[0], np.linalg.norm(k_reg, 1), uplo="L")
    if not rcond > 10 * tolerance:
        return None
    return scipy.linalg.cho_solve(factor, y, check_finite=False)


def _check_semi_definite(
    evals: np.ndarray, ridge: float, mean_diagonal: float, tolerance: float, scale: float
) -> None:
    """A ValueError when the regularized kernel's eigenvalues `evals` (of K / `scale`) go negative
    beyond round-off.

    Round-off moves the eigenvalues of a PSD matrix by up to about N·eps·λmax (the bound of
    numpy's matrix_rank), 100·eps at least for small N: `tolerance`. Beyond it, gradient flow
    diverges along the negative eigenvalue's direction, which clipping it at 0 would hide.
    """
    largest = float(np.max(np.abs(evals)))
    if not evals[0] < -tolerance * largest:
        return
    fix = "pass a larger `ridge`"
    if mean_diagonal > 0:  # a ridge that lifts the most negative eigenvalue above 0 twice over
        fix += f", e.g. ridge={float(f'{ridge + 2 * -evals[0] / mean_diagonal:.1g}'):g}"
    fix += " (relative to the mean diagonal)"
    raise ValueError(
        f"`k_train_train` plus the ridge (ridge={ridge} × mean diagonal) must be positive semi-definite; "
        f"its most negative eigenvalue is {evals[0] * scale:.3g}, {-evals[0] / largest:.2g} × its largest "
        f"magnitude {largest * scale:.3g}, beyond round-off ({tolerance:.1g} × it). Check that it is a "
        f"kernel (a Gram matrix), or {fix}."
    )


def _gradient_flow_solve(
    evals: np.ndarray, evecs: np.ndarray, y: np.ndarray, time: float, tolerance: float
) -> np.ndarray:
    """(K + λI)^{+} (I - exp(-time (K + λI))) Y from the eigendecomposition of K + λI.

    Eigenvalues within round-off of 0 (at most `tolerance` × λmax; `_check_semi_definite` refused
    those below) count as 0, and their directions contribute nothing at any time: for a kernel,
    K_* vanishes on K's null space, so only round-off would be left there, multiplied by the time
    (|f| ≈ 1e267 at t=1e300) or by 1/λ. At time=inf this is the pseudo-inverse K_* K⁺ Y, the
    minimum-norm interpolant that gradient flow from zero converges to.
    """
    keep = evals > tolerance * np.max(np.abs(evals))
    evals, evecs = evals[keep], evecs[:, keep]
    with np.errstate(over="ignore"):  # λ·time past float64's range: e^{-λ·time} = 0, as for inf
        factors = -np.expm1(-evals * time) / evals  # 1 / λ at time=inf
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


def _checked(k_train_train: Any, y_train: Any, k_test_train: Any) -> tuple[np.ndarray, ...]:
    """The arguments as float64 arrays of consistent shapes, or a ValueError naming the culprit.

    Also returns the relative precision of `k_train_train`'s values for the round-off tolerances:
    its dtype's eps, but float32's at least, as a float64 kernel is often a float32 one cast
    (JAX computes in float32 by default, and the validation sweep casts its kernels).
    """
    dtype = np.asarray(k_train_train).dtype
    k = checks.real_array("k_train_train", k_train_train)
    eps = float(np.finfo(np.float32).eps)
    try:  # (integer kernels are exact; bfloat16 has a finfo only where ml_dtypes registered one)
        eps = max(eps, float(np.finfo(dtype).eps))
    except (TypeError, ValueError):
        pass
    square = k.ndim in (2, 4) and k.shape[0] == k.shape[1] and (k.ndim == 2 or k.shape[2] == k.shape[3])
    if not square or 0 in k.shape:
        raise ValueError(
            "`k_train_train` must be an (N, N) kernel (used as K ⊗ I_O) or an (N, N, O, O) full "
            f"eNTK (NT's trace_axes=() layout), N and O at least 1; got shape {k.shape}."
        )
    n = k.shape[0]
    y = checks.real_array("y_train", y_train)
    expected = f"(N, O) = ({n}, O)" if k.ndim == 2 else f"(N, O) = ({n}, {k.shape[2]})"
    if y.ndim != 2 or y.shape[0] != n or (k.ndim == 4 and y.shape[1] != k.shape[2]) or y.size == 0:
        raise ValueError(
            f"`y_train` must have shape {expected} for a `k_train_train` of shape {k.shape}, O >= 1; got "
            f"shape {y.shape}. One-hot labels: `nt_pntk.experiments.data.centred_one_hot(labels, O)`; "
            "a single output: `y[:, None]`."
        )
    if k_test_train is None:
        return k, y, k, eps
    k_star = checks.real_array("k_test_train", k_test_train)
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
    return k, y, k_star, eps
