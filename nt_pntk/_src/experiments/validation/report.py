"""The validation report: a Markdown file with slope tables and log-log plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from nt_pntk._src import checks, files

CLAIMS = {
    "err_pntk": "eNTK → pNTK ⊗ I_O at rate n^-1/2 (the paper's theorem)",
    "pred_gap": "kernel-regression predictions with pNTK ⊗ I → eNTK's at rate n^-1/2 (the paper)",
    "err_trace": "NT's trace approximation has the same rate (its o≠o' blocks vanish as n^-1/2)",
    "err_pntk_inf": "pNTK → Θ∞ (NT's infinite-width stax kernel) at rate n^-1/2",
    "err_entk_inf": "eNTK → Θ∞ ⊗ I_O at rate n^-1/2",
    "offdiag_mass": "the o≠o' blocks' share of the eNTK's squared Frobenius mass falls as n^-1",
    "err_lambda_max": "λmax(pNTK) → λmax(eNTK) (a Lipschitz function of the kernel)",
}
SLOPES_CSV = "slopes.csv"
REPORT_MD = "report.md"


def slope_table(slopes: pd.DataFrame) -> str:
    """The slopes as a fixed-width text table (printed by the command)."""
    if slopes.empty:
        return "(no slopes: a sweep needs at least two widths)"
    shown = slopes.assign(
        ci=[f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(slopes.ci_low, slopes.ci_high, strict=True)],
        verdict=slopes.passed.map({True: "PASS", False: "FAIL"}).fillna("-"),
    )
    cols = ["architecture", "data", "out", "phase", "metric", "slope", "ci", "expected", "verdict"]
    return shown[cols].to_string(index=False, float_format=lambda v: f"{v:+.3f}")


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:+.3f}" if abs(v) < 100 else f"{v:.3g}"
    return str(v)


def plot_metric(table: pd.DataFrame, slopes: pd.DataFrame, metric: str, path: Path) -> None:
    """Log-log plot of `metric` against width per group, fitted lines and an n^-1/2 guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, phase in zip(axes, ("init", "trained"), strict=True):
        part = table[table.phase == phase]
        for (arch, data, out), g in part.groupby(["architecture", "data", "out"]):
            if g[metric].le(0).any():
                continue
            stats = g.groupby("width")[metric].agg(["median", "min", "max"])
            w = stats.index.to_numpy(float)
            (line,) = ax.plot(w, stats["median"], "o", label=f"{arch} {data} O={out}")
            ax.vlines(w, stats["min"], stats["max"], color=line.get_color(), alpha=0.5)
            fit = slopes[
                (slopes.architecture == arch)
                & (slopes.data == data)
                & (slopes.out == out)
                & (slopes.phase == phase)
                & (slopes.metric == metric)
            ]
            if len(fit):
                logs = np.log(g["width"].to_numpy(float))
                intercept = np.mean(np.log(g[metric].to_numpy(float))) - fit.slope.iloc[0] * logs.mean()
                ax.plot(w, np.exp(intercept) * w ** fit.slope.iloc[0], "-", color=line.get_color(), lw=1)
        if len(part):
            w0 = part.width.min()
            y0 = part[part.width == w0][metric].median()
            ws = np.array(sorted(part.width.unique()), float)
            if y0 > 0:
                ax.plot(ws, y0 * (ws / w0) ** -0.5, "k--", lw=1, label="n^-1/2 reference")
        ax.set(xscale="log", yscale="log", xlabel="width n", title=f"{metric} ({phase})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    table: pd.DataFrame,
    slopes: pd.DataFrame,
    output: str | os.PathLike | None = None,
    *,
    config_name: str,
    out: str | os.PathLike | None = None,
) -> Path:
    """Writes `slopes.csv`, one PNG per claimed metric and `report.md` into the directory `output`.

    ``out``, the former name of `output`, is deprecated.
    """
    out = Path(checks.renamed("write_report", "out", out, "output", output, required=True))
    files.atomic_write(out / SLOPES_CSV, slopes.to_csv(index=False))
    lines = [
        f"# nt-pntk validation report: `{config_name}`",
        "",
        "Slopes of log(metric) against log(width), least squares over all seeds, with 95% "
        "bootstrap intervals over seeds. Theory (Mohamadi, Bae & Sutherland, ICML 2023) "
        "predicts -1/2 at initialization; PASS means the slope lies in the configured band "
        "(doubled for the squared off-diagonal mass). After training the theorem does not "
        "apply: those rows show how the approximation behaves away from initialization.",
        "",
        f"Rows: {len(table)} ({table.key.nunique()} cells).",
        "",
    ]
    for metric, claim in CLAIMS.items():
        part = slopes[slopes.metric == metric] if len(slopes) else slopes
        if part.empty:
            continue
        png = f"{metric}.png"
        plot_metric(table, slopes, metric, out / png)
        shown = part.assign(
            ci=[f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(part.ci_low, part.ci_high, strict=True)],
            verdict=part.passed.map({True: "PASS", False: "FAIL"}).fillna("-"),
        )[["architecture", "data", "out", "phase", "slope", "ci", "expected", "verdict"]]
        lines += [f"## `{metric}`: {claim}", "", _markdown(shown), "", f"![{metric}]({png})", ""]
    medians = (
        table.groupby(["architecture", "data", "out", "phase", "width"])[
            ["err_pntk", "err_trace", "pred_gap", "acc_entk", "acc_pntk"]
        ]
        .median()
        .reset_index()
    )
    lines += ["## Medians over seeds", "", _markdown(medians), ""]
    path = out / REPORT_MD
    files.atomic_write(path, "\n".join(lines))
    return path
