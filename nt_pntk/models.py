"""Deprecated alias of `nt_pntk.experiments.models` (removed in the next release)."""

from nt_pntk._src import checks as _checks
from nt_pntk.experiments.models import *  # noqa: F403
from nt_pntk.experiments.models import __all__  # noqa: F401

_checks.deprecated("nt_pntk.models", "nt_pntk.experiments.models", stacklevel=2)
