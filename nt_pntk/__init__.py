"""nt-pntk: the pseudo-NTK (Mohamadi, Bae & Sutherland, ICML 2023) for neural-tangents.

The public API, loaded on first use (``import nt_pntk`` itself imports neither
JAX nor NT, so the command line starts fast):

* kernels with NT's calling convention: `empirical_pntk_fn`, `empirical_kernel_fn`,
  `summed_logits_fn`, and the approximations of the eNTK as typed objects in
  `nt_pntk.approximations` (`PNTK`, `Trace`, `SingleLogit`, `Projection`,
  `FullENTK`), with one function each;
* using them: `nt_pntk.regression` (kernel regression with K ⊗ I), `nt_pntk.spectra`;
* kernels larger than memory: `kernel_matrix` (`nt_pntk.tiled`);
* experiments: `nt_pntk.experiments` (the model zoo, the digits, the validation
  of the paper's claims, Figure 1); the command line: `nt_pntk.cli`;
* `nt_pntk.compat`: what was adapted so that neural-tangents 0.6.5 runs on this JAX.

Importing nt_pntk (or neural_tangents, once nt_pntk is installed) adapts NT to the
running JAX without TensorFlow, and works around a miscompile of jaxlib 0.10.2's
CPU compiler; see `nt_pntk.compat`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nt_pntk._src.compat import startup as _startup
from nt_pntk._version import __version__

_startup.activate()  # cheap: the XLA flag where needed, and NT's import hook

# name -> module that defines it (imported on first access)
_API = {
    "empirical_pntk_fn": "nt_pntk._src.kernels.pntk",
    "empirical_kernel_fn": "nt_pntk._src.kernels.pntk",
    "summed_logits_fn": "nt_pntk._src.kernels.pntk",
    "KERNEL_NAMES": "nt_pntk._src.kernels.pntk",
    "Approximation": "nt_pntk._src.kernels.approximations",
    "EmpiricalKernelFn": "nt_pntk._src.kernels.approximations",
    "PNTK": "nt_pntk._src.kernels.approximations",
    "Trace": "nt_pntk._src.kernels.approximations",
    "SingleLogit": "nt_pntk._src.kernels.approximations",
    "Projection": "nt_pntk._src.kernels.approximations",
    "FullENTK": "nt_pntk._src.kernels.approximations",
    "APPROXIMATION_NAMES": "nt_pntk._src.kernels.approximations",
    "approximation_fn": "nt_pntk._src.kernels.approximations",
    "empirical_entk_fn": "nt_pntk._src.kernels.approximations",
    "empirical_trace_fn": "nt_pntk._src.kernels.approximations",
    "empirical_single_logit_fn": "nt_pntk._src.kernels.approximations",
    "empirical_projection_fn": "nt_pntk._src.kernels.approximations",
    "projection_directions": "nt_pntk._src.kernels.approximations",
    "kernel_matrix": "nt_pntk._src.tiled.kernel_matrix",
    "from_linen": "nt_pntk._src.adapters.linen",
    "from_nnx": "nt_pntk._src.adapters.nnx",
    "from_equinox": "nt_pntk._src.adapters.eqx",
}
_SUBMODULES = ("adapters", "approximations", "cli", "compat", "experiments", "regression", "spectra", "tiled")
# Old names that keep working for one release, with the new ones.
_DEPRECATED_MODULES = {"models": "nt_pntk.experiments.models", "data": "nt_pntk.experiments.data"}

__all__ = [
    "APPROXIMATION_NAMES",
    "KERNEL_NAMES",
    "PNTK",
    "Approximation",
    "EmpiricalKernelFn",
    "FullENTK",
    "Projection",
    "SingleLogit",
    "Trace",
    "__version__",
    "adapters",
    "approximation_fn",
    "approximations",
    "cli",
    "compat",
    "empirical_entk_fn",
    "empirical_kernel_fn",
    "empirical_pntk_fn",
    "empirical_projection_fn",
    "empirical_single_logit_fn",
    "empirical_trace_fn",
    "experiments",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "kernel_matrix",
    "projection_directions",
    "regression",
    "spectra",
    "summed_logits_fn",
    "tiled",
]
assert set(__all__) == {*_API, *_SUBMODULES, "__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"nt_pntk.{name}")
    elif name in _DEPRECATED_MODULES:
        return importlib.import_module(f"nt_pntk.{name}")  # warns on import (see that module)
    else:
        raise AttributeError(f"module 'nt_pntk' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs, which do not run `__getattr__`
    from nt_pntk import adapters, approximations, cli, compat, experiments, regression, spectra, tiled
    from nt_pntk._src.adapters.eqx import from_equinox
    from nt_pntk._src.adapters.linen import from_linen
    from nt_pntk._src.adapters.nnx import from_nnx
    from nt_pntk._src.kernels.approximations import (
        APPROXIMATION_NAMES,
        PNTK,
        Approximation,
        EmpiricalKernelFn,
        FullENTK,
        Projection,
        SingleLogit,
        Trace,
        approximation_fn,
        empirical_entk_fn,
        empirical_projection_fn,
        empirical_single_logit_fn,
        empirical_trace_fn,
        projection_directions,
    )
    from nt_pntk._src.kernels.pntk import (
        KERNEL_NAMES,
        empirical_kernel_fn,
        empirical_pntk_fn,
        summed_logits_fn,
    )
    from nt_pntk._src.tiled.kernel_matrix import kernel_matrix
