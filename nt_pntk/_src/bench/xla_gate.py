"""A regression gate on XLA's deterministic figures of the benchmarked kernels.

Wall time on a shared machine is noise; what XLA compiles is not. For every kernel ×
implementation × grid point of the asv suite (``asv_bench/benchmarks/_common.py``) the gate
compiles the program (nothing runs) and reads four figures: ``flops`` and ``bytes_accessed``
(XLA's cost analysis), ``temp_bytes`` and ``total_bytes`` (its memory analysis). `compare`
holds them to a committed baseline (``asv_bench/xla_baseline.json``): a figure that grew by
more than the tolerance (ratio current / baseline > 1 + tolerance) is a regression; one that
shrank by as much is reported, not failed. The figures are only comparable for one XLA, so a
baseline made with other jax / jaxlib / neural-tangents versions (or another backend) is
refused rather than compared, as is a baseline of another grid.

This module is the pure logic (grids, files, comparison); ``asv_bench/xla_gate.py`` is the
command, which compiles the programs with the suite's own ``_common.Compiled``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from nt_pntk._src import checks, files, measure

#: The figures compared, as ``_common.xla_figures`` names them.
FIGURES = ("flops", "bytes_accessed", "temp_bytes", "total_bytes")
#: ``_common.xla_figures`` names the memory figures without the ``_bytes`` suffix.
_SOURCE_NAMES = {
    "flops": "flops",
    "bytes_accessed": "bytes_accessed",
    "temp_bytes": "temp",
    "total_bytes": "total",
}
#: The packages whose versions decide what XLA compiles.
VERSIONED_PACKAGES = measure.VERSIONED_DEPENDENCIES
DEFAULT_TOLERANCE = 0.10
FORMAT_VERSION = 1

#: One measured program: (model, kernel, implementation, point).
Key = tuple[str, str, int, str]

#: Exit codes of `check`.
OK, REGRESSION, NOT_COMPARABLE = 0, 1, 2


class NotComparable(Exception):
    """The baseline cannot be compared with this installation or grid (`check` exits 2)."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline file's contents: where the figures come from and the figures per program."""

    versions: dict[str, str]
    grid: str
    figures: dict[Key, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Change:
    """One figure of one program that moved by more than the tolerance."""

    key: Key
    figure: str
    baseline: float
    current: float

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return math.inf if self.current > 0 else 1.0
        return self.current / self.baseline

    @property
    def regression(self) -> bool:
        return self.ratio > 1


def installed_versions(backend: str) -> dict[str, str]:
    """The installed versions of `VERSIONED_PACKAGES`, and the JAX `backend` (``'cpu'``...)."""
    return {
        **{package: measure.installed_version(package) for package in VERSIONED_PACKAGES},
        "backend": backend,
    }


def select(
    grid: Iterable[Key],
    *,
    models: Sequence[str] | None = None,
    kernels: Sequence[str] | None = None,
    implementations: Sequence[int] | None = None,
    points: Sequence[str] | None = None,
) -> list[Key]:
    """The programs of `grid` matching every given filter (``None``: no filter on that part).

    ``points`` takes grid points (``'N=16,O=10,width=128'``) or ``'base'``, each model's first.

    Raises:
      ValueError: a filter value that matches nothing in `grid`, with the values that would.
    """
    grid = list(grid)
    firsts = {}
    for model, _, _, point in grid:
        firsts.setdefault(model, point)
    wanted = {"models": models, "kernels": kernels, "implementations": implementations, "points": points}
    available = {
        "models": sorted({k[0] for k in grid}),
        "kernels": sorted({k[1] for k in grid}),
        "implementations": sorted({k[2] for k in grid}),
        "points": ["base", *sorted({k[3] for k in grid})],
    }
    for name, values in wanted.items():
        for value in values or ():
            if value not in available[name]:
                raise ValueError(f"`{name}` must be among {available[name]}; got {value!r}")

    def keep(key: Key) -> bool:
        model, kernel, implementation, point = key
        if models and model not in models:
            return False
        if kernels and kernel not in kernels:
            return False
        if implementations and implementation not in implementations:
            return False
        return not points or point in points or ("base" in points and firsts[model] == point)

    return [key for key in grid if keep(key)]


def compute(keys: Iterable[Key], figures_of: Callable[[Key], Mapping[str, float]]) -> dict[Key, dict]:
    """`FIGURES` of every program in `keys`; `figures_of(key)` compiles one and returns
    ``_common.xla_figures`` of it (names ``flops``, ``bytes_accessed``, ``temp``, ``total``)."""
    result = {}
    for key in keys:
        raw = figures_of(key)
        result[key] = {name: float(raw[source]) for name, source in _SOURCE_NAMES.items() if source in raw}
    return result


def save(path: Path | str, baseline: Baseline, *, update_command: str) -> None:
    """Writes `baseline` as sorted JSON (one program per line block, diff-friendly), atomically."""
    records = [
        {"model": m, "kernel": k, "implementation": i, "point": p, **baseline.figures[m, k, i, p]}
        for m, k, i, p in sorted(baseline.figures)
    ]
    data = {
        "format": FORMAT_VERSION,
        "about": "XLA's figures of the asv suite's kernels, compared by asv_bench/xla_gate.py check; "
        f"regenerate with `{update_command}` (asv_bench/README.md)",
        "versions": baseline.versions,
        "grid": baseline.grid,
        "figures": records,
    }
    files.atomic_write(Path(path), json.dumps(data, indent=1) + "\n")


def load(path: Path | str) -> Baseline:
    """Reads a baseline written by `save`.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: not a baseline file of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no XLA baseline at {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not an XLA baseline of format {FORMAT_VERSION}")
    figures = {}
    for record in data["figures"]:
        key = (record["model"], record["kernel"], int(record["implementation"]), record["point"])
        figures[key] = {name: float(record[name]) for name in FIGURES if record.get(name) is not None}
    return Baseline(versions=dict(data["versions"]), grid=str(data["grid"]), figures=figures)


def check_comparable(
    baseline: Baseline, versions: Mapping[str, str], grid: str, keys: Sequence[Key], *, complete: bool = True
) -> None:
    """Raises `NotComparable` when `baseline` was made with other versions, another grid, lacks
    some of `keys` (programs the grid measures now and the baseline never saw) or, where `keys` is
    the `complete` grid, holds programs the grid no longer measures."""
    differing = {
        name: (baseline.versions.get(name, "?"), versions.get(name, "?"))
        for name in sorted(set(baseline.versions) | set(versions))
        if baseline.versions.get(name) != versions.get(name)
    }
    if differing:
        listed = ", ".join(
            f"{name} {old} (baseline) vs {new} (installed)" for name, (old, new) in differing.items()
        )
        raise NotComparable(
            f"the baseline was made with other versions: {listed}; XLA's figures are only comparable "
            "for one XLA, so compare nothing"
        )
    if baseline.grid != grid:
        raise NotComparable(
            f"the baseline holds the {baseline.grid!r} grid; this check runs the {grid!r} grid"
        )
    missing = [key for key in keys if key not in baseline.figures]
    if missing:
        shown = ", ".join(describe(key) for key in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise NotComparable(f"{len(missing)} program(s) of the grid are not in the baseline: {shown}{more}")
    stale = sorted(set(baseline.figures) - set(keys)) if complete else []
    if stale:
        shown = ", ".join(describe(key) for key in stale[:5])
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise NotComparable(
            f"{len(stale)} program(s) of the baseline are no longer in the grid: {shown}{more}"
        )


def compare(
    baseline: Mapping[Key, Mapping[str, float]],
    current: Mapping[Key, Mapping[str, float]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[Change]:
    """Every figure of `current` that moved by more than `tolerance` (relative) from `baseline`,
    either way; the largest growth first. Programs or figures absent from either are skipped.

    A figure moved when ``ratio = current / baseline`` is above ``1 + tolerance`` (grew: a
    regression) or below ``1 / (1 + tolerance)`` (shrank).

    Args:
      baseline, current: {key: {figure: value}}.
      tolerance: the relative change allowed, > 0 (0.10: a ratio up to 1.10, down to 1/1.10).

    Returns:
      The `Change` of every figure that moved.

    Raises:
      ValueError: `tolerance` not a finite number > 0.

    Example:
      >>> key = ("fc", "pntk", 1, "N=16,O=10,width=128")
      >>> moved = compare({key: {"flops": 100.0}}, {key: {"flops": 120.0}})
      >>> [(c.figure, round(c.ratio, 2), c.regression) for c in moved]
      [('flops', 1.2, True)]
    """
    tolerance = checks.positive("tolerance", tolerance)
    changes = []
    for key, figures in current.items():
        for name, value in figures.items():
            if key not in baseline or name not in baseline[key]:
                continue
            change = Change(key, name, float(baseline[key][name]), float(value))
            if change.ratio > 1 + tolerance or change.ratio < 1 / (1 + tolerance):
                changes.append(change)
    return sorted(changes, key=lambda c: -c.ratio)


def describe(key: Key) -> str:
    model, kernel, implementation, point = key
    return f"{model} {kernel} impl {implementation} {point}"


def format_changes(changes: Sequence[Change]) -> str:
    """`changes` as a table: program, figure, baseline, current, ratio, and grew / shrank."""
    header = ("model", "kernel", "impl", "point", "figure", "baseline", "current", "ratio", "")
    rows = [header]
    for c in changes:
        model, kernel, implementation, point = c.key
        rows.append(
            (
                model,
                kernel,
                str(implementation),
                point,
                c.figure,
                f"{c.baseline:.6g}",
                f"{c.current:.6g}",
                f"{c.ratio:.3f}",
                "GREW" if c.regression else "shrank",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
