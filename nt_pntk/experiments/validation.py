"""The validation of the paper's claims: configurations, the sweep, the fits and the report.

``nt-pntk validate`` runs it; see ``validation/README.md``.
"""

from nt_pntk._src.experiments.validation.config import Config, ConfigError, load, parse
from nt_pntk._src.experiments.validation.fits import fit_slopes
from nt_pntk._src.experiments.validation.report import write_report
from nt_pntk._src.experiments.validation.sweep import run_sweep

__all__ = ["Config", "ConfigError", "fit_slopes", "load", "parse", "run_sweep", "write_report"]
