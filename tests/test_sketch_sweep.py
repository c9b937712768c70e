"""scripts/sketch_sweep.py: the sketch's error sweep, run small (FC and CNN, `--quick` sizes).

Checked against references written here: the CSV's columns, one cell recomputed through the public
`Sketch` and `PNTK` kernel functions (not the script's traced-seed features nor its eNTK route), the
slopes refitted with NumPy, and resumption by content.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from nt_pntk import regression
from nt_pntk._src.kernels.sketch import SKETCH_VERSION
from nt_pntk.approximations import PNTK, Sketch
from nt_pntk.experiments import data, models

SCRIPT = Path(__file__).parents[1] / "scripts" / "sketch_sweep.py"
COLUMNS = [
    "network",
    "architecture",
    "width",
    "depth",
    "n_train",
    "n_test",
    "init_seed",
    "ridge",
    "sketch",
    "method",
    "k",
    "seed",
    "parameters",
    "kernel_error",
    "prediction_gap",
    "accuracy",
    "seconds",
]
ARGS = ["--quick", "--networks", "fc", "cnn"]


def _script():
    spec = importlib.util.spec_from_file_location("sketch_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sketch-sweep")
    module = _script()
    summary = module.main([*ARGS, "--output", str(out)])
    return module, out, summary


def test_writes_every_cell_with_its_columns(sweep):
    _, out, summary = sweep
    with (out / "results.csv").open(newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    rows = _rows(out / "results.csv")
    # 2 networks × 2 methods × k ∈ {256, 1024} × 3 seeds, each once, and both references.
    assert len(rows) == summary["computed"] - 2 == 24
    assert {(r["network"], r["method"], r["k"], r["seed"]) for r in rows} == {
        (n, m, k, s)
        for n in ("fc", "cnn")
        for m in ("tensorsketch", "countsketch")
        for k in ("256", "1024")
        for s in ("0", "1", "2")
    }
    assert all(r["n_train"] == "48" and r["n_test"] == "24" and float(r["ridge"]) == 1e-3 for r in rows)
    errors = np.array([[float(r["kernel_error"]), float(r["prediction_gap"])] for r in rows])
    assert np.all(np.isfinite(errors)) and np.all(errors > 0)
    references = json.loads((out / "reference.json").read_text())["networks"]
    assert [r["network"] for r in references] == ["fc", "cnn"]
    assert all(0 < r["err_pntk_entk"] < 1 and 0 < r["pred_gap_pntk_entk"] for r in references)
    for name in ("table.md", "slopes.csv", "sketch_sweep.png", "sketch_sweep.pdf"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert "| fc | tensorsketch | 1,024 |" in table and "| cnn | countsketch | 256 |" in table
    assert len(summary["verdicts"]) == 2 and all(
        "the sketch's error is below it from" in v for v in summary["verdicts"]
    )


def test_error_falls_with_k(sweep):
    _, out, summary = sweep
    rows = _rows(out / "results.csv")
    for network in ("fc", "cnn"):
        for method in ("tensorsketch", "countsketch"):
            part = [r for r in rows if r["network"] == network and r["method"] == method]
            log_k = np.log([float(r["k"]) for r in part])
            log_error = np.log([float(r["kernel_error"]) for r in part])
            slope = np.polyfit(log_k, log_error, 1)[0]  # least squares over every seed
            assert slope < -0.3, (network, method, slope)
            fitted = next(s for s in summary["slopes"] if s["network"] == network and s["method"] == method)
            np.testing.assert_allclose(fitted["kernel_error_slope"], slope, rtol=1e-9)
            assert fitted["kernel_error_low"] <= fitted["kernel_error_slope"] <= fitted["kernel_error_high"]


def test_a_cell_equals_the_public_sketch_against_the_public_pntk(sweep):
    # The script's features trace the seed (one compile for all seeds) and its exact pNTK is the eNTK's
    # sum: here the same cell from `Sketch(seed=...).kernel_fn` and `PNTK().kernel_fn`, on 64-bit sums.
    _, out, _ = sweep
    row = next(
        r
        for r in _rows(out / "results.csv")
        if (r["network"], r["method"], r["k"], r["seed"]) == ("fc", "tensorsketch", "256", "1")
    )
    model = models.get_model("fc", width=256, outputs=10, depth=3)
    x_train, y_train, x_test, _ = data.digits_split(48, 24, seed=0)
    x = np.concatenate([x_train, x_test])
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    exact = np.asarray(jax.jit(PNTK().kernel_fn(model.apply_fn))(x, None, params), np.float64)
    phi = jax.jit(Sketch(dim=256, seed=1).kernel_fn(model.apply_fn).sketch_fn())(x, params)
    phi = np.asarray(phi, np.float64)
    sketched = phi @ phi.T
    train, test = slice(0, 48), slice(48, None)
    error = np.linalg.norm(sketched[train, train] - exact[train, train]) / np.linalg.norm(exact[train, train])
    np.testing.assert_allclose(float(row["kernel_error"]), error, rtol=1e-3)
    y = data.centred_one_hot(y_train, 10)
    f_exact = regression.predict(exact[train, train], y, exact[test, train], ridge=1e-3)
    f_sketch = regression.predict(sketched[train, train], y, sketched[test, train], ridge=1e-3)
    gap = np.linalg.norm(f_sketch - f_exact) / np.linalg.norm(f_exact)
    np.testing.assert_allclose(float(row["prediction_gap"]), gap, rtol=2e-2)


def test_resuming_computes_nothing_new_and_only_what_is_missing(sweep):
    module, out, _ = sweep
    csv_path = out / "results.csv"
    before = csv_path.read_bytes()
    assert module.main([*ARGS, "--output", str(out)])["computed"] == 0
    assert csv_path.read_bytes() == before

    # Cells are found by content: reordered rows are still finished, and two deleted ones are the
    # only ones measured again (the exact pNTK read back from the cache, the eNTK not recomputed).
    header, *lines = before.decode().splitlines(keepends=True)
    deleted = f"cnn,cnn,32,3,48,24,0,0.001,{SKETCH_VERSION},countsketch,1024,"
    kept = [line for line in lines if not line.startswith(deleted)]
    assert len(kept) == len(lines) - 3
    csv_path.write_text(header + "".join(reversed(kept)))
    assert module.main([*ARGS, "--output", str(out), "--no-plot"])["computed"] == 3
    again = {(r["network"], r["method"], r["k"], r["seed"]): r for r in _rows(csv_path)}
    first = {(r["network"], r["method"], r["k"], r["seed"]): r for r in _rows_of(before)}
    assert again.keys() == first.keys()
    for key, r in first.items():
        np.testing.assert_allclose(float(again[key]["kernel_error"]), float(r["kernel_error"]), rtol=1e-5)

    # Another ridge is another measurement: computed anew beside the old rows.
    summary = module.main(
        [
            "--quick",
            "--networks",
            "fc",
            "--methods",
            "countsketch",
            "--dims",
            "256",
            "--seeds",
            "1",
            "--ridge",
            "0.01",
            "--output",
            str(out),
            "--no-plot",
        ]
    )
    assert summary["computed"] == 2  # the reference and one cell
    assert len(_rows(csv_path)) == len(lines) + 1


def _rows_of(content: bytes) -> list[dict]:
    return list(csv.DictReader(content.decode().splitlines()))
