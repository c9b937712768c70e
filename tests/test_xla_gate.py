"""The XLA regression gate (`nt_pntk._src.bench.xla_gate`, `asv_bench/xla_gate.py`): the comparison on
synthetic figures, and the command end to end on one real kernel with a deliberate 20% FLOP growth."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from nt_pntk._src.bench import xla_gate as gate

SCRIPT = Path(__file__).resolve().parents[1] / "asv_bench" / "xla_gate.py"
FC_PNTK = ("fc", "pntk", 1, "N=16,O=10,width=128")
FC_ENTK = ("fc", "entk", 1, "N=16,O=10,width=128")
# One program of the suite's grid: the pNTK of the FC at the base point, NT implementation 1.
ONE_PROGRAM = ["--models", "fc", "--kernels", "pntk", "--implementations", "1", "--points", "base"]


def _figures(flops: float, bytes_accessed: float = 1e6) -> dict[str, float]:
    return {"flops": flops, "bytes_accessed": bytes_accessed, "temp_bytes": 4096.0, "total_bytes": 8192.0}


BASELINE = {FC_PNTK: _figures(1e8), FC_ENTK: _figures(5e9)}


def test_a_20_percent_growth_fails_and_names_the_kernel():
    current = {FC_PNTK: _figures(1.2e8), FC_ENTK: _figures(5e9)}
    changes = gate.compare(BASELINE, current, tolerance=0.10)
    assert [(c.key, c.figure) for c in changes] == [(FC_PNTK, "flops")]
    assert changes[0].regression and changes[0].ratio == pytest.approx(1.2)
    table = gate.format_changes(changes)
    assert "pntk" in table and "entk" not in table and "1.200" in table and "GREW" in table


def test_a_5_percent_growth_passes():
    current = {FC_PNTK: _figures(1.05e8, bytes_accessed=1.05e6), FC_ENTK: _figures(5e9 / 1.05)}
    assert gate.compare(BASELINE, current, tolerance=0.10) == []
    # ... but not under a tolerance of 4%.
    assert len(gate.compare(BASELINE, current, tolerance=0.04)) == 3


def test_a_shrink_past_the_tolerance_is_reported_not_failed():
    current = {FC_PNTK: _figures(1e8), FC_ENTK: _figures(5e9, bytes_accessed=0.8e6)}
    (change,) = gate.compare(BASELINE, current, tolerance=0.10)
    assert (change.key, change.figure, change.regression) == (FC_ENTK, "bytes_accessed", False)
    assert change.ratio == pytest.approx(0.8)
    assert "shrank" in gate.format_changes([change])


def test_growth_from_zero_is_a_regression():
    (change,) = gate.compare({FC_PNTK: {"temp_bytes": 0.0}}, {FC_PNTK: {"temp_bytes": 64.0}})
    assert change.regression and change.ratio == float("inf")
    assert gate.compare({FC_PNTK: {"temp_bytes": 0.0}}, {FC_PNTK: {"temp_bytes": 0.0}}) == []


def test_bad_tolerance_is_refused():
    with pytest.raises(ValueError, match=r"`tolerance` must be > 0; got tolerance=-0\.1"):
        gate.compare(BASELINE, BASELINE, tolerance=-0.1)


def test_other_versions_or_grids_are_not_comparable():
    versions = {"jax": "0.10.2", "jaxlib": "0.10.2", "neural-tangents": "0.6.5", "backend": "cpu"}
    baseline = gate.Baseline(versions={**versions, "jaxlib": "0.4.30"}, grid="full", figures=dict(BASELINE))
    with pytest.raises(gate.NotComparable, match=r"jaxlib 0.4.30 \(baseline\) vs 0.10.2 \(installed\)"):
        gate.check_comparable(baseline, versions, "full", list(BASELINE))
    baseline = gate.Baseline(versions=versions, grid="quick", figures=dict(BASELINE))
    with pytest.raises(gate.NotComparable, match="'quick' grid; this check runs the 'full' grid"):
        gate.check_comparable(baseline, versions, "full", list(BASELINE))
    baseline = gate.Baseline(versions=versions, grid="full", figures={FC_PNTK: _figures(1e8)})
    with pytest.raises(gate.NotComparable, match=r"1 program.* not in the baseline: fc entk impl 1 N=16"):
        gate.check_comparable(baseline, versions, "full", list(BASELINE))
    with pytest.raises(gate.NotComparable, match="no longer in the grid: fc pntk impl 1"):
        gate.check_comparable(baseline, versions, "full", [])
    gate.check_comparable(baseline, versions, "full", [], complete=False)  # a restricted check


def test_select_restricts_the_grid():
    grid = [
        FC_PNTK,
        FC_ENTK,
        ("fc", "pntk", 1, "N=32,O=10,width=128"),
        ("cnn", "pntk", 1, "N=16,O=10,width=32"),
    ]
    assert gate.select(grid, models=["fc"], kernels=["pntk"], points=["base"]) == [FC_PNTK]
    assert gate.select(grid, kernels=["pntk"], points=["base"]) == [FC_PNTK, grid[3]]
    with pytest.raises(ValueError, match=r"`kernels` must be among \['entk', 'pntk'\]; got 'ntk'"):
        gate.select(grid, kernels=["ntk"])


def test_save_and_load_round_trip(tmp_path):
    baseline = gate.Baseline(versions={"jax": "1"}, grid="quick", figures=dict(BASELINE))
    gate.save(tmp_path / "b.json", baseline, update_command="make it")
    assert gate.load(tmp_path / "b.json") == baseline
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an XLA baseline"):
        gate.load(tmp_path / "other.json")


def _fc_parameters() -> int:
    from nt_pntk.experiments import models

    _, params = models.get_model("fc", width=128, outputs=10).init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("xla_gate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_refuses_a_baseline_of_other_versions(script, tmp_path, capsys):
    """Exit 2 with the versions named, before compiling anything."""
    versions = {**gate.installed_versions(jax.default_backend()), "jax": "0.0.1"}
    gate.save(
        tmp_path / "b.json", gate.Baseline(versions, "full", {FC_PNTK: _figures(1.0)}), update_command="u"
    )
    assert script.main(["check", "--baseline", str(tmp_path / "b.json"), *ONE_PROGRAM]) == 2
    err = capsys.readouterr().err
    assert "jax 0.0.1 (baseline) vs " in err and "python asv_bench/xla_gate.py update" in err
    assert script.main(["check", "--baseline", str(tmp_path / "missing.json")]) == 2
    assert "no XLA baseline at" in capsys.readouterr().err
    assert script.main(["check", "--grid", "full", "--kernels", "ntk"]) == 2
    assert "--kernels must be among ['entk', 'pntk', 'sketch', 'trace']; got 'ntk'" in capsys.readouterr().err


def test_gate_end_to_end_catches_a_20_percent_flop_growth(script, tmp_path, capsys):
    """`update` then `check` on one real kernel: passes; against a baseline whose FLOPs for that kernel
    are the current ones / 1.2 (as if the kernel's FLOPs had grown by 20%): fails and names it."""
    path = tmp_path / "baseline.json"
    assert script.main(["update", "--baseline", str(path), *ONE_PROGRAM]) == 0
    capsys.readouterr()
    data = json.loads(path.read_text())
    (record,) = data["figures"]
    assert (record["model"], record["kernel"], record["implementation"], record["point"]) == FC_PNTK
    # Independent of XLA's cost model: the pNTK at least contracts two N × P Jacobians (2·N²·P flops).
    assert record["flops"] >= 2 * 16**2 * _fc_parameters() and record["temp_bytes"] > 0

    assert script.main(["check", "--baseline", str(path), *ONE_PROGRAM]) == 0
    assert "0 figure(s) grew" in capsys.readouterr().out

    record["flops"] /= 1.2
    path.write_text(json.dumps(data))
    assert script.main(["check", "--baseline", str(path), *ONE_PROGRAM]) == 1
    out = capsys.readouterr().out
    assert "1 figure(s) grew" in out and "FAILED" in out and "fc pntk impl 1 N=16,O=10,width=128" in out
    assert "flops" in out and "1.200" in out and "python asv_bench/xla_gate.py update" in out


@pytest.mark.slow  # a child process with its own JAX start-up
def test_jax_cache_holds_the_programs_with_their_figures(tmp_path):
    """`--jax-cache` (the test command shares the gate's programs with the asv pass this way): the
    compiled programs land in JAX's persistent cache, and a program loaded from there (a cache hit,
    no compile) has exactly the figures of its fresh compile. In a child process: the cache is
    process-wide JAX configuration."""
    code = f"""
import importlib.util, json
import jax.monitoring
events = []
jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
spec = importlib.util.spec_from_file_location("xla_gate_script", {str(SCRIPT)!r})
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
for name in ("fresh", "loaded"):
    argv = ["update", "--baseline", f"{{name}}.json", "--jax-cache", "cache", *{ONE_PROGRAM!r}]
    assert script.main(argv) == 0
    outcomes = [e.rpartition("/")[2] for e in events if e.startswith("/jax/compilation_cache/cache_")]
    print(name, json.dumps(outcomes))
    events.clear()
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(
        line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("fresh", "loaded"))
    )
    assert "cache_hits" not in json.loads(lines["fresh"]) and json.loads(lines["loaded"]) == ["cache_hits"]
    assert any((tmp_path / "cache").iterdir())
    fresh, loaded = (gate.load(tmp_path / f"{name}.json") for name in ("fresh", "loaded"))
    assert loaded.figures == fresh.figures and FC_PNTK in fresh.figures
