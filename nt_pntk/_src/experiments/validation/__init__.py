"""Theory validation: the paper's convergence claims, measured on real networks.

`nt-pntk validate --config quick|paper|FILE.toml --output DIR` sweeps widths (and
output counts) for the zoo's architectures, records per-cell metrics, fits
log-log slopes against width with bootstrap confidence intervals, and writes a
CSV, a Markdown report and plots. See `validation/README.md`.
"""

from nt_pntk._src.experiments.validation.config import Config, ConfigError, load, parse
from nt_pntk._src.experiments.validation.fits import fit_slopes
from nt_pntk._src.experiments.validation.sweep import run_sweep

__all__ = ["Config", "ConfigError", "fit_slopes", "load", "parse", "run_sweep"]
