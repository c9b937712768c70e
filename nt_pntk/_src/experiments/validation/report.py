"""The validation report: a Markdown file with the verdicts, slope tables and log-log plots."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from nt_pntk._src import checks, deprecations, files, measure
from nt_pntk._src.experiments.validation import fits
from nt_pntk._src.experiments.validation.metrics import EXPECTED_SLOPES
from nt_pntk._src.experiments.validation.sweep import current_columns

#: The claims the report tests, in its order: metric -> what the slope supports.
CLAIMS = {
    "err_pntk": "eNTK → pNTK ⊗ I_O at rate n^-1/2 (the paper's theorem)",
    "pred_gap": "kernel-regression predictions with pNTK ⊗ I → eNTK's at rate n^-1/2 (the paper)",
    "err_trace": "NT's trace approximation has the same rate (its o≠o' blocks vanish as n^-1/2)",
    "err_single": "one logit's NTK ⊗ I_O has the same rate (a control for the pNTK)",
    "err_pntk_inf": "pNTK → Θ∞ (NT's infinite-width stax kernel) at rate n^-1/2",
    "err_entk_inf": "eNTK → Θ∞ ⊗ I_O at rate n^-1/2",
    "offdiag_mass": "the o≠o' blocks' share of the eNTK's squared Frobenius mass falls as n^-1",
    "err_lambda_max": "λmax(pNTK) → λmax(eNTK) (a Lipschitz function of the kernel)",
}
#: Each metric's y-axis label, in mathematics (Θ the eNTK, P the pNTK, Θ∞ NT's infinite-width NTK).
LABELS = {
    "err_pntk": r"$\|\Theta - P \otimes I_O\|_F \,/\, \|\Theta\|_F$",
    "err_single": r"$\|\Theta - \Theta_{11} \otimes I_O\|_F \,/\, \|\Theta\|_F$",
    "err_trace": r"$\|\Theta - \bar\Theta \otimes I_O\|_F \,/\, \|\Theta\|_F$, "
    r"$\bar\Theta = \frac{1}{O}\sum_o \Theta_{oo}$",
    "err_pntk_inf": r"$\|P - \Theta_\infty\|_F \,/\, \|\Theta_\infty\|_F$",
    "err_entk_inf": r"$\|\Theta - \Theta_\infty \otimes I_O\|_F \,/\, \|\Theta_\infty \otimes I_O\|_F$",
    "offdiag_mass": r"$\sum_{o \neq o'} \|\Theta_{oo'}\|_F^2 \,/\, \|\Theta\|_F^2$",
    "pred_gap": r"$\|f_\Theta - f_P\|_2 \,/\, \|f_\Theta\|_2$  (test predictions)",
    "err_lambda_max": r"$|\lambda_{\max}(P) - \lambda_{\max}(\Theta)| \,/\, \lambda_{\max}(\Theta)$",
}
#: The x-axis label of each role's sweep.
X_LABELS = {
    "theorem": "width $n$ (units or channels of every hidden layer)",
    "readout": "width $n$ of the readout's input (body fixed)",
    "body": "width $n$ of the body (readout fixed)",
}
SLOPES_CSV = "slopes.csv"
SCALING_CSV = "outputs_scaling.csv"
REPORT_MD = "report.md"
PLOT_FORMATS = ("png", "pdf")
SIGNED = {"slope", "ci", "slope (all widths)", "slope (widest)", "expected", "alpha", "beta"}


def slope_table(slopes: pd.DataFrame) -> str:
    """The slopes of the claimed metrics as a fixed-width text table (printed by the command)."""
    if slopes.empty:
        return "(no slopes: a sweep needs at least two widths)"
    shown = slopes[slopes.metric.isin(CLAIMS)]
    cols = ["sweep", "data", "outputs", "phase", "metric", "slope", "slope_last", "widest_median", "verdict"]
    formatters = {"slope": _signed, "slope_last": _signed, "widest_median": lambda v: f"{v:.3f}"}
    return shown[cols].to_string(index=False, formatters=formatters)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [
        "| " + " | ".join(_cell(v, column) for v, column in zip(row, frame.columns, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *lines])


def _cell(v, column: str = "") -> str:
    """A table cell: slopes with their sign, other numbers (errors, accuracies) without."""
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "n/a"
        if column in SIGNED:
            return _signed(v)
        return f"{v:.3f}" if 1e-3 <= abs(v) < 100 or v == 0 else f"{v:.3g}"
    return str(v)


def _signed(v: float) -> str:
    """A slope with its sign, 3 decimals; a value that rounds to zero is +0.000 (not -0.000)."""
    text = f"{v:+.3f}"
    return "+0.000" if text == "-0.000" else text


def _ci(low: float, high: float) -> str:
    return "n/a" if np.isnan(low) else f"[{_signed(low)}, {_signed(high)}]"


# --- Header ---------------------------------------------------------------------------------------


def _commit() -> str:
    """The package's git commit, with '+ local changes' when the tree differs; 'unknown' outside git."""
    where = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return sha + (" + local changes" if dirty else "")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Date, commit, machine and versions, as the report's header states them."""
    versions = ", ".join(
        f"{name} {measure.installed_version(name)}"
        for name in ("nt-pntk", "jax", "jaxlib", "neural-tangents", "numpy", "scipy", "pandas")
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu()}, {os.cpu_count()} cores, "
        f"{measure.physical_memory_bytes() / 2**30:.0f} GiB",
        "versions": f"Python {platform.python_version()}, {versions}",
    }


# --- Plots ----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> list[str]:
    """`fig` as PNG (for the Markdown) and PDF (vector, for a paper) beside it; the file names."""
    names = []
    for fmt in PLOT_FORMATS:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi, metadata={"CreationDate": None} if fmt == "pdf" else None)
        names.append(target.name)
    return names


def _reference(ax, part: pd.DataFrame, metric: str, slope: float) -> None:
    """A dashed guide of the claimed slope through the median at the narrowest width."""
    w0 = part.width.min()
    y0 = part[part.width == w0][metric].median()
    if not (np.isfinite(y0) and y0 > 0):
        return
    ws = np.array(sorted(part.width.unique()), float)
    exponent = "-1/2" if slope == -0.5 else f"{slope:g}"
    ax.plot(ws, y0 * (ws / w0) ** slope, "k--", lw=1, label=f"reference $n^{{{exponent}}}$ (theory)")


def _draw_group(ax, g: pd.DataFrame, fit: pd.Series | None, metric: str, label: str) -> int:
    """Medians with min–max bars over seeds, the asymptotic fit and its bootstrap band; values not drawn."""
    values = g[metric].to_numpy(float)
    drawable = np.isfinite(values) & (values > 0)
    stats = g[drawable].groupby("width")[metric].agg(["median", "min", "max"])
    if stats.empty:
        return int((~drawable).sum())
    w = stats.index.to_numpy(float)
    (line,) = ax.plot(w, stats["median"], "o", ms=4, label=label)
    ax.vlines(w, stats["min"], stats["max"], color=line.get_color(), alpha=0.6, lw=1.5)
    if fit is not None and np.isfinite(fit.slope_last):
        low, high = (int(v) for v in fit.last_widths.split("-"))
        last = g[drawable & (g.width >= low) & (g.width <= high)]
        x = np.log(last.width.to_numpy(float))
        y = np.log(last[metric].to_numpy(float))
        ws = np.geomspace(low, high, 20)
        centre = np.exp(y.mean() + fit.slope_last * (np.log(ws) - x.mean()))
        ax.plot(ws, centre, "-", color=line.get_color(), lw=1.2)
        if np.isfinite(fit.ci_last_low):
            edges = [
                np.exp(y.mean() + s * (np.log(ws) - x.mean())) for s in (fit.ci_last_low, fit.ci_last_high)
            ]
            ax.fill_between(
                ws, np.minimum(*edges), np.maximum(*edges), color=line.get_color(), alpha=0.2, lw=0
            )
    return int((~drawable).sum())


def _fit_of(slopes: pd.DataFrame, key: dict, metric: str) -> pd.Series | None:
    if slopes.empty:
        return None
    mask = slopes.metric == metric
    for column, value in key.items():
        mask &= slopes[column] == value
    return slopes[mask].iloc[0] if mask.any() else None


def _legend_label(g_key: dict, fit: pd.Series | None) -> str:
    text = f"{g_key['sweep']} O={g_key['outputs']}"
    if fit is not None and np.isfinite(fit.slope_last):
        text += f": fit {fit.slope_last:+.2f} over n={fit.last_widths}"
        if np.isfinite(fit.ci_last_low):
            text += f", 95% bootstrap band [{fit.ci_last_low:+.2f}, {fit.ci_last_high:+.2f}]"
    return text


def _legend_extras(ax) -> int:
    """Names the error bars and the band in the legend, beside the groups' entries; the entries' count."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([0], [0], color="grey", marker="o", ms=4, lw=1.5, ls="-"),
        Patch(color="grey", alpha=0.2),
    ]
    labels += ["median over seeds; bars: min–max over seeds", "fitted line and its 95% bootstrap band"]
    # Below the axes, not over the points.
    ax.legend(handles, labels, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return len(labels)


def plot_metric(
    table: pd.DataFrame,
    slopes: pd.DataFrame,
    metric: str,
    path: Path,
    *,
    role: str = "theorem",
    dpi: int = 150,
) -> list[str]:
    """Log-log plot of `metric` against width, init and trained, for the sweeps of `role`.

    Each group: medians over seeds with min–max bars, the fit over the widest widths with
    its 95% bootstrap band, and the claimed slope as a dashed reference. Values ≤ 0 or not
    finite cannot be drawn on log axes: each panel says how many there are.

    Returns:
      The names of the files written (PNG and PDF).
    """
    plt = _pyplot()
    phases = [p for p in ("init", "trained") if (table.phase == p).any()]
    fig, axes = plt.subplots(1, len(phases), figsize=(5.6 * len(phases), 4.4), sharey=True, squeeze=False)
    entries = 0
    for ax, phase in zip(axes[0], phases, strict=True):
        part = table[(table.phase == phase) & (table.role == role)]
        hidden = 0
        for (sweep, arch, data, outputs), g in part.groupby(["sweep", "architecture", "data", "outputs"]):
            key = {"sweep": sweep, "architecture": arch, "data": data, "outputs": outputs, "phase": phase}
            fit = _fit_of(slopes, key, metric)
            hidden += _draw_group(ax, g, fit, metric, _legend_label(key, fit))
        expected = EXPECTED_SLOPES[metric]
        if len(part) and expected is not None:
            _reference(ax, part, metric, expected)
        if hidden:
            ax.text(
                0.02,
                0.02,
                f"{hidden} values ≤ 0 or not finite: not drawn",
                transform=ax.transAxes,
                fontsize=7,
            )
        title = {"init": "at initialization", "trained": "after training (no claim)"}[phase]
        ax.set(xscale="log", yscale="log", xlabel=X_LABELS[role], title=title)
        ax.grid(True, which="both", alpha=0.3)
        if len(part):
            entries = max(entries, _legend_extras(ax))
    axes[0][0].set_ylabel(LABELS.get(metric, metric))
    fig.set_size_inches(5.6 * len(phases), 4.4 + 0.13 * entries)  # room for the legends below
    fig.tight_layout()
    names = _save(fig, path, dpi)
    plt.close(fig)
    return names


def plot_outputs_collapse(
    table: pd.DataFrame, scaling: pd.DataFrame, path: Path, *, dpi: int = 150
) -> list[str]:
    """err_pntk at init against √(O/n) for each O of the sweeps that vary O: the curves collapse."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for _, fit in scaling.iterrows():
        part = table[(table.sweep == fit.sweep) & (table.phase == "init")]
        for outputs, g in part.groupby("outputs"):
            values = g.err_pntk.to_numpy(float)
            g = g[np.isfinite(values) & (values > 0)]
            stats = g.groupby("width").err_pntk.agg(["median", "min", "max"])
            x = np.sqrt(outputs / stats.index.to_numpy(float))
            (line,) = ax.plot(x, stats["median"], "o-", ms=4, lw=0.8, label=f"{fit.sweep} O={outputs}")
            ax.vlines(x, stats["min"], stats["max"], color=line.get_color(), alpha=0.6)
        xs = np.sqrt(part.outputs / part.width.astype(float))
        grid = np.geomspace(xs.min(), xs.max(), 20)
        y = part.err_pntk.to_numpy(float)
        ok = np.isfinite(y) & (y > 0)
        c = np.exp(np.mean(np.log(y[ok]) - np.log(xs.to_numpy()[ok])))
        ax.plot(grid, c * grid, "k--", lw=1, label=r"$\propto \sqrt{O/n}$ (theory)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"$\sqrt{O/n}$  ($O$ outputs, width $n$)",
        ylabel=LABELS["err_pntk"],
        title="the error at initialization against $\\sqrt{O/n}$",
    )
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # a decade or less: minor labels would overlap
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=7, title="median over seeds; bars: min–max", title_fontsize=7)
    fig.tight_layout()
    names = _save(fig, path, dpi)
    plt.close(fig)
    return names


def plot_controls(table: pd.DataFrame, path: Path, *, dpi: int = 150) -> list[str]:
    """The errors of pNTK, single logit and trace side by side at init, one panel per theorem sweep."""
    plt = _pyplot()
    init = table[(table.phase == "init") & (table.role == "theorem")]
    groups = list(init.groupby(["sweep", "outputs"]))
    columns = min(3, max(1, len(groups)))
    rows = -(-len(groups) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    kernels = [("err_pntk", "pNTK $P$", "C0"), ("err_single", r"one logit $\Theta_{11}$", "C1")]
    kernels += [("err_trace", r"trace $\bar\Theta$", "C2")]
    for ax, ((sweep, outputs), g) in zip(axes.flat, groups, strict=False):
        widths = sorted(g.width.unique())
        for k, (metric, name, color) in enumerate(kernels):
            data = [g[g.width == w][metric].dropna().to_numpy(float) for w in widths]
            positions = np.arange(len(widths)) + (k - 1) * 0.27
            ax.boxplot(
                data,
                positions=positions,
                widths=0.24,
                patch_artist=True,
                boxprops={"facecolor": color, "alpha": 0.5},
                medianprops={"color": "k"},
                showfliers=True,
                flierprops={"markersize": 2},
            )
            ax.plot([], [], "s", color=color, alpha=0.5, label=name)
        ax.set_xticks(np.arange(len(widths)), [str(w) for w in widths])
        ax.set(yscale="log", xlabel="width $n$", title=f"{sweep}, O={outputs}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(
            fontsize=7, title="$\\|\\Theta - K \\otimes I\\|_F / \\|\\Theta\\|_F$, K =", title_fontsize=7
        )
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    names = _save(fig, path, dpi)
    plt.close(fig)
    return names


# --- The report -----------------------------------------------------------------------------------


def _verdict_rows(
    slopes: pd.DataFrame, metric: str, roles=("theorem",), phases=("init", "trained")
) -> pd.DataFrame:
    part = slopes[(slopes.metric == metric) & slopes.role.isin(roles) & slopes.phase.isin(phases)]
    return pd.DataFrame(
        {
            "sweep": part.sweep,
            "data": part.data,
            "O": part.outputs,
            "phase": part.phase,
            "widths": part.widths,
            "slope (all widths)": part.slope,
            "95% CI": [_ci(lo, hi) for lo, hi in zip(part.ci_low, part.ci_high, strict=True)],
            "fit widths": part.last_widths,
            "slope (widest)": part.slope_last,
            "95% CI ": [_ci(lo, hi) for lo, hi in zip(part.ci_last_low, part.ci_last_high, strict=True)],
            "median at widest": part.widest_median,
            "verdict": part.verdict,
            "values ≤ 0 / not finite": [
                f"{a} / {b}" for a, b in zip(part.nonpositive, part.nonfinite, strict=True)
            ],
        }
    )


def _intro(config_name: str, band: tuple[float, float], level: float, fit_widths: int) -> list[str]:
    lo, hi = band
    return [
        "## How to read this report",
        "",
        "Mohamadi, Bae & Sutherland (ICML 2023) prove that at initialization the empirical NTK Θ "
        "of a network with O outputs approaches pNTK ⊗ I_O as the width n grows, with a relative "
        "Frobenius error of order n^-1/2, and that kernel regression with the pNTK approaches "
        "kernel regression with the eNTK at the same rate. Each sweep below measures those errors "
        "for several widths and seeds and fits a straight line to log(error) against log(n).",
        "",
        "- **slope (all widths)**: the fit over every width. Narrow networks bend the curve "
        "(the n^-1 terms are not yet negligible), so this slope is usually flatter than -1/2.",
        f"- **slope (widest)**: the fit over the widest {fit_widths} widths, the asymptotic "
        "slope that the verdict reads. Both come with a 95% bootstrap interval (seeds resampled "
        "within each width).",
        f"- **verdict** (at initialization only): **PASS** when the asymptotic slope lies in "
        f"[{lo:+.2f}, {hi:+.2f}] (twice that for the off-diagonal mass, which is a squared error "
        f"and falls as n^-1; for `pred_gap` and `err_lambda_max`, whose claim is an upper bound, a "
        "steeper slope passes too); **PRE-ASYMPTOTIC** when it does not and the median error at the "
        f"widest width is still above {level:g} ({level**2:g} for the off-diagonal mass): the "
        "widths reached are too narrow to test the rate; **FAIL** when it does not although the "
        "error is below that level. Trained rows carry their slope but no verdict (`-`): the "
        "theorem is about initialization.",
        "- Values ≤ 0 or not finite (a diverged training run) cannot enter a log-log fit; they "
        "are counted in the column `values ≤ 0 / not finite`, never dropped silently.",
        "",
    ]


def write_report(
    table: pd.DataFrame,
    slopes: pd.DataFrame,
    output: str | os.PathLike | None = None,
    *,
    config_name: str,
    out: str | os.PathLike | None = None,
    band: tuple[float, float] = (-0.65, -0.35),
    level: float = 0.2,
    fit_widths: int = 3,
    bootstrap: int = 1000,
    dpi: int = 150,
    timing: dict[str, float] | None = None,
) -> Path:
    """Writes `slopes.csv`, `outputs_scaling.csv`, the plots (PNG and PDF) and `report.md` into `output`.

    Args:
      table: the sweep's rows (`results.csv`).
      slopes: `fits.fit_slopes` of it (`slopes.csv`). Tables of an older release, with former
        column names, are read with a `DeprecationWarning` (`sweep.current_columns`).
      output: the results' directory (``out``, its former name, is deprecated).
      config_name: the configuration's name, for the title.
      band, level, fit_widths: the configuration's verdict settings, stated in the report.
      bootstrap: resamples of the O-scaling fit.
      dpi: the PNG plots' resolution.
      timing: ``{"cells": seconds summed over the cells' measurements, "run": this run's seconds}``.

    Returns:
      The path of `report.md`.
    """
    output = Path(deprecations.renamed("write_report", "out", out, "output", output, required=True))
    dpi = checks.positive_int("dpi", dpi)
    table = current_columns(table, "write_report")
    slopes = current_columns(slopes, "write_report")
    files.atomic_write(output / SLOPES_CSV, slopes.to_csv(index=False))
    if "role" not in table.columns:  # rows of an older format: every sweep a width sweep
        table = table.assign(role="theorem")
    env = environment()
    lines = [
        f"# nt-pntk validation report: `{config_name}`",
        "",
        f"- date: {env['date']}",
        f"- commit: {env['commit']}",
        f"- machine: {env['machine']}",
        f"- versions: {env['versions']}",
        f"- rows: {len(table)} ({table.key.nunique()} cells)",
    ]
    if timing:
        cells, run = (_duration(timing.get(k, float("nan"))) for k in ("cells", "run"))
        lines.append(
            f"- compute: {cells} of measurement summed over the cells; "
            f"this run of `nt-pntk validate` took {run}"
        )
    lines += ["", *_intro(config_name, band, level, fit_widths)]

    # The theorem, at a glance.
    if len(slopes):
        summary = pd.concat(
            [_verdict_rows(slopes, m, phases=("init",)).assign(metric=m) for m in ("err_pntk", "pred_gap")]
        )
        summary = summary[["metric", *summary.columns[:-1]]]
        counts = summary.verdict.value_counts().to_dict()
        lines += [
            "## The theorem at initialization",
            "",
            "The pNTK's error (`err_pntk`) and the gap between the predictions (`pred_gap`): "
            + ", ".join(f"{counts[v]} {v}" for v in fits.VERDICTS if v in counts)
            + ".",
            "",
            _markdown(summary),
            "",
        ]

    for metric, claim in CLAIMS.items():
        part = _verdict_rows(slopes, metric) if len(slopes) else pd.DataFrame()
        if part.empty:
            continue
        names = plot_metric(table, slopes, metric, output / metric, dpi=dpi)
        expected = EXPECTED_SLOPES[metric]
        lines += [
            f"## `{metric}`: {claim}",
            "",
            f"Theory's slope: {expected:+g}. Plot: {', '.join(f'[{n}]({n})' for n in names)}.",
            "",
            _markdown(part),
            "",
            f"![{metric}]({names[0]})",
            "",
        ]

    lines += _outputs_section(table, output, bootstrap, dpi)
    lines += _readout_section(table, slopes, output, dpi)
    lines += _controls_section(table, output, dpi)

    medians = (
        table.groupby(["sweep", "data", "outputs", "phase", "width"])[
            ["err_pntk", "err_single", "err_trace", "pred_gap", "acc_entk", "acc_pntk"]
        ]
        .median()
        .reset_index()
    )
    lines += [
        "## Medians over seeds",
        "",
        "Errors are relative (0.1 = 10%); accuracies are fractions of the held-out inputs.",
        "",
        _markdown(medians),
        "",
    ]
    path = output / REPORT_MD
    files.atomic_write(path, "\n".join(lines))
    return path


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _outputs_section(table: pd.DataFrame, output: Path, bootstrap: int, dpi: int) -> list[str]:
    scaling = fits.output_scaling(table, bootstrap=bootstrap)
    files.atomic_write(output / SCALING_CSV, scaling.to_csv(index=False))
    if scaling.empty:
        return []
    names = plot_outputs_collapse(table, scaling, output / "outputs_collapse", dpi=dpi)
    shown = pd.DataFrame(
        {
            "sweep": scaling.sweep,
            "data": scaling.data,
            "O": scaling.outputs,
            "alpha": scaling.alpha,
            "95% CI": [_ci(a, b) for a, b in zip(scaling.alpha_low, scaling.alpha_high, strict=True)],
            "beta": scaling.beta,
            "95% CI ": [_ci(a, b) for a, b in zip(scaling.beta_low, scaling.beta_high, strict=True)],
            "points": scaling.points,
            "values ≤ 0 / not finite": scaling.excluded,
        }
    )
    first = scaling.iloc[0]
    return [
        "## The dependence on O",
        "",
        "At initialization each row of Θ has one diagonal block and O − 1 off-diagonal blocks, "
        "and each off-diagonal block is n^-1/2 of the diagonal, so the error of any K ⊗ I_O "
        "should grow like √(O/n): fitting log err = c + alpha·log n + beta·log O, theory says "
        "alpha = -1/2 and beta = +1/2, and the curves of every O fall on one line against "
        f"√(O/n). Measured (`err_pntk`, {SCALING_CSV}): beta = {_signed(first.beta)} "
        f"{_ci(first.beta_low, first.beta_high)}, alpha = {_signed(first.alpha)} "
        f"{_ci(first.alpha_low, first.alpha_high)} for `{first.sweep}`.",
        "",
        _markdown(shown),
        "",
        f"![O collapse]({names[0]}) ({', '.join(f'[{n}]({n})' for n in names)})",
        "",
    ]


def _readout_section(table: pd.DataFrame, slopes: pd.DataFrame, output: Path, dpi: int) -> list[str]:
    roles = [r for r in ("readout", "body") if (table.role == r).any()]
    if not roles:
        return []
    lines = [
        "## The readout claim: is a wide readout enough?",
        "",
        "The paper's later abstract claims convergence \"for any network with a wide final "
        'readout layer". Two sweeps test it apart from the theorem: the **readout** sweep widens '
        "only the readout's input (a dense ReLU layer before the last layer) above a narrow "
        "fixed body; the **body** sweep widens only the body under a narrow fixed readout. If a "
        "wide readout were enough, the readout sweep's error would fall like n^-1/2; if the body "
        "matters, it levels off at the narrow body's error. No verdict: these are not the theorem.",
        "",
    ]
    for role in roles:
        for metric in ("err_pntk", "err_trace", "offdiag_mass"):
            part = _verdict_rows(slopes, metric, roles=(role,), phases=("init",))
            if part.empty:
                continue
            lines += [f"### {role} sweep, `{metric}`", "", _markdown(part.drop(columns=["verdict"])), ""]
        names = plot_metric(table, slopes, "err_pntk", output / f"err_pntk_{role}", role=role, dpi=dpi)
        lines += [f"![err_pntk, {role} sweep]({names[0]}) ({', '.join(f'[{n}]({n})' for n in names)})", ""]
    lines += _readout_reading(slopes, roles)
    return lines


def _readout_reading(slopes: pd.DataFrame, roles: list[str]) -> list[str]:
    """One sentence per role from its init err_pntk slopes: falling like n^-1/2, slower, or levelling off."""
    sentences = []
    for role in roles:
        part = slopes[(slopes.role == role) & (slopes.metric == "err_pntk") & (slopes.phase == "init")]
        for _, row in part.iterrows():
            if not np.isfinite(row.slope_last):
                continue
            if row.slope_last <= -0.35:
                reading = "falls at about the n^-1/2 rate: this width alone drives the error down"
            elif row.slope_last <= -0.15:
                reading = "falls, but more slowly than n^-1/2"
            else:
                reading = "levels off: widening this part alone does not remove the error"
            sentences.append(
                f"- `{row.sweep}` (O = {row.outputs}): slope {_signed(row.slope)} over all widths, "
                f"{_signed(row.slope_last)} over n = {row.last_widths}, error {row.widest_median:.3f} at the "
                f"widest; it {reading}."
            )
    return ["What the slopes say:", "", *sentences, ""] if sentences else []


def _controls_section(table: pd.DataFrame, output: Path, dpi: int) -> list[str]:
    init = table[(table.phase == "init") & (table.role == "theorem")]
    if init.empty or "err_single" not in init.columns:
        return []
    names = plot_controls(table, output / "controls", dpi=dpi)
    stats = init.groupby(["sweep", "outputs", "width"]).agg(
        pntk=("err_pntk", "median"), single=("err_single", "median"), trace=("err_trace", "median")
    )
    ratios = init.assign(
        single_over_pntk=init.err_single / init.err_pntk, trace_over_pntk=init.err_trace / init.err_pntk
    )
    overall_single = float(np.nanmedian(ratios.single_over_pntk))
    overall_trace = float(np.nanmedian(ratios.trace_over_pntk))
    trace_never_worse = bool((init.err_trace <= init.err_pntk * (1 + 1e-9)).all())
    shown = stats.reset_index().rename(
        columns={"pntk": "pNTK", "single": "single logit", "trace": "trace", "outputs": "O"}
    )
    return [
        "## Controls: pNTK, one logit, trace",
        "",
        "At initialization the pNTK's summed readout row Σ_o w_o/√O has the distribution of a "
        "single row w_o, so the pNTK should have the error distribution of one logit's NTK Θ_11; "
        "NT's trace (1/O) Σ_o Θ_oo is the closest K ⊗ I_O in Frobenius norm, so its error is "
        f"never larger. Over every cell at init: median ratio single-logit / pNTK error "
        f"{overall_single:.3f}, trace / pNTK {overall_trace:.3f}; the trace's error is "
        f"{'never' if trace_never_worse else 'sometimes'} above the pNTK's.",
        "",
        "Medians over seeds of ‖Θ − K ⊗ I‖_F / ‖Θ‖_F:",
        "",
        _markdown(shown),
        "",
        f"![controls]({names[0]}) ({', '.join(f'[{n}]({n})' for n in names)})",
        "",
    ]
