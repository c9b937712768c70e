"""`nt_pntk.bench_report` and `nt-pntk bench-report` on synthetic asv 0.6 results with known exponents."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nt_pntk
from nt_pntk import cli
from nt_pntk._src.bench import asv_results as br

COMMIT_A = "a" * 8 + "1" * 32
COMMIT_B = "b" * 8 + "2" * 32
RESULT_COLUMNS = [
    "result",
    "params",
    "version",
    "started_at",
    "duration",
    "stats_ci_99_a",
    "stats_ci_99_b",
    "stats_q_25",
    "stats_q_75",
    "stats_number",
    "stats_repeat",
    "samples",
    "profile",
]
BASE = {"n": 16, "outputs": 10, "width": 128}
SWEEPS = {"n": (8, 16, 32, 64), "outputs": (1, 10, 100), "width": (32, 128, 512)}
# Known exponents (N, O, width) of the synthetic figures.
TIME_EXPONENTS = {"entk": (2.0, 1.5, 1.0), "pntk": (2.0, 0.0, 1.0)}
TEMP_EXPONENTS = {"entk": (1.0, 2.0, 1.0), "pntk": (1.0, 0.0, 1.0)}
PEAK_EXPONENTS = {"entk": (1.0, 1.0, 0.5), "pntk": (1.0, 0.0, 0.5)}
REFERENCE_BYTES = 300 * 2**20
TILED_NS = (512, 1024, 2048)


def _points() -> list[dict[str, int]]:
    points = [dict(BASE)]
    for axis, values in SWEEPS.items():
        for value in values:
            point = {**BASE, axis: value}
            if point not in points:
                points.append(point)
    return points


def _label(point: dict[str, int]) -> str:
    return f"N={point['n']},O={point['outputs']},width={point['width']}"


def _power(point: dict[str, int], exponents: tuple[float, float, float], scale: float) -> float:
    return (
        scale * point["n"] ** exponents[0] * point["outputs"] ** exponents[1] * point["width"] ** exponents[2]
    )


def _quoted(values) -> list[str]:
    return [repr(v) if isinstance(v, str) else str(v) for v in values]


def write_results(
    results_dir: Path,
    commit: str,
    date: int,
    figures: dict,
    *,
    machine: str = "testbox",
    env: str = "existing",
) -> Path:
    """Writes `figures` {benchmark: (type, unit, param_names, params, values)} as asv 0.6 does:
    results/benchmarks.json and results/<machine>/<commit[:8]>-<env>.json."""
    descriptions = {"version": 2}
    results = {}
    for name, (kind, unit, param_names, params, values) in figures.items():
        quoted = [_quoted(p) for p in params]
        descriptions[name] = {
            "name": name,
            "type": kind,
            "unit": unit,
            "param_names": param_names,
            "params": quoted,
            "version": "0" * 64,
        }
        n = len(values)
        results[name] = [values, quoted, "0" * 64, date, 1.0, *[[None] * n] * 6]
    (results_dir / machine).mkdir(parents=True, exist_ok=True)
    (results_dir / "benchmarks.json").write_text(json.dumps(descriptions))
    (results_dir / machine / "machine.json").write_text(json.dumps({"machine": machine, "version": 1}))
    data = {
        "commit_hash": commit,
        "env_name": env,
        "date": date,
        "params": {"machine": machine, "python": "3.11"},
        "python": "3.11",
        "requirements": {},
        "env_vars": {},
        "result_columns": RESULT_COLUMNS,
        "results": results,
        "durations": {},
        "version": 2,
    }
    path = results_dir / machine / f"{commit[:8]}-{env}.json"
    path.write_text(json.dumps(data))
    return path


def synthetic_figures(*, entk_time_factor: float = 1.0, pntk_time_factor: float = 1.0) -> dict:
    """The FC suite (kernels entk/pntk, implementations 1 and 3, 8 grid points) and the tiled suite."""
    points = _points()
    kernels, implementations = ["entk", "pntk"], [1, 3]
    combos = list(itertools.product(kernels, implementations, points))
    factor = {"entk": entk_time_factor, "pntk": pntk_time_factor}
    time = [_power(p, TIME_EXPONENTS[k], 1e-6 * i * factor[k]) for k, i, p in combos]
    temp = [_power(p, TEMP_EXPONENTS[k], 64.0 * i) for k, i, p in combos]
    peak_combos = list(itertools.product(kernels, [1], points))
    peak = [REFERENCE_BYTES + _power(p, PEAK_EXPONENTS[k], 2**16) for k, _, p in peak_combos]
    names = ["kernel", "implementation", "point"]
    labels = [_label(p) for p in points]
    tiled_time = [3e-7 * n**2 for n in TILED_NS]
    tiled_reference = [400e6 + 10 * n for n in TILED_NS]
    tiled_peak = [r + 4.0 * n**2 for r, n in zip(tiled_reference, TILED_NS, strict=True)]
    return {
        "kernels.FCTime.time_kernel": ("time", "seconds", names, [kernels, implementations, labels], time),
        "kernels.FCXla.track_temp_bytes": ("track", "bytes", names, [kernels, implementations, labels], temp),
        "kernels.FCPeakMem.peakmem_kernel": ("peakmemory", "bytes", names, [kernels, [1], labels], peak),
        "kernels.PeakMemReference.peakmem_reference": (
            "peakmemory",
            "bytes",
            ["model"],
            [["fc", "cnn"]],
            [REFERENCE_BYTES, REFERENCE_BYTES + 2**20],
        ),
        "tiled.TiledTime.time_kernel_matrix": ("time", "seconds", ["n"], [list(TILED_NS)], tiled_time),
        "tiled.TiledPeakMem.peakmem_kernel_matrix": (
            "peakmemory",
            "bytes",
            ["n"],
            [list(TILED_NS)],
            tiled_peak,
        ),
        "tiled.TiledPeakMem.peakmem_reference": (
            "peakmemory",
            "bytes",
            ["n"],
            [list(TILED_NS)],
            tiled_reference,
        ),
    }


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "results"
    write_results(directory, COMMIT_A, 1_000, synthetic_figures())
    write_results(directory, COMMIT_B, 2_000, synthetic_figures(entk_time_factor=1.5, pntk_time_factor=0.7))
    return directory


def _exponent(fits, metric, suite, kernel, implementation, axis) -> tuple[float, float]:
    row = fits[
        (fits["metric"] == metric)
        & (fits["suite"] == suite)
        & (fits["kernel"] == kernel)
        & (fits["implementation"] == implementation)
        & (fits["axis"] == axis)
    ]
    assert len(row) == 1, row
    return float(row["exponent"].iloc[0]), float(row["r2"].iloc[0])


def test_load_results_reads_asv_format(results_dir):
    frame = br.load_results(results_dir)
    assert set(frame["commit"]) == {COMMIT_A, COMMIT_B}
    time = frame[(frame["commit"] == COMMIT_A) & (frame["benchmark"] == "kernels.FCTime.time_kernel")]
    assert len(time) == 2 * 2 * len(_points())
    assert set(time["metric"]) == {"time"} and set(time["suite"]) == {"fc"}
    assert set(time["kernel"]) == {"entk", "pntk"} and set(time["implementation"]) == {"1", "3"}
    row = time[(time["kernel"] == "entk") & (time["implementation"] == "3") & (time["outputs"] == 100)]
    assert (row["n"].item(), row["width"].item()) == (16, 128)
    assert row["value"].item() == pytest.approx(
        _power({**BASE, "outputs": 100}, TIME_EXPONENTS["entk"], 3e-6)
    )
    temp = frame[frame["benchmark"] == "kernels.FCXla.track_temp_bytes"]
    assert set(temp["metric"]) == {"temp_bytes"} and set(temp["unit"]) == {"bytes"}
    tiled = frame[frame["benchmark"] == "tiled.TiledTime.time_kernel_matrix"]
    assert set(tiled["suite"]) == {"tiled"} and sorted(tiled["n"].unique()) == list(TILED_NS)


def test_failed_and_skipped_figures_are_nan_and_not_fitted(tmp_path):
    figures = synthetic_figures()
    kind, unit, names, params, values = figures["kernels.FCTime.time_kernel"]
    values = list(values)
    labels = params[2]  # entk, implementation 1 come first
    values[labels.index(_label({**BASE, "n": 64}))] = None  # failed
    values[labels.index(_label({**BASE, "width": 512}))] = math.nan  # skipped
    figures = {"kernels.FCTime.time_kernel": (kind, unit, names, params, values)}
    write_results(tmp_path, COMMIT_A, 1, figures)
    frame = br.prepare(br.load_results(tmp_path))
    assert frame["value"].isna().sum() == 2
    fits = br.fit_exponents(frame)
    assert _exponent(fits, "time", "fc", "entk", "1", "N")[0] == pytest.approx(2.0)
    assert (
        fits[(fits["kernel"] == "entk") & (fits["implementation"] == "1") & (fits["axis"] == "N")][
            "points"
        ].item()
        == 3
    )
    assert _exponent(fits, "time", "fc", "entk", "1", "O")[0] == pytest.approx(1.5)
    assert fits[(fits["kernel"] == "entk") & (fits["implementation"] == "1")]["axis"].tolist() == ["N", "O"]


def test_fitted_exponents_match_the_known_ones(results_dir):
    frame = br.prepare(br.load_results(results_dir))
    fits = br.fit_exponents(frame, commit=COMMIT_A[:6])
    for kernel, implementation in itertools.product(["entk", "pntk"], ["1", "3"]):
        for metric, exponents in (("time", TIME_EXPONENTS), ("temp_bytes", TEMP_EXPONENTS)):
            for axis, expected in zip(("N", "O", "width"), exponents[kernel], strict=True):
                exponent, r2 = _exponent(fits, metric, "fc", kernel, implementation, axis)
                assert exponent == pytest.approx(expected, abs=1e-9)
                assert r2 == pytest.approx(1.0)
    # The reference process is subtracted before the fit: the exponents are the kernel's own.
    for kernel in ("entk", "pntk"):
        for axis, expected in zip(("N", "O", "width"), PEAK_EXPONENTS[kernel], strict=True):
            assert _exponent(fits, "peakmem", "fc", kernel, "1", axis)[0] == pytest.approx(expected, abs=1e-9)
    # The tiled suite: its own same-class reference; N only.
    assert _exponent(fits, "time", "tiled", "-", "-", "N")[0] == pytest.approx(2.0)
    assert _exponent(fits, "peakmem", "tiled", "-", "-", "N")[0] == pytest.approx(2.0)
    assert set(fits[fits["suite"] == "tiled"]["axis"]) == {"N"}
    n_fit = fits[(fits["axis"] == "N") & (fits["suite"] == "fc")]
    assert set(n_fit["points"]) == {4} and n_fit["held"].iloc[0] == {"O": 10, "width": 128}


def test_peakmem_references_are_subtracted_and_dropped(results_dir):
    frame = br.prepare(br.load_results(results_dir))
    peaks = frame[(frame["metric"] == "peakmem") & (frame["commit"] == COMMIT_A)]
    assert not peaks["function"].eq("peakmem_reference").any()
    fc = peaks[(peaks["suite"] == "fc") & (peaks["kernel"] == "pntk")]
    fc = fc[(fc["n"] == 16) & (fc["outputs"] == 10) & (fc["width"] == 128)]
    assert fc["value"].item() == pytest.approx(_power(BASE, PEAK_EXPONENTS["pntk"], 2**16))
    assert fc["reference"].item() == REFERENCE_BYTES
    tiled = peaks[peaks["suite"] == "tiled"].sort_values("n")
    np.testing.assert_allclose(tiled["value"], [4.0 * n**2 for n in TILED_NS])


def test_noisy_figures_give_r2_below_one():
    x = [1, 2, 4, 8, 16]
    noise = [1.0, 1.3, 0.8, 1.2, 0.9]
    exponent, scale, r2 = br.fit_power_law(x, [3.0 * v**1.5 * e for v, e in zip(x, noise, strict=True)])
    assert 1.3 < exponent < 1.7 and 0.9 < r2 < 1.0
    exponent, scale, r2 = br.fit_power_law([2, 8], [5.0 * 2**2, 5.0 * 8**2])
    assert exponent == pytest.approx(2.0) and scale == pytest.approx(5.0) and math.isnan(r2)
    with pytest.raises(ValueError, match="two distinct"):
        br.fit_power_law([4, 4], [1.0, 2.0])


def test_compare_flags_figures_beyond_the_threshold(results_dir):
    frame = br.prepare(br.load_results(results_dir))
    table = br.compare(frame, COMMIT_A[:8], COMMIT_B[:8], threshold=1.2)
    time = table[table["metric"] == "time"]
    entk = time[time["kernel"] == "entk"]
    pntk = time[time["kernel"] == "pntk"]
    np.testing.assert_allclose(entk["ratio"], 1.5)
    np.testing.assert_allclose(pntk["ratio"], 0.7)
    assert set(entk["flag"]) == {"worse"} and set(pntk["flag"]) == {"better"}
    unchanged = table[table["metric"] != "time"]
    np.testing.assert_allclose(unchanged["ratio"], 1.0)
    assert set(unchanged["flag"]) == {""}
    assert table["ratio"].iloc[0] == pytest.approx(1.5)  # worst first
    # A higher threshold flags nothing worse; the exponents did not move.
    assert not br.compare(frame, COMMIT_A, COMMIT_B, threshold=1.6)["flag"].eq("worse").any()
    moved = br.compare_exponents(frame, COMMIT_A, COMMIT_B)
    np.testing.assert_allclose(moved["change"], 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="threshold"):
        br.compare(frame, COMMIT_A, COMMIT_B, threshold=1.0)


def test_resolve_commit(results_dir):
    frame = br.load_results(results_dir)
    assert br.resolve_commit(frame, None) == COMMIT_B  # newest
    assert br.resolve_commit(frame, "aaaa") == COMMIT_A
    with pytest.raises(ValueError, match="no commits match"):
        br.resolve_commit(frame, "ccc")


def _entk_base_time(frame, **where) -> list[float]:
    rows = frame[(frame["metric"] == "time") & (frame["kernel"] == "entk") & (frame["implementation"] == "1")]
    rows = rows[(rows["n"] == 16) & (rows["outputs"] == 10) & (rows["width"] == 128)]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows["value"].tolist()


def test_newest_result_of_a_commit_and_environment_wins(tmp_path):
    old = write_results(tmp_path, COMMIT_A, 1, synthetic_figures())
    old.rename(old.with_name("older-run.json"))  # another run in the same environment
    write_results(tmp_path, COMMIT_A, 2, synthetic_figures(entk_time_factor=2.0))
    frame = br.prepare(br.load_results(tmp_path))
    assert _entk_base_time(frame) == [pytest.approx(2.0 * _power(BASE, TIME_EXPONENTS["entk"], 1e-6))]


VENV = "virtualenv-py3.11"


def _figures_in_a_slower_environment(time_factor: float) -> dict:
    """`synthetic_figures` as another environment measures them: every time `time_factor` times
    larger, and a process (reference included) 100 MiB larger."""
    figures = synthetic_figures(entk_time_factor=time_factor, pntk_time_factor=time_factor)
    for name, (kind, unit, names, params, values) in list(figures.items()):
        if kind == "peakmemory":
            figures[name] = (kind, unit, names, params, [v + 100 * 2**20 for v in values])
    return figures


@pytest.fixture
def two_environments(tmp_path: Path) -> Path:
    """Commits A and B, each measured in two environments; B's times are 1.5 times A's in both."""
    directory = tmp_path / "results"
    write_results(directory, COMMIT_A, 1_000, synthetic_figures(), env="existing")
    write_results(directory, COMMIT_A, 1_500, _figures_in_a_slower_environment(2.0), env=VENV)
    write_results(directory, COMMIT_B, 2_000, synthetic_figures(entk_time_factor=1.5, pntk_time_factor=1.5))
    write_results(directory, COMMIT_B, 2_500, _figures_in_a_slower_environment(3.0), env=VENV)
    return directory


def test_environments_of_one_commit_are_kept_apart(two_environments):
    frame = br.prepare(br.load_results(two_environments))
    assert br.environments(frame) == ["existing", VENV]
    base = _power(BASE, TIME_EXPONENTS["entk"], 1e-6)
    assert _entk_base_time(frame, commit=COMMIT_A, env="existing") == [pytest.approx(base)]
    assert _entk_base_time(frame, commit=COMMIT_A, env=VENV) == [pytest.approx(2.0 * base)]
    # Each environment's peaks minus its own reference: the same kernel figures in both.
    peaks = frame[(frame["metric"] == "peakmem") & (frame["suite"] == "fc") & (frame["commit"] == COMMIT_A)]
    assert len(peaks) == 2 * 2 * len(_points())
    expected = [_power(p, PEAK_EXPONENTS[k], 2**16) for k in ("entk", "pntk") for p in _points()]
    for env in ("existing", VENV):
        np.testing.assert_allclose(peaks[peaks["env"] == env]["value"], expected)
    fits = br.fit_exponents(frame, commit=COMMIT_A)
    assert set(fits["env"]) == {"existing", VENV}
    time_fits = fits[(fits["metric"] == "time") & (fits["suite"] == "fc")]
    assert len(time_fits) == 2 * 2 * 2 * 3  # env × kernel × implementation × axis
    table = br.exponent_table(fits)
    assert table.index.names[0] == "env"


def test_comparison_pairs_figures_of_the_same_environment(two_environments):
    frame = br.prepare(br.load_results(two_environments))
    table = br.compare(frame, COMMIT_A, COMMIT_B, threshold=1.2)
    time = table[(table["metric"] == "time") & (table["suite"] == "fc")]
    assert len(time) == 2 * 2 * 2 * len(_points())  # each figure once per environment
    np.testing.assert_allclose(time["ratio"], 1.5)
    assert set(time["env"]) == {"existing", VENV}
    one = br.compare(
        br.prepare(br.select_environment(br.load_results(two_environments), VENV)), COMMIT_A, COMMIT_B
    )
    assert set(one["env"]) == {VENV} and len(one[one["metric"] == "time"]) == 2 * 2 * len(_points()) + 3


def test_cli_env_option(two_environments, capsys):
    argv = ["bench-report", "--results", str(two_environments), "--plots", ""]
    assert cli.main([*argv, "--env", "nosuch"]) == 2
    err = _error_line(capsys)
    assert f"--env nosuch: no results of environment 'nosuch'; the results have ['existing', '{VENV}']" in err
    assert cli.main([*argv, "--compare", COMMIT_A[:8], COMMIT_B[:8]]) == 0
    out = capsys.readouterr().out
    assert f"asv environments: existing, {VENV}; each reported apart" in out
    # 2 environments × 32 FC times (kernel × implementation × point), each 1.5 times slower.
    assert "64 worse (ratio > 1.2)" in out
    assert cli.main([*argv, "--env", VENV, "--compare", COMMIT_A[:8], COMMIT_B[:8]]) == 0
    out = capsys.readouterr().out
    assert "asv environments" not in out and "32 worse (ratio > 1.2)" in out


def test_format_value():
    assert br.format_value(0.0123, "seconds") == "12.3ms"
    assert br.format_value(3 * 2**20, "bytes") == "3MiB"
    assert br.format_value(math.nan, "bytes") == "n/a"


@pytest.mark.slow
def test_cli_report_and_comparison(results_dir, tmp_path, capsys):
    plots = tmp_path / "plots"
    csv = tmp_path / "csv"
    argv = ["bench-report", "--results", str(results_dir), "--plots", str(plots), "--csv", str(csv)]
    assert cli.main([*argv, "--commit", COMMIT_A[:8]]) == 0
    out = capsys.readouterr().out
    assert "Fitted exponents" in out and "+1.50 (1.00)" in out and "+0.00 (1.00)" in out
    assert sorted(p.name for p in plots.iterdir()) == [
        "peakmem_fc.png",
        "peakmem_tiled.png",
        "temp_bytes_fc.png",
        "time_fc.png",
        "time_tiled.png",
    ]
    assert (csv / f"exponents-{COMMIT_A[:8]}.csv").is_file()

    compare = [*argv, "--plots", "", "--compare", COMMIT_A[:8], COMMIT_B[:8]]
    assert cli.main(compare) == 0
    out = capsys.readouterr().out
    assert "16 worse (ratio > 1.2), 16 better" in out
    assert "1.500" in out and "worse" in out and "0.700" in out
    assert cli.main([*compare, "--strict"]) == 1
    capsys.readouterr()
    assert cli.main([*compare, "--strict", "--threshold", "1.6"]) == 0
    assert (csv / f"compare-{COMMIT_A[:8]}-{COMMIT_B[:8]}.csv").is_file()


def _error_line(capsys) -> str:
    """The command's stderr, which must be exactly one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("nt-pntk bench-report: error: "), err
    return err


def test_cli_errors(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert cli.main(["bench-report", "--results", str(missing), "--plots", ""]) == 2
    assert f"--results {missing} is not a folder" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert cli.main(["bench-report", "--results", str(tmp_path / "empty"), "--plots", ""]) == 1
    err = _error_line(capsys)
    assert f"no asv results under {tmp_path / 'empty'} yet" in err
    assert "bash asv_bench/run.sh" in err and "asv_bench/README.md" in err


def test_cli_on_a_fresh_checkout_says_how_to_make_results(tmp_path, monkeypatch, capsys):
    """No asv_bench/results yet (the suite never ran): say so and how to run it, not a traceback."""
    (tmp_path / "asv_bench").mkdir()
    (tmp_path / "asv_bench" / "asv.conf.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench-report", "--plots", ""]) == 1
    err = _error_line(capsys)
    assert f"no asv results yet: {tmp_path / 'asv_bench' / 'results'} does not exist" in err
    assert "bash asv_bench/run.sh" in err and "asv_bench/README.md" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--commit", "ffff"], "--commit ffff: no commits match 'ffff'; the results have: aaaaaaaa"),
        (["--compare", COMMIT_A[:8], "0000"], "--compare 0000: no commits match '0000'"),
        (["--threshold", "0.5"], "--threshold must be > 1; got 0.5"),
        (["--metric", "nosuch"], "--metric nosuch matches no results; the results have ["),
    ],
)
def test_cli_bad_arguments_exit_2(results_dir, capsys, options, message):
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", "", *options]) == 2
    assert message in _error_line(capsys)


def test_sweeps_with_too_few_usable_points_are_not_fitted(tmp_path):
    """A peak at or below its reference is noise: dropped; a two-point sweep is fitted only on request."""
    figures = synthetic_figures()
    kind, unit, names, params, values = figures["kernels.FCPeakMem.peakmem_kernel"]
    values = list(values)
    labels = params[2]
    values[labels.index(_label({**BASE, "outputs": 1}))] = REFERENCE_BYTES - 2**20  # entk, O=1
    figures["kernels.FCPeakMem.peakmem_kernel"] = (kind, unit, names, params, values)
    write_results(tmp_path, COMMIT_A, 1, figures)
    frame = br.prepare(br.load_results(tmp_path))
    fits = br.fit_exponents(frame)
    peak = fits[(fits["metric"] == "peakmem") & (fits["kernel"] == "entk")]
    assert set(peak["axis"]) == {"N", "width"}
    exponent, r2 = _exponent(br.fit_exponents(frame, min_points=2), "peakmem", "fc", "entk", "1", "O")
    assert exponent == pytest.approx(PEAK_EXPONENTS["entk"][1]) and math.isnan(r2)


def test_bench_report_imports_neither_jax_nor_scipy(results_dir, tmp_path):
    """A report (exponents, CSV files, a comparison) in a fresh interpreter: pandas, no JAX, NT or
    SciPy (seconds of start-up for nothing)."""
    argv = ["bench-report", "--results", str(results_dir), "--plots", ""]  # plots: matplotlib, above
    argv += ["--csv", str(tmp_path / "csv"), "--compare", COMMIT_A[:8], COMMIT_B[:8]]
    code = textwrap.dedent(
        f"""
        import sys
        from nt_pntk.cli import main
        code = main({argv!r})
        loaded = {{m.split(".")[0] for m in sys.modules}}
        heavy = sorted(loaded & {{"jax", "jaxlib", "neural_tangents", "scipy"}})
        print("EXIT", code, "HEAVY", ",".join(heavy), file=sys.stderr)
        """
    )
    checkout = str(Path(nt_pntk.__file__).resolve().parents[1])  # this checkout's package, not another
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.stderr.splitlines()[-1] == "EXIT 0 HEAVY ", proc.stderr
    assert "Fitted exponents" in proc.stdout and "Comparison" in proc.stdout
    assert any((tmp_path / "csv").glob("exponents-*.csv")) and any((tmp_path / "csv").glob("compare-*.csv"))


# --- Corrupt results files: an error naming the file, never figures silently dropped. ---


def _corrupt(results_dir: Path, commit: str, change) -> Path:
    """Rewrites `commit`'s results file of `results_dir` with `change(data)` (its new JSON value)."""
    path = results_dir / "testbox" / f"{commit[:8]}-existing.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return path


def _with_first_time_figure(value):
    def change(data):
        data["results"]["kernels.FCTime.time_kernel"][0][0] = value
        return data

    return change


def test_strict_comparison_with_a_string_figure_fails(results_dir, capsys):
    """A string figure became NaN, was dropped, and the strict gate passed on what remained (or on
    nothing: "0 figures in both; 0 worse", exit 0)."""
    path = _corrupt(results_dir, COMMIT_B, _with_first_time_figure("1.2e-3s"))
    argv = ["bench-report", "--results", str(results_dir), "--plots", ""]
    assert cli.main([*argv, "--compare", COMMIT_A[:8], COMMIT_B[:8], "--strict", "--threshold", "1.6"]) == 2
    err = _error_line(capsys)
    assert (
        f"{path}: benchmark kernels.FCTime.time_kernel: figure 0 must be a number or null; got the string "
        in err
    )
    assert "'1.2e-3s'" in err


def _only_time_figures(results_dir: Path, contender_values) -> None:
    """Commits A and B with one FC time benchmark each; B's figures replaced by `contender_values`."""
    kind, unit, names, params, values = synthetic_figures()["kernels.FCTime.time_kernel"]
    write_results(
        results_dir, COMMIT_A, 1, {"kernels.FCTime.time_kernel": (kind, unit, names, params, values)}
    )
    contender = contender_values(values)
    write_results(
        results_dir, COMMIT_B, 2, {"kernels.FCTime.time_kernel": (kind, unit, names, params, contender)}
    )


@pytest.mark.parametrize(
    ("contender_values", "reason"),
    [
        (
            lambda values: [None] * len(values),
            "each of the 32 figures measured in both failed or was skipped",
        ),
        (
            lambda values: [math.nan] * len(values),
            "each of the 32 figures measured in both failed or was skipped",
        ),
    ],
)
def test_strict_comparison_of_nothing_fails(tmp_path, capsys, contender_values, reason):
    _only_time_figures(tmp_path, contender_values)
    argv = [
        "bench-report",
        "--results",
        str(tmp_path),
        "--plots",
        "",
        "--compare",
        COMMIT_A[:8],
        COMMIT_B[:8],
    ]
    assert cli.main(argv) == 0  # a report: it says so
    assert f"Nothing compared: {reason}" in capsys.readouterr().out
    assert cli.main([*argv, "--strict"]) == 1  # a gate: it fails
    err = _error_line(capsys)
    assert f"--strict: the comparison {COMMIT_A[:8]} -> {COMMIT_B[:8]} compared no figure: {reason}" in err


def test_strict_comparison_across_environments_fails(tmp_path, capsys):
    write_results(tmp_path, COMMIT_A, 1, synthetic_figures(), env="existing")
    write_results(tmp_path, COMMIT_B, 2, synthetic_figures(), env=VENV)
    argv = [
        "bench-report",
        "--results",
        str(tmp_path),
        "--plots",
        "",
        "--compare",
        COMMIT_A[:8],
        COMMIT_B[:8],
    ]
    assert cli.main([*argv, "--strict"]) == 1
    err = _error_line(capsys)
    assert f"no environment measured both commits: {COMMIT_A[:8]} has ['existing'], {COMMIT_B[:8]} has" in err


def test_strict_comparison_of_different_benchmarks_fails(tmp_path, capsys):
    figures = synthetic_figures()
    time = figures["kernels.FCTime.time_kernel"]
    write_results(tmp_path, COMMIT_A, 1, {"kernels.FCTime.time_kernel": time})
    write_results(tmp_path, COMMIT_B, 2, {"kernels.FCTime.time_renamed": time})
    argv = [
        "bench-report",
        "--results",
        str(tmp_path),
        "--plots",
        "",
        "--compare",
        COMMIT_A[:8],
        COMMIT_B[:8],
    ]
    assert cli.main([*argv, "--strict"]) == 1
    assert (
        f"no benchmark was measured at the same parameters in both (32 figures of {COMMIT_A[:8]}, 32 of"
        in (_error_line(capsys))
    )


TIME = "benchmark kernels.FCTime.time_kernel"


def _set(key, value):
    def change(data):
        data[key] = value
        return data

    return change


def _entry(change_entry):
    def change(data):
        entry = data["results"]["kernels.FCTime.time_kernel"]
        data["results"]["kernels.FCTime.time_kernel"] = change_entry(entry)
        return data

    return change


def _with_params(params):
    def change(entry):
        entry[1] = params
        return entry

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: None, "must be a JSON object, an asv results file; got null"),
        (lambda data: 3, "must be a JSON object, an asv results file; got the number 3"),
        (lambda data: [data], "must be a JSON object, an asv results file; got a list"),
        (_set("results", []), "`results` must be an object of benchmark results; got a list"),
        (_set("results", 7), "`results` must be an object of benchmark results; got the number 7"),
        (
            _set("commit_hash", 12345678),
            "`commit_hash` must be a string, the commit's git hash; got the number",
        ),
        (
            _set("date", "2024-01-01"),
            "`date` must be a number, milliseconds since the epoch; got the string ",
        ),
        (_set("env_name", 3), "`env_name` must be a string; got the number 3"),
        (_set("result_columns", "result"), "`result_columns` must be a list of strings; got the string"),
        (_set("params", []), "`params` must be an object; got a list"),
        (_set("params", {"machine": 1}), "`params.machine` must be a string; got the number 1"),
        (
            lambda data: {k: v for k, v in data.items() if k != "commit_hash"},
            "an asv results file, but without `commit_hash`",
        ),
        (_entry(lambda entry: 5), "benchmark kernels.FCTime.time_kernel: its result must be a list"),
        (
            _entry(_with_params("'entk'")),
            f"{TIME}: `params` must be a list of lists of parameter values; got the str",
        ),
        (
            _entry(_with_params(["'entk'", "1"])),
            f"{TIME}: `params` must be a list of lists of parameter values; got a list",
        ),
        (
            _with_first_time_figure([1.0]),
            "benchmark kernels.FCTime.time_kernel: figure 0 must be a number or null; got a",
        ),
        (_with_first_time_figure(True), f"{TIME}: figure 0 must be a number or null; got the boolean true"),
        (
            _entry(lambda entry: [entry[0][:-1], *entry[1:]]),
            "benchmark kernels.FCTime.time_kernel: 31 results for 32 parameter sets",
        ),
    ],
)
def test_malformed_results_file_exits_2_naming_it(results_dir, capsys, change, message):
    path = _corrupt(results_dir, COMMIT_B, change)
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", ""]) == 2
    err = _error_line(capsys)
    assert f"error: {path}: {message}" in err
    assert err.rstrip().endswith("fix or remove the file, or rerun the benchmarks")
    with pytest.raises(br.ResultsFormatError, match=re.escape(f"{path}: {message}")):
        br.load_results(results_dir)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"commit_hash": "abc", ',
            "not valid JSON (Expecting property name enclosed in double quotes at line 1, column",
        ),
        ("", "not valid JSON (Expecting value at line 1, column 1)"),
    ],
)
def test_results_file_that_is_not_json(results_dir, capsys, text, message):
    path = results_dir / "testbox" / f"{COMMIT_B[:8]}-existing.json"
    path.write_text(text)
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", ""]) == 2
    assert f"error: {path}: {message}" in _error_line(capsys)


def test_results_file_that_is_not_text(results_dir, capsys):
    path = results_dir / "testbox" / f"{COMMIT_B[:8]}-existing.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", ""]) == 2
    assert f"error: {path}: not valid JSON (not UTF-8 text" in _error_line(capsys)


@pytest.mark.parametrize(
    ("descriptions", "message"),
    [
        ([], "must be a JSON object of benchmark descriptions (asv's benchmarks.json); got a list"),
        (None, "must be a JSON object of benchmark descriptions (asv's benchmarks.json); got null"),
        (
            {"kernels.FCTime.time_kernel": []},
            "benchmark kernels.FCTime.time_kernel: its description must be an object",
        ),
        (
            {"kernels.FCTime.time_kernel": {"param_names": "kernel"}},
            f"{TIME}: `param_names` must be a list of strings; got the string 'kernel'",
        ),
        ({"kernels.FCTime.time_kernel": {"unit": 1}}, f"{TIME}: `unit` must be a string; got the number 1"),
    ],
)
def test_malformed_benchmarks_json_exits_2_naming_it(results_dir, capsys, descriptions, message):
    path = results_dir / "benchmarks.json"
    path.write_text(json.dumps(descriptions))
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", ""]) == 2
    assert f"error: {path}: {message}" in _error_line(capsys)
    path.write_text("{nope")
    assert cli.main(["bench-report", "--results", str(results_dir), "--plots", ""]) == 2
    assert f"error: {path}: not valid JSON (" in _error_line(capsys)
