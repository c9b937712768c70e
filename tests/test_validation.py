"""The validation sweep: reduced configuration, report files, resume, bad configs."""

import json
import shutil

import pandas as pd
import pytest

from nt_pntk import cli
from nt_pntk.validation import config, fits, report, sweep


@pytest.fixture(scope="module")
def ci_config():
    return config.load("ci")


@pytest.fixture(scope="module")
def ci_run(ci_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate-ci")
    assert cli.main(["validate", "--config", "ci", "--out", str(out), "--no-progress"]) == 0
    return out


def test_fc_rate_matches_theory(ci_run, ci_config):
    slopes = pd.read_csv(ci_run / report.SLOPES_CSV)
    row = slopes[(slopes.metric == "err_pntk") & (slopes.phase == "init")]
    assert len(row) == 1
    assert -0.75 <= row.slope.iloc[0] <= -0.25
    assert row.ci_low.iloc[0] <= row.slope.iloc[0] <= row.ci_high.iloc[0]


def test_report_files_exist_and_parse(ci_run, ci_config):
    table = pd.read_csv(ci_run / sweep.RESULTS_CSV)
    assert len(table) == 2 * len(ci_config.cells())  # init and trained rows per cell
    assert set(table.phase) == {"init", "trained"}
    assert table["err_pntk"].between(0, 1).all()
    text = (ci_run / report.REPORT_MD).read_text()
    assert "`err_pntk`" in text
    assert "PASS" in text or "FAIL" in text
    png = ci_run / "err_pntk.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamp = json.loads((ci_run / "config.json").read_text())
    assert stamp["name"] == "ci"


MINI = {
    "seeds": 2,
    "n_train": 6,
    "n_test": 6,
    "train_steps": 2,
    "bootstrap": 10,
    "sweep": [{"architecture": "fc", "widths": [16, 32], "outs": [3]}],
}


def test_resume_after_interruption_gives_the_same_csv(tmp_path, monkeypatch):
    cfg = config.parse(MINI)
    uninterrupted = sweep.run_sweep(cfg, tmp_path / "whole", progress=False)
    finished = []
    measure = sweep.measure_cell

    def measure_then_die(cell, cfg):
        if len(finished) == 2:
            raise KeyboardInterrupt  # as if the process were killed mid-sweep
        finished.append(cell.key)
        return measure(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(cfg, tmp_path / "resumed", progress=False)
    assert sorted(p.stem for p in (tmp_path / "resumed" / "cells").glob("*.json")) == sorted(finished)

    recomputed = []

    def measure_and_record(cell, cfg):
        recomputed.append(cell.key)
        return measure(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_and_record)
    resumed = sweep.run_sweep(cfg, tmp_path / "resumed", progress=False)
    assert recomputed and not set(recomputed) & set(finished)  # finished cells are not recomputed
    assert len(resumed) == len(uninterrupted) == 2 * len(cfg.cells())
    whole_csv = (tmp_path / "whole" / sweep.RESULTS_CSV).read_bytes()
    assert (tmp_path / "resumed" / sweep.RESULTS_CSV).read_bytes() == whole_csv


def test_out_dir_of_another_configuration_is_refused(ci_run, ci_config, tmp_path):
    shutil.copy(ci_run / "config.json", tmp_path / "config.json")
    other = config.parse({**_raw(ci_config), "seeds": ci_config.seeds + 1})
    with pytest.raises(ValueError, match="different configuration"):
        sweep.run_sweep(other, tmp_path, progress=False)


def _raw(cfg):
    return {
        "seeds": cfg.seeds,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "ridge": cfg.ridge,
        "train_steps": cfg.train_steps,
        "learning_rate": cfg.learning_rate,
        "bootstrap": cfg.bootstrap,
        "name": cfg.name,
        "sweep": [
            {
                "architecture": s.architecture,
                "widths": list(s.widths),
                "outs": list(s.outs),
                "options": s.options,
            }
            for s in cfg.sweeps
        ],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architecture": "transformer"}, r"sweep\[0\]\.architecture"),
        ({"widths": [128, 64]}, r"sweep\[0\]\.widths"),
        ({"widths": [64, 64]}, r"sweep\[0\]\.widths"),
        ({"outs": [0]}, r"sweep\[0\]\.outs"),
        ({"data": "cifar"}, r"sweep\[0\]\.data"),
    ],
)
def test_bad_sweep_field_is_named(ci_config, change, field):
    raw = _raw(ci_config)
    raw["sweep"][0].update(change)
    with pytest.raises(config.ConfigError, match=field):
        config.parse(raw)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"seeds": 0}, "seeds"), ({"n_train": 2000}, "n_train"), ({"train_steps": -1}, "train_steps")],
)
def test_bad_top_level_field_is_named(ci_config, change, field):
    with pytest.raises(config.ConfigError, match=field):
        config.parse({**_raw(ci_config), **change})


def test_bad_config_file_stops_the_command_with_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = 2\n[[sweep]]\narchitecture = "fc"\nwidths = [256, 64]\nouts = [10]\n')
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"sweep\[0\]\.widths"):
        cli.main(["validate", "--config", str(bad), "--out", str(out)])
    assert not out.exists()


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(config.ConfigError, match="quick"):
        config.load("no-such-config")


def test_fit_recovers_a_known_slope():
    rows = [
        {"architecture": "fc", "data": "d", "out": 1, "phase": "init", "seed": s, "width": w}
        | {"err_pntk": 3.0 * w**-0.5 * (1 + 0.01 * s)}
        for w in (64, 128, 256, 512)
        for s in range(4)
    ]
    table = pd.DataFrame(rows).assign(**{m: 1.0 for m in fits.EXPECTED_SLOPES if m != "err_pntk"})
    slopes = fits.fit_slopes(table, bootstrap=100)
    row = slopes[slopes.metric == "err_pntk"].iloc[0]
    assert row.slope == pytest.approx(-0.5, abs=1e-9)
    assert row.passed
