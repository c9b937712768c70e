"""Deprecated alias of `nt_pntk.experiments.data` (removed in the next release)."""

from nt_pntk._src import checks as _checks
from nt_pntk.experiments.data import *  # noqa: F403
from nt_pntk.experiments.data import __all__  # noqa: F401

_checks.deprecated("nt_pntk.data", "nt_pntk.experiments.data", stacklevel=2)
