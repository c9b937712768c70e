r"""Spectral diagnostics: the eigenvalues of an N×N kernel K ⊗ I_O against those of the full eNTK.

The spectrum of :math:`K \otimes I_O` is that of :math:`K` with every
eigenvalue repeated O times, so its :math:`\lambda_\max`, :math:`\lambda_\min`
and condition number are :math:`K`'s. If eNTK ≈ pNTK ⊗ I_O (Mohamadi et al.,
2023), the eNTK's eigenvalues, sorted, come in near-equal groups of O close to
the pNTK's. The eNTK ``(N, N, O, O)`` (NT's ``trace_axes=()`` layout) is taken
as the NO×NO matrix with rows ordered (example, output).

Example:
  >>> import numpy as np
  >>> from nt_pntk import spectra
  >>> k = np.diag([3.0, 1.0])
  >>> entk = np.einsum("ab,op->abop", k, np.eye(2))  # exactly K ⊗ I_2
  >>> spectra.repeated_eigenvalue_errors(entk, k, top_k=4)
  array([0., 0., 0., 0.])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nt_pntk._src import checks, numerics


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """The eigenvalues of a symmetric kernel, in descending order (float64)."""

    eigenvalues: np.ndarray

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def condition_number(self) -> float:
        r"""λ_max / λ_min; ``inf`` when λ_min <= 0 (singular in float64)."""
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else float("inf")

    def top(self, k: int) -> np.ndarray:
        """The ``k`` largest eigenvalues, descending."""
        return self.eigenvalues[: checks.count("top_k", k, len(self.eigenvalues), "eigenvalues")]

    def repeated(self, times: int) -> Spectrum:
        r"""The spectrum of :math:`K \otimes I_\text{times}`: each eigenvalue ``times`` times."""
        return Spectrum(np.repeat(self.eigenvalues, checks.count("times", times, None, "eigenvalues")))


@dataclasses.dataclass(frozen=True)
class SpectralErrors:
    r"""Relative errors :math:`|a - r| / |r|` of an approximation's spectrum against a reference's.

    Attributes:
      lambda_max: of :math:`\lambda_\max`.
      lambda_min: of :math:`\lambda_\min`.
      condition_number: of the condition numbers (NaN if the reference's is ``inf``).
      top_k: of the ``top_k`` largest eigenvalues, one error each, descending.
    """

    lambda_max: float
    lambda_min: float
    condition_number: float
    top_k: np.ndarray


def spectrum(kernel: Any) -> Spectrum:
    r"""All eigenvalues of ``kernel``: an ``(N, N)`` kernel or an ``(N, N, O, O)`` eNTK (as NO×NO).

    .. math::
        \lambda_1 \ge \lambda_2 \ge \dots, \qquad
        \kappa = \lambda_\max / \lambda_\min,

    computed with ``numpy.linalg.eigvalsh`` in float64 on the symmetric part
    :math:`(K + K^\top)/2` (float32 kernels are symmetric only up to round-off).
    Complex kernels are refused, not cast (which would drop the imaginary part):
    the kernels of real networks are real, and a complex one's eigenvalues depend
    on a convention (Hermitian J Jᴴ, or complex symmetric J Jᵀ) an array does not
    tell.

    Args:
      kernel: an ``(N, N)`` or ``(N, N, O, O)`` array of real numbers, N and O
        at least 1.

    Returns:
      A `Spectrum`.

    Raises:
      ValueError: ``kernel`` of another shape, empty, or with NaN or infinite
        entries.
      TypeError: ``kernel`` not an array of real numbers (complex, strings).

    Example:
      >>> import numpy as np
      >>> from nt_pntk import spectra
      >>> s = spectra.spectrum(np.diag([4.0, 2.0, 1.0]))
      >>> s.lambda_max, s.lambda_min, s.condition_number, s.top(2)
      (4.0, 1.0, 4.0, array([4., 2.]))
    """
    return _spectrum("kernel", kernel)


def _spectrum(name: str, kernel: Any) -> Spectrum:
    """`spectrum`, its errors naming the argument `name`; a `Spectrum` passes through."""
    if isinstance(kernel, Spectrum):
        return kernel
    matrix = _as_matrix(name, kernel)
    # (halves first: the sum of two entries near float64's largest would overflow)
    return Spectrum(np.linalg.eigvalsh(matrix / 2 + matrix.T / 2)[::-1].copy())


def spectral_errors(reference: Any, approximation: Any, *, top_k: int) -> SpectralErrors:
    r"""The spectrum of ``approximation`` (⊗ I_O when N×N) against that of ``reference``.

    If ``approximation`` has O times fewer eigenvalues than ``reference`` (an
    N×N kernel against an ``(N, N, O, O)`` eNTK), it stands for :math:`K
    \otimes I_O`: each of its eigenvalues is repeated O times. Every error is
    :math:`|a - r| / |r|` with :math:`r` the reference's value.

    Args:
      reference: the eNTK ``(N, N, O, O)`` (or any kernel), or its `Spectrum`.
      approximation: an ``(N, N)`` kernel, a kernel of the reference's shape,
        or a `Spectrum`.
      top_k: how many of the largest eigenvalues to compare, between 1 and the
        reference's size (NO).

    Returns:
      `SpectralErrors`.

    Raises:
      ValueError: a kernel of a wrong shape, sizes where the reference's is not
        a multiple of the approximation's, or ``top_k`` out of range.
      TypeError: ``top_k`` not an int.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import spectra
      >>> entk = np.einsum("ab,op->abop", np.diag([2.0, 1.0]), np.diag([1.1, 1.0]))
      >>> e = spectra.spectral_errors(entk, np.diag([2.0, 1.0]), top_k=2)
      >>> float(round(e.lambda_max, 3)), e.top_k.round(3)
      (0.091, array([0.091, 0.   ]))
    """
    return _spectral_errors(reference, approximation, top_k, ("reference", "approximation"))


def _spectral_errors(
    reference: Any, approximation: Any, top_k: int, names: tuple[str, str]
) -> SpectralErrors:
    """`spectral_errors`, its errors naming the arguments `names`."""
    ref, approx = _spectrum(names[0], reference), _spectrum(names[1], approximation)
    n_ref, n_approx = len(ref.eigenvalues), len(approx.eigenvalues)
    if n_ref % n_approx:
        raise ValueError(
            f"`{names[0]}` has {n_ref} eigenvalues, not a multiple of the {n_approx} of `{names[1]}`; "
            "pass an (N, N, O, O) eNTK and an (N, N) kernel on the same N inputs (or kernels of equal size)."
        )
    approx = approx.repeated(n_ref // n_approx)
    k = checks.count("top_k", top_k, n_ref, "eigenvalues")
    cond = ref.condition_number
    return SpectralErrors(
        lambda_max=_relative(approx.lambda_max, ref.lambda_max),
        lambda_min=_relative(approx.lambda_min, ref.lambda_min),
        condition_number=float("nan") if np.isinf(cond) else _relative(approx.condition_number, cond),
        top_k=np.abs(approx.top(k) - ref.top(k)) / np.abs(ref.top(k)),
    )


def repeated_eigenvalue_errors(entk: Any, kernel: Any, *, top_k: int) -> np.ndarray:
    r"""Relative errors of the eNTK's ``top_k`` eigenvalues against ``kernel``'s, each repeated O times.

    .. math::
        e_i = \frac{|\lambda_i(K \otimes I_O) - \lambda_i(\Theta)|}{|\lambda_i(\Theta)|},
        \qquad i = 1, \dots, \texttt{top\_k},

    with eigenvalues in descending order; zero (up to round-off) when the
    eNTK is exactly :math:`K \otimes I_O`.

    Args:
      entk: the ``(N, N, O, O)`` eNTK :math:`\Theta`, or its `Spectrum`.
      kernel: the ``(N, N)`` kernel :math:`K` (e.g. the pNTK), or its `Spectrum`.
      top_k: number of eigenvalues, between 1 and NO.

    Returns:
      A float64 array of ``top_k`` relative errors.

    Raises:
      ValueError: as `spectral_errors`.
      TypeError: ``top_k`` not an int.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import spectra
      >>> k = np.array([[2.0, 0.5], [0.5, 1.0]])
      >>> entk = np.einsum("ab,op->abop", k, np.eye(3))
      >>> bool(np.all(spectra.repeated_eigenvalue_errors(entk, k, top_k=6) < 1e-12))
      True
    """
    return _spectral_errors(entk, kernel, top_k, ("entk", "kernel")).top_k


def _as_matrix(name: str, kernel: Any) -> np.ndarray:
    k = checks.real_array(name, kernel)
    if k.size and k.ndim == 2 and k.shape[0] == k.shape[1]:
        return k
    if k.size and k.ndim == 4 and k.shape[0] == k.shape[1] and k.shape[2] == k.shape[3]:
        return numerics.entk_matrix(k)
    raise ValueError(
        f"`{name}` must be a square (N, N) kernel or an (N, N, O, O) eNTK (NT's trace_axes=() layout), "
        f"N and O at least 1; got shape {k.shape}."
    )


def _relative(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if reference != 0 else float("nan")
