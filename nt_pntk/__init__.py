"""nt-pntk: the pseudo-NTK (Mohamadi, Bae & Sutherland, ICML 2023) for neural-tangents.

The public API, loaded on first use (``import nt_pntk`` itself imports neither
JAX nor NT, so the command line starts fast):

* kernels with NT's calling convention: `empirical_pntk_fn`, `empirical_kernel_fn`,
  `summed_logits_fn`, and one function for each other approximation of the eNTK
  (`empirical_trace_fn`, `empirical_single_logit_fn`, `empirical_projection_fn`,
  `empirical_entk_fn`), which are also typed objects in `nt_pntk.approximations`
  (`PNTK`, `Trace`, `SingleLogit`, `Projection`, `FullENTK`);
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

from nt_pntk._src import deprecations as _deprecations
from nt_pntk._src.compat import startup as _startup
from nt_pntk._version import __version__

_startup.activate()  # cheap: the XLA flag where needed, and NT's import hook

# name -> module that defines it (imported on first access)
_API = {
    "empirical_pntk_fn": "nt_pntk._src.kernels.pntk",
    "empirical_kernel_fn": "nt_pntk._src.kernels.pntk",
    "summed_logits_fn": "nt_pntk._src.kernels.pntk",
    "empirical_entk_fn": "nt_pntk._src.kernels.approximations",
    "empirical_trace_fn": "nt_pntk._src.kernels.approximations",
    "empirical_single_logit_fn": "nt_pntk._src.kernels.approximations",
    "empirical_projection_fn": "nt_pntk._src.kernels.approximations",
    "kernel_matrix": "nt_pntk._src.tiled.kernel_matrix",
    "feature_matrix": "nt_pntk._src.tiled.feature_matrix",
    "from_linen": "nt_pntk._src.adapters.linen",
    "from_nnx": "nt_pntk._src.adapters.nnx",
    "from_equinox": "nt_pntk._src.adapters.eqx",
}
_SUBMODULES = (
    "active_learning",
    "adapters",
    "approximations",
    "attribution",
    "cli",
    "compat",
    "experiments",
    "regression",
    "spectra",
    "tiled",
    "trainability",
)

__all__ = [
    "__version__",
    "active_learning",
    "adapters",
    "approximations",
    "attribution",
    "cli",
    "compat",
    "empirical_entk_fn",
    "empirical_kernel_fn",
    "empirical_pntk_fn",
    "empirical_projection_fn",
    "empirical_single_logit_fn",
    "empirical_trace_fn",
    "experiments",
    "feature_matrix",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "kernel_matrix",
    "regression",
    "spectra",
    "summed_logits_fn",
    "tiled",
    "trainability",
]
assert set(__all__) == {*_API, *_SUBMODULES, "__version__"}

# Old names (`nt_pntk.models`, `nt_pntk.PNTK`, ...): served with a warning from the one table.
_deprecated_getattr = _deprecations.module_getattr("nt_pntk")


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"nt_pntk.{name}")
    else:
        return _deprecated_getattr(name, stacklevel=3)  # warns (or raises an AttributeError)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs, which do not run `__getattr__`
    from nt_pntk import (
        active_learning,
        adapters,
        approximations,
        attribution,
        cli,
        compat,
        experiments,
        regression,
        spectra,
        tiled,
        trainability,
    )
    from nt_pntk._src.adapters.eqx import from_equinox
    from nt_pntk._src.adapters.linen import from_linen
    from nt_pntk._src.adapters.nnx import from_nnx
    from nt_pntk._src.kernels.approximations import (
        empirical_entk_fn,
        empirical_projection_fn,
        empirical_single_logit_fn,
        empirical_trace_fn,
    )
    from nt_pntk._src.kernels.pntk import empirical_kernel_fn, empirical_pntk_fn, summed_logits_fn
    from nt_pntk._src.tiled.kernel_matrix import kernel_matrix
