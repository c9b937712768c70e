"""Smoke tests of `nt-pntk demo` with tiny settings: the table's content is sane."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from nt_pntk import cli
from nt_pntk.cli import demo as _demo
from nt_pntk.experiments import data, models

N, O, WIDTH = 4, 3, 4  # noqa: E741  (O: the number of outputs, as in the paper)


def _spec(tmp_path, kernel: str, **changes) -> dict:
    spec = dict(
        kernel=kernel,
        out=O,
        implementation=1,
        n=N,
        width=WIDTH,
        seed=0,
        repeats=2,
        time_budget=10.0,
        max_temp_bytes=2**30,
        kernel_path=str(tmp_path / f"{kernel}.npy"),
        result_path=str(tmp_path / f"{kernel}.json"),
    )
    return {**spec, **changes}


@pytest.mark.parametrize("kernel, shape", [("eNTK", (N, N, O, O)), ("pNTK", (N, N))])
def test_measure_in_process(tmp_path, kernel, shape):
    spec = _spec(tmp_path, kernel)
    result = _demo.measure(spec)
    assert result["status"] == "ok"
    assert result["shape"] == "x".join(map(str, shape))
    assert np.load(spec["kernel_path"]).shape == shape
    assert result["runs"] == 2
    assert result["time_s"] > 0 and result["compile_s"] > 0
    assert result["peak_rss_mib"] > 0 and result["rss_increase_mib"] >= 0
    assert math.isnan(result["temp_mib"]) or result["temp_mib"] >= 0


def test_measure_skips_a_kernel_over_the_temp_budget(tmp_path):
    spec = _spec(tmp_path, "eNTK", max_temp_bytes=0)
    result = _demo.measure(spec)
    if math.isnan(result["temp_mib"]):
        pytest.skip("this backend reports no XLA memory analysis")
    assert result["status"].startswith("not run: XLA temp")
    assert result["runs"] == 0 and math.isnan(result["time_s"])


def test_approximation_errors_match_definitions():
    import neural_tangents as nt  # only after nt_pntk (its import hook), so not at the top

    x = jnp.asarray(data.digits_split(N, 0)[0])
    model = models.get_model("cnn", width=WIDTH, outputs=O)
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    entk = np.asarray(nt.empirical_ntk_fn(model.apply_fn, trace_axes=(), vmap_axes=0)(x, None, params))
    trace = np.asarray(nt.empirical_ntk_fn(model.apply_fn, vmap_axes=0)(x, None, params))  # NT's default
    pntk = entk.sum(axis=(2, 3)) / O
    errors = _demo.approximation_errors(entk, pntk, O)
    eye = np.eye(O)
    assert errors["trace_rel_error"] == pytest.approx(
        _demo.relative_error(entk, trace[:, :, None, None] * eye), rel=1e-4
    )
    assert errors["pntk_rel_error"] == pytest.approx(
        np.linalg.norm(entk - np.kron(pntk, eye).reshape(N, O, N, O).transpose(0, 2, 1, 3))
        / np.linalg.norm(entk),
        rel=1e-4,
    )
    # The trace is the Frobenius projection of the eNTK onto K ⊗ I_O: never worse than pNTK ⊗ I_O.
    assert 0 <= errors["trace_rel_error"] <= errors["pntk_rel_error"] + 1e-7 < 1


def test_approximation_errors_are_zero_for_an_exact_kronecker_product():
    k = np.random.default_rng(0).normal(size=(5, 5))
    entk = k[:, :, None, None] * np.eye(O)
    errors = _demo.approximation_errors(entk, k, O)
    assert errors["pntk_rel_error"] == pytest.approx(0, abs=1e-12)
    assert errors["trace_rel_error"] == pytest.approx(0, abs=1e-12)
    assert math.isnan(_demo.approximation_errors(None, k, O)["pntk_rel_error"])


def test_summarize_compares_the_fastest_implementations():
    rows = [
        # kernel, implementation, time, peak RSS, RSS increase, temp
        ("eNTK", 1, 2.0, 1000.0, 600.0, 500.0),
        ("eNTK", 3, 1.0, 3000.0, 2600.0, 2000.0),  # fastest eNTK
        ("pNTK", 1, 0.1, 450.0, 50.0, 10.0),  # fastest pNTK
        ("pNTK", 3, 0.2, 420.0, 20.0, 30.0),
    ]
    table = pd.DataFrame(
        [
            dict(
                out=10,
                kernel=k,
                implementation=i,
                status="ok",
                time_s=t,
                peak_rss_mib=r,
                rss_increase_mib=d,
                temp_mib=m,
            )
            for k, i, t, r, d, m in rows
        ]
        + [dict(out=10, kernel="eNTK", implementation=2, status="not run", time_s=math.nan)]
    )
    summary = _demo.summarize(table, 10)
    assert summary["best"]["eNTK"]["implementation"] == 3
    assert summary["best"]["pNTK"]["implementation"] == 1
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["speed (time)"]["ratio"] == pytest.approx(10.0)
    assert goals["speed (time)"]["verdict"] == "PASS"  # >= O/2 = 5
    assert goals["peak RSS (whole process)"]["verdict"] == "PASS"  # 3000/450 >= 2.5
    assert goals["peak RSS (increase over baseline)"]["ratio"] == pytest.approx(52.0)
    assert goals["XLA temp bytes"]["ratio"] == pytest.approx(200.0)
    assert goals["XLA temp bytes"]["per_metric_ratio"] == pytest.approx(50.0)  # 500 / 10
    slow = table.assign(time_s=table["time_s"].where(table["kernel"] == "eNTK", 1.0))
    assert {g["goal"]: g for g in _demo.summarize(slow, 10)["goals"]}["speed (time)"]["verdict"] == "FAIL"


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, capsys):
    csv = tmp_path / "demo.csv"
    argv = ["demo", "--n", str(N), "--outs", str(O), "--width", str(WIDTH)]
    argv += ["--implementations", "1", "--repeats", "1", "--out", str(csv)]
    assert cli.main(argv) == 0
    report = capsys.readouterr().out

    table = pd.read_csv(csv)
    assert list(table["kernel"]) == ["eNTK", "pNTK"]
    assert (table["status"] == "ok").all(), table["status"].tolist()
    assert list(table["shape"]) == [f"{N}x{N}x{O}x{O}", f"{N}x{N}"]  # NO×NO and N×N
    assert (table["time_s"] > 0).all() and (table["peak_rss_mib"] > 0).all()

    assert f"=== O = {O} ===" in report
    match = re.search(r"pNTK ⊗ I_O: ([0-9.]+)\s+NT's trace \(trace_axes=\(-1,\)\) ⊗ I_O: ([0-9.]+)", report)
    assert match, report
    pntk_error, trace_error = map(float, match.groups())
    assert 0 <= trace_error <= pntk_error < 1
    verdicts = re.findall(r"\b(PASS|FAIL)\b", report)
    assert len(verdicts) == 4, report


def test_demo_rejects_bad_arguments(capsys):
    assert cli.main(["demo", "--n", "0"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk demo: error: --n must be between")
