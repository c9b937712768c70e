"""Log-log slopes of each metric against width, with bootstrap intervals over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nt_pntk._src.experiments.validation.metrics import EXPECTED_SLOPES

GROUP = ["architecture", "data", "out", "phase"]


def _slopes(log_w: np.ndarray, log_m: np.ndarray) -> np.ndarray:
    """Least-squares slopes of `log_m[..., seed, width]` against `log_w[width]`."""
    dx = log_w - log_w.mean()
    dy = log_m - log_m.mean(axis=(-2, -1), keepdims=True)
    return np.sum(dx * dy, axis=(-2, -1)) / (log_m.shape[-2] * np.sum(dx**2))


def fit_slopes(
    table: pd.DataFrame, *, bootstrap: int = 1000, band: tuple[float, float] = (-0.65, -0.35), seed: int = 0
) -> pd.DataFrame:
    """Slope of log(metric) against log(width) per architecture, data, O, phase and metric.

    The slope is the least-squares fit over all (seed, width) points; its 95%
    interval resamples the seeds with replacement within each width
    (`bootstrap` times). A claim passes when the slope lies in `band` for
    metrics predicted to fall as n^-1/2, or in `band` scaled by 2 for the
    squared off-diagonal mass (n^-1).

    Returns:
      One row per fit: the group columns, ``metric``, ``slope``, ``ci_low``,
      ``ci_high``, ``expected`` and ``passed`` (None where theory claims nothing).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for group, part in table.groupby(GROUP, sort=True):
        for metric, expected in EXPECTED_SLOPES.items():
            grid = part.pivot_table(index="seed", columns="width", values=metric, aggfunc="first")
            values = grid.to_numpy(float)
            if grid.shape[1] < 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
                continue  # too few widths, a missing seed, or a zero accuracy: no power law
            log_w, log_m = np.log(grid.columns.to_numpy(float)), np.log(values)
            seeds = log_m.shape[0]
            picks = rng.integers(0, seeds, size=(bootstrap, seeds, len(log_w)))
            resampled = np.take_along_axis(log_m[None], picks, axis=1)
            low, high = np.percentile(_slopes(log_w, resampled), [2.5, 97.5])
            slope = float(_slopes(log_w, log_m))
            scale = 1.0 if expected is None else expected / -0.5
            passed = None if expected is None else bool(band[0] * scale <= slope <= band[1] * scale)
            rows.append(
                dict(zip(GROUP, group, strict=True))
                | {"metric": metric, "slope": slope, "ci_low": float(low), "ci_high": float(high)}
                | {"expected": expected, "passed": passed, "widths": len(log_w), "seeds": seeds}
            )
    return pd.DataFrame(rows)
