r"""The one home of the package's numerics on kernels: relative errors and the eNTK as a matrix.

Every figure the package reports as an error is one of these, in float64:

* `relative_error`: :math:`\lVert A - B \rVert_F / \lVert A \rVert_F`, A the reference;
* `entk_relative_error`: the same for an N×N kernel K used as :math:`K \otimes I_O`
  against the (N1, N2, O, O) eNTK, without forming the NO×NO matrices;
* `entk_matrix`: the (N1, N2, O, O) eNTK (NT's ``trace_axes=()`` layout) as the
  (N1·O, N2·O) matrix with rows ordered (example, output).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def relative_error(reference: Any, value: Any) -> float:
    r"""``‖reference − value‖_F / ‖reference‖_F`` in float64 (arrays of the same shape).

    Raises:
      ValueError: shapes that differ.

    Example:
      >>> from nt_pntk._src import numerics
      >>> numerics.relative_error([3.0, 4.0], [3.0, 3.0])
      0.2
    """
    reference, value = np.asarray(reference, np.float64), np.asarray(value, np.float64)
    if reference.shape != value.shape:
        raise ValueError(f"`value` must have the reference's shape {reference.shape}; got {value.shape}.")
    return float(np.linalg.norm(reference - value) / np.linalg.norm(reference))


def entk_matrix(entk: Any) -> np.ndarray:
    """The (N1, N2, O, O) eNTK as the (N1·O, N2·O) matrix with rows ordered (example, output).

    Raises:
      ValueError: an array that is not (N1, N2, O, O).
    """
    entk = np.asarray(entk)
    check_entk("entk", entk)
    n1, n2, o, _ = entk.shape
    return entk.transpose(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def check_entk(name: str, entk: np.ndarray) -> None:
    if entk.ndim != 4 or entk.shape[2] != entk.shape[3]:
        raise ValueError(
            f"`{name}` must be an (N1, N2, O, O) eNTK (NT's trace_axes=() layout); got shape {entk.shape}."
        )


def entk_relative_error(entk: Any, kernel: Any) -> float:
    r"""The relative Frobenius error of ``kernel`` ⊗ I_O against the full eNTK.

    .. math::
        \frac{\lVert \Theta - K \otimes I_O \rVert_F}{\lVert \Theta \rVert_F}
        = \frac{\big(\lVert \Theta \rVert_F^2 - 2 \sum_{ab} K_{ab} \operatorname{tr}\Theta(x_a, x_b)
          + O \lVert K \rVert_F^2\big)^{1/2}}{\lVert \Theta \rVert_F},

    computed in float64 as the norm of the difference (exact, no cancellation); a
    ``kernel`` of the eNTK's own shape is compared as is.

    Args:
      entk: the ``(N1, N2, O, O)`` eNTK :math:`\Theta`.
      kernel: an ``(N1, N2)`` kernel :math:`K`, or an ``(N1, N2, O, O)`` one.

    Returns:
      The relative error, a float.

    Raises:
      ValueError: shapes other than these.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import approximations
      >>> k = np.ones((2, 2))
      >>> approximations.relative_error(np.einsum("ab,op->abop", k, np.eye(3)), k)
      0.0
    """
    e = np.asarray(entk, np.float64)
    k = np.asarray(kernel, np.float64)
    check_entk("entk", e)
    if k.shape == e.shape:
        return relative_error(e, k)
    if k.shape != e.shape[:2]:
        raise ValueError(
            f"`kernel` must have shape {e.shape[:2]} (used as K ⊗ I_O) or {e.shape} for an `entk` of "
            f"shape {e.shape}; got shape {k.shape}."
        )
    difference = e.copy()
    outputs = np.arange(e.shape[2])
    difference[:, :, outputs, outputs] -= k[:, :, None]  # Θ − K ⊗ I_O, block by block
    return float(np.linalg.norm(difference) / np.linalg.norm(e))
