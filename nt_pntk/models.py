"""Deprecated alias of `nt_pntk.experiments.models` (see `nt_pntk._src.deprecations`)."""

from nt_pntk._src import deprecations as _deprecations
from nt_pntk.experiments.models import *  # noqa: F403
from nt_pntk.experiments.models import __all__  # noqa: F401

_deprecations.warn_module(__name__)
__getattr__ = _deprecations.alias_module_getattr(__name__)
