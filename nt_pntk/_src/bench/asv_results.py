"""Scaling exponents and commit comparisons from the results of the asv suite (asv_bench/).

asv 0.6 saves one JSON file per commit and environment,
``results/<machine>/<commit[:8]>-<env>.json``, and the benchmarks' descriptions in
``results/benchmarks.json``. `load_results` turns them into one tidy `pandas.DataFrame`
with a row per measured figure:

* ``metric``: ``time`` (seconds; ``time_*``), ``peakmem`` (bytes over the reference
  process, see below; ``peakmem_*``), or the name of a ``track_*`` benchmark without the
  prefix (e.g. ``temp_bytes``, XLA's scratch memory);
* ``suite``: the benchmark's class without its kind suffix, lower case (``FCTime`` ->
  ``fc``, ``TiledPeakMem`` -> ``tiled``), or its ``model`` parameter;
* ``kernel``, ``implementation``: the parameters of that name (``-`` where absent);
* ``n``, ``outputs``, ``width``: the grid axes, from a ``point`` parameter
  (``'N=16,O=10,width=128'``) or parameters of those names;
* ``value``: the figure (NaN for a failed or skipped benchmark).

Peak memory: asv's ``peakmem_*`` is the peak RSS of the whole process, JAX's baseline of
some hundreds of MB included. Each is reduced by its reference: ``peakmem_reference``
of the same class and parameters where the class has one, otherwise
``PeakMemReference.peakmem_reference`` of the same ``model`` (suite).

Environments are kept apart, as ``asv compare`` does: asv names each environment (``env``,
e.g. ``virtualenv-py3.11`` or ``existing-py_..._python``) and the same commit measured in two
of them gives two sets of figures, never merged. Duplicates are dropped, references
subtracted, exponents fitted and commits compared within one environment; `environments`
lists them and `select_environment` keeps one.

`fit_exponents` fits ``log value = a · log x + c`` along each axis x in (N, O, width) for
every (env, metric, suite, kernel, implementation), over the points where the other two axes
are held at one value (the sweep with the most distinct x), with R². `compare` gives the
ratio contender / baseline of every figure measured in both commits, flagged above a
threshold (for every metric here, larger is worse).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

AXES = ("n", "outputs", "width")
AXIS_LABELS = {"n": "N", "outputs": "O", "width": "width"}
KEY_COLUMNS = ("metric", "suite", "kernel", "implementation")
_POINT_RE = re.compile(r"^N=(\d+),O=(\d+),width=(\d+)$")
_KIND_SUFFIX_RE = re.compile(r"(Time|PeakMem|Xla|Track|Mem)$")
REFERENCE_SUITE_BENCHMARK = "PeakMemReference.peakmem_reference"


# --- Reading asv's results ---------------------------------------------------------


class ResultsFormatError(ValueError):
    """A results file or ``benchmarks.json`` that is not what asv writes; the message names the file
    (and the benchmark) and what is wrong. Corrupt figures are errors, never NaN: a comparison that
    dropped them would pass having compared nothing."""


def _json_kind(value: Any) -> str:
    """How JSON names `value`'s kind, with the value where it is short: ``the string '2024'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a string"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    """`path`'s JSON; a `ResultsFormatError` naming the file where it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsFormatError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    except UnicodeDecodeError as e:
        raise ResultsFormatError(f"{path}: not valid JSON (not UTF-8 text: {e.reason})") from None


def _read_descriptions(path: Path) -> dict[str, Any]:
    """asv's ``benchmarks.json``: ``{benchmark: description, "version": int}``."""
    descriptions = _read_json(path)
    if not isinstance(descriptions, dict):
        raise ResultsFormatError(
            f"{path}: must be a JSON object of benchmark descriptions (asv's benchmarks.json); "
            f"got {_json_kind(descriptions)}"
        )
    for name, description in descriptions.items():
        if name == "version":
            continue
        where = f"{path}: benchmark {name}"
        if not isinstance(description, dict):
            raise ResultsFormatError(
                f"{where}: its description must be an object; got {_json_kind(description)}"
            )
        names = description.get("param_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ResultsFormatError(
                f"{where}: `param_names` must be a list of strings; got {_json_kind(names)}"
            )
        for key in ("type", "unit"):
            if description.get(key) is not None and not isinstance(description[key], str):
                raise ResultsFormatError(
                    f"{where}: `{key}` must be a string; got {_json_kind(description[key])}"
                )
    return descriptions


def _check_result_file(path: Path, data: dict) -> None:
    """A `ResultsFormatError` for a results file whose fields are not of the types asv writes."""
    commit = data["commit_hash"]
    if not (isinstance(commit, str) and commit):
        raise ResultsFormatError(
            f"{path}: `commit_hash` must be a string, the commit's git hash; got {_json_kind(commit)}"
        )
    expected = {
        "date": ("a number, milliseconds since the epoch", lambda v: v is None or _is_number(v)),
        "env_name": ("a string", lambda v: isinstance(v, str)),
        "params": ("an object", lambda v: isinstance(v, dict)),
        "result_columns": (
            "a list of strings",
            lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
        ),
        "results": ("an object of benchmark results", lambda v: isinstance(v, dict)),
    }
    for key, (what, ok) in expected.items():
        if key in data and not ok(data[key]):
            raise ResultsFormatError(f"{path}: `{key}` must be {what}; got {_json_kind(data[key])}")
    machine = data.get("params", {}).get("machine")
    if machine is not None and not isinstance(machine, str):
        raise ResultsFormatError(f"{path}: `params.machine` must be a string; got {_json_kind(machine)}")


def find_result_files(results_dir: Path, machine: str | None = None) -> list[Path]:
    """The result files under `results_dir` (all machines, or `machine`'s)."""
    results_dir = Path(results_dir)
    machines = [results_dir / machine] if machine else sorted(p for p in results_dir.iterdir() if p.is_dir())
    files = []
    for directory in machines:
        files += sorted(p for p in directory.glob("*.json") if p.name != "machine.json")
    return files


def _unquote(value: Any) -> Any:
    """asv stores parameter values as their repr: ``"'entk'"`` -> ``'entk'``, ``"16"`` -> 16."""
    if not isinstance(value, str):
        return value
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _metric(function_name: str, benchmark_type: str | None) -> str:
    if function_name.startswith("time_") or benchmark_type == "time":
        return "time"
    if function_name.startswith("peakmem_") or benchmark_type == "peakmemory":
        return "peakmem"
    if function_name.startswith("track_"):
        return function_name[len("track_") :]
    return function_name


def _suite(class_name: str | None) -> str:
    if not class_name:
        return "-"
    return _KIND_SUFFIX_RE.sub("", class_name).lower() or class_name.lower()


def load_results(
    results_dir: Path | str, *, machine: str | None = None, commits: Sequence[str] | None = None
) -> pd.DataFrame:
    """All figures of asv's result files under `results_dir`, one row each (see the module doc).

    Args:
      results_dir: asv's ``results_dir`` (``asv_bench/results``).
      machine: only this machine's results.
      commits: only commits whose hash starts with one of these.

    Returns:
      Columns ``commit, date, machine, env, benchmark, class, function, metric, suite,
      kernel, implementation, n, outputs, width, params, value, unit``; ``peakmem`` still
      raw (see `subtract_references`).

    Raises:
      ResultsFormatError: a file that is not JSON, or not in asv's format (a figure that is
        neither a number nor null, fields of other types); the message names the file.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no asv results directory {results_dir}")
    descriptions: dict[str, dict] = {}
    if (results_dir / "benchmarks.json").is_file():
        descriptions = _read_descriptions(results_dir / "benchmarks.json")
    rows = []
    for path in find_result_files(results_dir, machine):
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ResultsFormatError(
                f"{path}: must be a JSON object, an asv results file; got {_json_kind(data)}"
            )
        if "results" not in data and "commit_hash" not in data:
            continue  # not a results file
        for key in ("results", "commit_hash"):
            if key not in data:
                raise ResultsFormatError(f"{path}: an asv results file, but without `{key}`")
        _check_result_file(path, data)
        commit = data["commit_hash"]
        if commits and not any(commit.startswith(c) for c in commits):
            continue
        columns = data.get("result_columns", ["result", "params"])
        for name, entry in data["results"].items():
            rows += _benchmark_rows(name, entry, columns, descriptions.get(name, {}), data, path)
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    for axis in AXES:
        frame[axis] = pd.to_numeric(frame[axis], errors="coerce")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


_COLUMNS = [
    "commit",
    "date",
    "machine",
    "env",
    "benchmark",
    "class",
    "function",
    "metric",
    "suite",
    "kernel",
    "implementation",
    *AXES,
    "params",
    "value",
    "unit",
]


def _benchmark_rows(
    name: str, entry: Any, columns: list[str], description: dict, data: dict, path: Path
) -> list[dict]:
    where = f"{path}: benchmark {name}"
    if isinstance(entry, dict):  # asv < 0.5 wrote dicts; keep the fields we use.
        entry = [entry.get("result"), entry.get("params", [])]
    if not isinstance(entry, list):
        raise ResultsFormatError(
            f"{where}: its result must be a list (asv's result_columns); got {_json_kind(entry)}"
        )
    record = dict(zip(columns, entry, strict=False))
    values = record.get("result")
    params = record.get("params") or []
    if values is None:
        return []
    if not isinstance(values, list):
        values = [values]
    for i, value in enumerate(values):
        # null: failed; NaN: skipped (asv's conventions). Anything else would become NaN unseen.
        if value is not None and not _is_number(value):
            raise ResultsFormatError(f"{where}: figure {i} must be a number or null; got {_json_kind(value)}")
    if not (isinstance(params, list) and all(isinstance(p, list) for p in params)):
        raise ResultsFormatError(
            f"{where}: `params` must be a list of lists of parameter values; got {_json_kind(params)}"
        )
    parts = name.split(".")
    function = parts[-1]
    class_name = parts[-2] if len(parts) >= 3 else None
    param_names = description.get("param_names") or []
    if len(param_names) != len(params):  # benchmarks.json describes another version of it
        param_names = [f"param{i + 1}" for i in range(len(params))]
    combos = list(itertools.product(*params)) if params else [()]
    if len(combos) != len(values):
        raise ResultsFormatError(f"{where}: {len(values)} results for {len(combos)} parameter sets")
    metric = _metric(function, description.get("type"))
    unit = description.get("unit") or {"time": "seconds", "peakmem": "bytes"}.get(metric, "")
    rows = []
    for combo, value in zip(combos, values, strict=True):
        named = {p: _unquote(v) for p, v in zip(param_names, combo, strict=True)}
        axes = dict.fromkeys(AXES, np.nan)
        for p, v in named.items():
            match = _POINT_RE.match(str(v))
            if match:
                axes.update(zip(AXES, map(int, match.groups()), strict=True))
            elif p in AXES:
                axes[p] = v
        rows.append(
            {
                "commit": data["commit_hash"],
                "date": data.get("date"),
                "machine": data.get("params", {}).get("machine", path.parent.name),
                "env": data.get("env_name", ""),
                "benchmark": name,
                "class": class_name or "-",
                "function": function,
                "metric": metric,
                "suite": str(named.get("model", _suite(class_name))),
                "kernel": str(named.get("kernel", "-")),
                "implementation": str(named.get("implementation", "-")),
                **axes,
                "params": json.dumps(named, sort_keys=True),
                "value": np.nan if value is None else value,
                "unit": unit,
            }
        )
    return rows


def latest_per_commit(frame: pd.DataFrame) -> pd.DataFrame:
    """Where a commit has results from several runs in one environment: the newest of each figure.
    Results of different environments (``env``) stay apart: each is its own measurement."""
    if frame.empty:
        return frame
    frame = frame.sort_values("date", kind="stable")
    return frame.drop_duplicates(
        ["commit", "machine", "env", "benchmark", "params"], keep="last"
    ).reset_index(drop=True)


def environments(frame: pd.DataFrame) -> list[str]:
    """The asv environments (``env``) of `frame`, sorted."""
    return sorted(set(frame["env"]))


def select_environment(frame: pd.DataFrame, env: str) -> pd.DataFrame:
    """The rows of `frame` measured in asv environment `env`.

    Raises:
      ValueError: no results of `env`; the message lists the environments there are.
    """
    if env not in set(frame["env"]):
        raise ValueError(f"no results of environment {env!r}; the results have {environments(frame)}")
    return frame[frame["env"] == env].reset_index(drop=True)


def subtract_references(frame: pd.DataFrame) -> pd.DataFrame:
    """``peakmem`` figures minus their reference process (see the module doc); the reference
    rows themselves are dropped. A figure without a reference is dropped too, with its
    reference-less peak being meaningless next to the others."""
    is_peak = frame["metric"] == "peakmem"
    is_reference = is_peak & (frame["function"] == "peakmem_reference")
    peaks = frame[is_peak & ~is_reference].copy()
    references = frame[is_reference]
    # A reference process of the same commit, machine and environment only.
    same_class = references[["commit", "machine", "env", "class", "params", "value"]].rename(
        columns={"value": "same_class"}
    )
    suite_refs = references[references["benchmark"].str.endswith(REFERENCE_SUITE_BENCHMARK)]
    by_suite = suite_refs[["commit", "machine", "env", "suite", "value"]].rename(
        columns={"value": "by_suite"}
    )
    peaks = peaks.merge(same_class, on=["commit", "machine", "env", "class", "params"], how="left")
    peaks = peaks.merge(by_suite, on=["commit", "machine", "env", "suite"], how="left")
    peaks["reference"] = peaks["same_class"].fillna(peaks["by_suite"])
    peaks = peaks.drop(columns=["same_class", "by_suite"])
    peaks["value"] = peaks["value"] - peaks["reference"]
    peaks = peaks[peaks["reference"].notna()]
    rest = frame[~is_peak].assign(reference=np.nan)
    return pd.concat([rest, peaks], ignore_index=True)


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """`latest_per_commit` then `subtract_references`: the figures the report works on."""
    return subtract_references(latest_per_commit(frame))


def resolve_commit(frame: pd.DataFrame, prefix: str | None) -> str:
    """The full hash of the commit starting with `prefix`, or the newest commit for ``None``."""
    if frame.empty:
        raise ValueError("no asv results")
    commits = frame.groupby("commit")["date"].max().sort_values()
    if prefix is None:
        return str(commits.index[-1])
    matches = [c for c in commits.index if c.startswith(prefix)]
    if len(matches) != 1:
        found = ", ".join(c[:8] for c in commits.index)
        how_many = "no" if not matches else "several"
        raise ValueError(f"{how_many} commits match {prefix!r}; the results have: {found}")
    return matches[0]


# --- Fits ---------------------------------------------------------------------------


def fit_power_law(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, float]:
    """Least squares of ``log y = exponent · log x + log c``: ``(exponent, c, r2)``.

    R² is NaN with fewer than three points (two points fit exactly).
    """
    x = np.asarray(list(x), dtype=float)
    y = np.asarray(list(y), dtype=float)
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise ValueError("a fit needs at least two distinct x")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    r2 = math.nan
    if len(x) >= 3:
        residual = ly - (slope * lx + intercept)
        total = np.sum((ly - ly.mean()) ** 2)
        # A flat sweep (exponent 0 up to rounding) is fitted perfectly by definition.
        r2 = 1.0 - float(np.sum(residual**2) / total) if np.ptp(ly) > 1e-9 else 1.0
    return float(slope), float(math.exp(intercept)), r2


def sweep(group: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The rows of `group` along which only `axis` varies: among the sets of rows that share
    the other axes' values, the one with the most distinct values of `axis`; sorted."""
    others = [a for a in AXES if a != axis and group[a].notna().any()]
    rows = group[group[axis].notna()]
    if rows.empty:
        return rows
    if not others:
        return rows.sort_values(axis)
    best = None
    for _, candidate in rows.groupby(others, dropna=False):
        if best is None or candidate[axis].nunique() > best[axis].nunique():
            best = candidate
    return best.sort_values(axis)


def fit_exponents(frame: pd.DataFrame, *, commit: str | None = None, min_points: int = 3) -> pd.DataFrame:
    """Fitted exponents of every (env, metric, suite, kernel, implementation) along N, O and width.

    Args:
      frame: `prepare`'s output.
      commit: the commit to fit (default: the newest).
      min_points: fit only sweeps with at least this many usable points (2 fits any line
        exactly; a peak memory at or below its reference's is not usable).

    Returns:
      One row per fit: ``env, metric, suite, kernel, implementation, axis, exponent, r2,
      points, x_min, x_max, held`` (the other axes' values); figures that are NaN or
      not positive are left out of the fit. Each asv environment is fitted on its own.
    """
    commit = resolve_commit(frame, commit)
    data = frame[(frame["commit"] == commit) & frame["value"].notna() & (frame["value"] > 0)]
    rows = []
    for key, group in data.groupby(["env", *KEY_COLUMNS], sort=True):
        for axis in AXES:
            raw = sweep(group, axis)
            if raw.empty or raw[axis].nunique() < max(2, min_points):
                continue
            points = raw.groupby(axis, as_index=False)["value"].median()
            exponent, _, r2 = fit_power_law(points[axis], points["value"])
            held = {AXIS_LABELS[a]: int(raw[a].iloc[0]) for a in AXES if a != axis and raw[a].notna().any()}
            rows.append(
                {
                    **dict(zip(["env", *KEY_COLUMNS], key, strict=True)),
                    "axis": AXIS_LABELS[axis],
                    "exponent": exponent,
                    "r2": r2,
                    "points": len(points),
                    "x_min": points[axis].min(),
                    "x_max": points[axis].max(),
                    "held": held,
                }
            )
    return pd.DataFrame(
        rows, columns=["env", *KEY_COLUMNS, "axis", "exponent", "r2", "points", "x_min", "x_max", "held"]
    )


def exponent_table(fits: pd.DataFrame) -> pd.DataFrame:
    """`fit_exponents` as one row per (metric, suite, kernel, implementation), preceded by the
    environment where there are several, and one ``exponent (R²)`` column per axis."""
    if fits.empty:
        return pd.DataFrame()
    cells = fits.assign(
        cell=[
            f"{e:+.2f}" + ("" if math.isnan(r) else f" ({r:.2f})")
            for e, r in zip(fits["exponent"], fits["r2"], strict=True)
        ]
    )
    index = ["env", *KEY_COLUMNS] if fits["env"].nunique() > 1 else list(KEY_COLUMNS)
    table = cells.pivot_table(index=index, columns="axis", values="cell", aggfunc="first")
    ordered = [AXIS_LABELS[a] for a in AXES if AXIS_LABELS[a] in table.columns]
    return table[ordered].fillna("")


# --- Comparison ---------------------------------------------------------------------


def compare(frame: pd.DataFrame, baseline: str, contender: str, *, threshold: float = 1.2) -> pd.DataFrame:
    """Every figure measured in both commits in the same asv environment: ``ratio = contender /
    baseline``, ``worse`` when the ratio exceeds `threshold` and ``better`` when it is below
    1/`threshold`. A figure is paired only with the same environment's (as ``asv compare``).

    Args:
      frame: `prepare`'s output.
      baseline, contender: commit hashes or unique prefixes.
      threshold: the factor (> 1) beyond which a change is flagged.

    Returns:
      Columns ``env, metric, suite, kernel, implementation, n, outputs, width, benchmark, params,
      baseline, contender, ratio, flag`` (flag ``worse``, ``better`` or empty), the
      worst ratios first.
    """
    if not threshold > 1:
        raise ValueError(f"`threshold` must be > 1; got {threshold!r}")
    a, b = resolve_commit(frame, baseline), resolve_commit(frame, contender)
    keys = ["env", "benchmark", "params"]
    left = frame[frame["commit"] == a]
    right = frame[frame["commit"] == b][[*keys, "value"]]
    merged = left.merge(right, on=keys, suffixes=("_baseline", "_contender"))
    merged = merged.rename(columns={"value_baseline": "baseline", "value_contender": "contender"})
    valid = merged["baseline"].notna() & merged["contender"].notna() & (merged["baseline"] > 0)
    merged = merged[valid].copy()
    merged["ratio"] = merged["contender"] / merged["baseline"]
    merged["flag"] = np.where(
        merged["ratio"] > threshold, "worse", np.where(merged["ratio"] < 1 / threshold, "better", "")
    )
    columns = ["env", *KEY_COLUMNS, *AXES, "benchmark", "params", "baseline", "contender", "ratio", "flag"]
    return merged.sort_values("ratio", ascending=False, kind="stable")[columns].reset_index(drop=True)


def why_nothing_compared(frame: pd.DataFrame, baseline: str, contender: str) -> str:
    """Why `compare` of these commits is empty, in one sentence."""
    a, b = resolve_commit(frame, baseline), resolve_commit(frame, contender)
    left, right = frame[frame["commit"] == a], frame[frame["commit"] == b]
    in_a, in_b = environments(left), environments(right)
    if not set(in_a) & set(in_b):
        return (
            f"no environment measured both commits: {a[:8]} has {in_a}, {b[:8]} has {in_b}; figures of "
            "different environments are not compared"
        )
    keys = ["env", "benchmark", "params"]
    both = left.merge(right, on=keys, suffixes=("_a", "_b"))
    if both.empty:
        return (
            f"no benchmark was measured at the same parameters in both ({len(left)} figures of {a[:8]}, "
            f"{len(right)} of {b[:8]})"
        )
    return (
        f"each of the {len(both)} figures measured in both failed or was skipped (null or NaN) or is "
        "not positive in at least one of them"
    )


def compare_exponents(
    frame: pd.DataFrame, baseline: str, contender: str, *, min_points: int = 3
) -> pd.DataFrame:
    """The fitted exponents of both commits side by side (per environment), with their difference."""
    fa = fit_exponents(frame, commit=baseline, min_points=min_points)
    fb = fit_exponents(frame, commit=contender, min_points=min_points)
    keys = ["env", *KEY_COLUMNS, "axis"]
    merged = fa[[*keys, "exponent"]].merge(
        fb[[*keys, "exponent"]], on=keys, suffixes=("_baseline", "_contender")
    )
    merged["change"] = merged["exponent_contender"] - merged["exponent_baseline"]
    return merged


# --- Presentation -------------------------------------------------------------------


def format_value(value: float, unit: str) -> str:
    """``0.0123, 'seconds'`` -> ``'12.3ms'``; ``3.2e6, 'bytes'`` -> ``'3.05MiB'``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "seconds":
        for factor, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= factor:
                return f"{value / factor:.3g}{suffix}"
        return f"{value / 1e-9:.3g}ns"
    if unit == "bytes":
        for factor, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= factor:
                return f"{value / factor:.3g}{suffix}"
        return f"{value:.0f}B"
    return f"{value:.4g}"


def describe_point(row: Any) -> str:
    parts = [f"{AXIS_LABELS[a]}={int(getattr(row, a))}" for a in AXES if not pd.isna(getattr(row, a))]
    return ",".join(parts) or "-"


def plot_scaling(
    frame: pd.DataFrame, directory: Path | str, *, commit: str | None = None, min_points: int = 3
) -> list[Path]:
    """Log-log plots, one file per (metric, suite), and per environment where there are several
    (``<metric>_<suite>_<env>.png``): a panel per axis, a line per kernel and implementation, with
    each fitted exponent in the legend. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    commit = resolve_commit(frame, commit)
    data = frame[(frame["commit"] == commit) & frame["value"].notna() & (frame["value"] > 0)]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    several = data["env"].nunique() > 1
    for (env, metric, suite), group in data.groupby(["env", "metric", "suite"], sort=True):
        axes = [a for a in AXES if group[a].notna().any() and group[a].nunique() > 1]
        if not axes:
            continue
        unit = group["unit"].iloc[0]
        lines: dict[str, list] = {}
        for axis in axes:
            for (kernel, implementation), series in group.groupby(["kernel", "implementation"], sort=True):
                points = sweep(series, axis)
                if points.empty or points[axis].nunique() < max(2, min_points):
                    continue
                points = points.groupby(axis, as_index=False)["value"].median()
                exponent, _, _ = fit_power_law(points[axis], points["value"])
                label = kernel if implementation == "-" else f"{kernel} impl {implementation}"
                lines.setdefault(axis, []).append((points, f"{label}: {exponent:+.2f}"))
        if not lines:
            continue
        fig, panels = plt.subplots(1, len(lines), figsize=(4.5 * len(lines), 4), squeeze=False)
        for panel, (axis, series_list) in zip(panels[0], lines.items(), strict=True):
            ticks = set()
            for points, label in series_list:
                panel.loglog(points[axis], points["value"], "o-", label=label)
                ticks.update(points[axis])
            panel.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
            panel.minorticks_off()
            panel.set_xlabel(AXIS_LABELS[axis])
            panel.set_ylabel(f"{metric} ({unit})" if unit else metric)
            panel.grid(True, which="both", alpha=0.3)
            panel.legend(fontsize=7)
        where = f", env {env}" if several else ""
        fig.suptitle(
            f"{suite}: {metric} vs N, O, width (commit {commit[:8]}{where}; legend: fitted exponent)"
        )
        fig.tight_layout()
        path = directory / (f"{metric}_{suite}_{_file_safe(env)}.png" if several else f"{metric}_{suite}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "env"
