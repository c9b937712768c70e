"""nt-pntk: the pseudo-NTK (Mohamadi, Bae & Sutherland, ICML 2023) for neural-tangents.

``import nt_pntk`` first makes ``neural_tangents`` 0.6.5 importable on current JAX
without TensorFlow (see ``nt_pntk._nt_compat``).
"""

from nt_pntk import _nt_compat, _xla_cpu

_xla_cpu.apply()  # before JAX starts its CPU backend: jaxlib 0.10.2 miscompiles otherwise
_nt_compat.install()

from nt_pntk import approximations, regression, spectra  # noqa: E402
from nt_pntk._pntk import (  # noqa: E402  (the import hook must be in place first)
    KERNEL_NAMES,
    empirical_kernel_fn,
    empirical_pntk_fn,
    summed_logits_fn,
)
from nt_pntk.approximations import (  # noqa: E402
    APPROXIMATION_NAMES,
    approximation_fn,
    empirical_entk_fn,
    empirical_projection_fn,
    empirical_single_logit_fn,
    empirical_trace_fn,
    projection_directions,
)
from nt_pntk.tiled import kernel_matrix  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "APPROXIMATION_NAMES",
    "KERNEL_NAMES",
    "approximation_fn",
    "approximations",
    "empirical_entk_fn",
    "empirical_kernel_fn",
    "empirical_pntk_fn",
    "empirical_projection_fn",
    "empirical_single_logit_fn",
    "empirical_trace_fn",
    "kernel_matrix",
    "projection_directions",
    "regression",
    "spectra",
    "summed_logits_fn",
]
