r"""Log-log slopes of each metric against width, bootstrap intervals, verdicts, and the O scaling.

Every fit is ordinary least squares of log(metric) on log(width) over all (seed, width)
points; its 95% interval resamples the seeds with replacement within each width. Two slopes
per claim: over all widths, and over the widest `fit_widths` (the asymptotic slope, the one
the verdict reads: narrow networks bend the curve before the n^-1/2 law sets in).

Verdicts (initialization, sweeps of the whole network's width, metrics with a claimed rate):

* ``PASS``: the asymptotic slope lies in the band (scaled to the claim: doubled for n^-1),
  or below it for a claim that is only an upper bound (`BOUNDS`: faster is consistent);
* ``PRE-ASYMPTOTIC``: it does not, and the median at the widest width is still above the
  level (scaled likewise: squared for n^-1): the widths reached do not test the rate;
* ``FAIL``: it does not, although the widest width's error is below the level.

Trained rows, sweeps of one part of the network (`role` "readout" or "body") and metrics
without a claim get ``-``: their slope is shown, the theorem says nothing about them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nt_pntk._src.experiments.validation.metrics import EXPECTED_SLOPES
from nt_pntk._src.experiments.validation.sweep import current_columns

GROUP = ["sweep", "role", "architecture", "data", "outputs", "phase"]
VERDICTS = ("PASS", "FAIL", "PRE-ASYMPTOTIC", "-")
#: Metrics whose claim is an upper bound, not an exact rate: a perturbation bound on λmax, and
#: the prediction gap, bounded through the kernels' gap. Falling faster than n^-1/2 passes.
BOUNDS = frozenset({"pred_gap", "err_lambda_max"})


def _valid_logs(part: pd.DataFrame, metric: str) -> tuple[dict[int, np.ndarray], int, int]:
    """log(metric) per width over the seeds, keeping finite positive values; and how many were not."""
    values = part[metric].to_numpy(float)
    nonfinite = int(np.sum(~np.isfinite(values)))
    nonpositive = int(np.sum(np.isfinite(values) & (values <= 0)))
    logs = {}
    for width, g in part.groupby("width", sort=True):
        v = g[metric].to_numpy(float)
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            logs[int(width)] = np.log(v)
    return logs, nonfinite, nonpositive


def ragged_slope(
    logs: dict[int, np.ndarray], *, bootstrap: int = 0, rng: np.random.Generator | None = None
) -> tuple[float, float, float]:
    """Least-squares slope of log(value) on log(width) over every point, and its bootstrap interval.

    With k_w points at width w, the slope is Σ_w (x_w − x̄) S_w / Σ_w k_w (x_w − x̄)², x = log w,
    x̄ the points' mean x and S_w the sum of the log values at w; resampling the points within
    each width keeps k_w, so only S_w changes.

    Returns:
      ``(slope, low, high)``: NaN where fewer than two widths have points; the interval
      (2.5% and 97.5% percentiles) is NaN when ``bootstrap`` is 0.
    """
    if len(logs) < 2:
        return float("nan"), float("nan"), float("nan")
    x = np.log(np.array(list(logs), float))
    counts = np.array([len(v) for v in logs.values()], float)
    dx = x - np.sum(counts * x) / counts.sum()
    denominator = np.sum(counts * dx**2)
    slope = float(sum(d * np.sum(v) for d, v in zip(dx, logs.values(), strict=True)) / denominator)
    if not bootstrap:
        return slope, float("nan"), float("nan")
    rng = rng or np.random.default_rng(0)
    sums = np.zeros(bootstrap)
    for d, v in zip(dx, logs.values(), strict=True):
        sums += d * v[rng.integers(0, len(v), size=(bootstrap, len(v)))].sum(axis=1)
    low, high = np.percentile(sums / denominator, [2.5, 97.5])
    return slope, float(low), float(high)


def claim_scale(expected: float) -> float:
    """How much steeper than n^-1/2 a claimed rate is (2 for the squared off-diagonal mass)."""
    return expected / -0.5


def verdict(
    slope_last: float,
    widest_median: float,
    expected: float,
    band: tuple[float, float],
    level: float,
    *,
    bound: bool = False,
) -> str:
    """PASS, PRE-ASYMPTOTIC or FAIL for a claimed rate `expected` (see the module's docstring).

    A `bound` (the claim is "at most of order n^expected") also passes with a steeper slope.
    """
    scale = claim_scale(expected)
    if not np.isfinite(slope_last):
        return "-"
    low = -np.inf if bound else band[0] * scale
    if low <= slope_last <= band[1] * scale:
        return "PASS"
    return "PRE-ASYMPTOTIC" if widest_median > level**scale else "FAIL"


def fit_slopes(
    table: pd.DataFrame,
    *,
    bootstrap: int = 1000,
    band: tuple[float, float] = (-0.65, -0.35),
    level: float = 0.2,
    fit_widths: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Slopes of log(metric) against log(width) per sweep, O, phase and metric, with verdicts.

    Args:
      table: the sweep's rows (`results.csv`; an older release's former column names are
        read with a `DeprecationWarning`, `sweep.current_columns`).
      bootstrap: resamples for the intervals.
      band: [low, high] of an n^-1/2 slope that passes.
      level: the error below which the widest width counts as asymptotic (for n^-1/2 claims).
      fit_widths: how many of the widest widths the asymptotic slope uses.
      seed: the bootstrap's seed.

    Returns:
      One row per fit: the group columns (`GROUP`), ``metric``, ``slope``, ``ci_low``,
      ``ci_high`` (all widths), ``slope_last``, ``ci_last_low``, ``ci_last_high`` (the widest
      `fit_widths`), ``last_widths`` (e.g. "128-512"), ``expected``, ``widest_median``,
      ``level`` (scaled to the claim), ``verdict``, ``widths``, ``seeds``, and
      ``nonpositive`` and ``nonfinite``: how many values could not enter a log-log fit
      (they are counted, never silently dropped).
    """
    table = current_columns(table, "fit_slopes")
    rng = np.random.default_rng(seed)
    rows = []
    group = [c for c in GROUP if c in table.columns]
    for key, part in table.groupby(group, sort=True):
        identity = dict(zip(group, key, strict=True))
        for metric, expected in EXPECTED_SLOPES.items():
            logs, nonfinite, nonpositive = _valid_logs(part, metric)
            slope, low, high = ragged_slope(logs, bootstrap=bootstrap, rng=rng)
            last = dict(list(logs.items())[-fit_widths:])
            slope_last, last_low, last_high = ragged_slope(last, bootstrap=bootstrap, rng=rng)
            widest = part[part.width == part.width.max()][metric].to_numpy(float)
            widest_median = float(np.median(widest)) if np.all(np.isfinite(widest)) else float("nan")
            claimed = expected is not None and identity.get("role", "theorem") == "theorem"
            claimed &= identity["phase"] == "init"
            scaled_level = level ** claim_scale(expected) if expected is not None else float("nan")
            rows.append(
                identity
                | {"metric": metric, "slope": slope, "ci_low": low, "ci_high": high}
                | {"slope_last": slope_last, "ci_last_low": last_low, "ci_last_high": last_high}
                | {"last_widths": f"{min(last)}-{max(last)}" if last else ""}
                | {"expected": expected, "widest_median": widest_median, "level": scaled_level}
                | {
                    "verdict": (
                        verdict(slope_last, widest_median, expected, band, level, bound=metric in BOUNDS)
                        if claimed
                        else "-"
                    ),
                    "widths": len(logs),
                    "seeds": int(part.seed.nunique()),
                    "nonpositive": nonpositive,
                    "nonfinite": nonfinite,
                }
            )
    return pd.DataFrame(rows)


def output_scaling(
    table: pd.DataFrame, metric: str = "err_pntk", *, bootstrap: int = 1000, seed: int = 0
) -> pd.DataFrame:
    r"""How the error at initialization scales with O and width: the collapse on √(O/n).

    For each theorem sweep with at least two O values and two widths, fits

    .. math::
        \log \mathrm{err} = c + \alpha \log n + \beta \log O

    by least squares over every (seed, width, O) point, with 95% bootstrap intervals
    (seeds resampled within each width and O). The off-diagonal blocks are n^-1/2 of the
    diagonal and there are O − 1 of them per row, so theory gives α = −1/2, β = +1/2:
    err ∝ √(O/n), the curves of every O collapse on one line in √(O/n).

    Returns:
      One row per sweep: ``sweep``, ``architecture``, ``data``, ``outputs`` ("2,10,100"),
      ``alpha``, ``alpha_low``, ``alpha_high``, ``beta``, ``beta_low``, ``beta_high``,
      ``points`` (those with a finite positive value) and ``excluded`` (the others).
    """
    table = current_columns(table, "output_scaling")
    rng = np.random.default_rng(seed)
    rows = []
    init = table[(table.phase == "init") & (table.get("role", "theorem") == "theorem")]
    for (sweep, arch, data), part in init.groupby(["sweep", "architecture", "data"], sort=True):
        if part.outputs.nunique() < 2 or part.width.nunique() < 2:
            continue
        values = part[metric].to_numpy(float)
        ok = np.isfinite(values) & (values > 0)
        part = part[ok]
        cells = [g for _, g in part.groupby(["width", "outputs"], sort=True)]
        design = [np.column_stack([np.ones(len(g)), np.log(g.width), np.log(g.outputs)]) for g in cells]
        logs = [np.log(g[metric].to_numpy(float)) for g in cells]
        coef = np.linalg.lstsq(np.vstack(design), np.concatenate(logs), rcond=None)[0]
        replicas = []
        for _ in range(bootstrap):
            picks = [rng.integers(0, len(v), size=len(v)) for v in logs]
            y = np.concatenate([v[p] for v, p in zip(logs, picks, strict=True)])
            replicas.append(np.linalg.lstsq(np.vstack(design), y, rcond=None)[0])
        low, high = (
            np.percentile(np.array(replicas), [2.5, 97.5], axis=0) if bootstrap else (coef * np.nan,) * 2
        )
        rows.append(
            {"sweep": sweep, "architecture": arch, "data": data}
            | {"outputs": ",".join(str(o) for o in sorted(part.outputs.unique()))}
            | {"alpha": coef[1], "alpha_low": low[1], "alpha_high": high[1]}
            | {"beta": coef[2], "beta_low": low[2], "beta_high": high[2]}
            | {"points": int(ok.sum()), "excluded": int((~ok).sum())}
        )
    return pd.DataFrame(rows)
