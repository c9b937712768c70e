"""The validation sweep: the ci configuration's verdict and report, resume, bad configs, checked cells.

The sweep's file handling (resume, cell checks, refused output directories, permissions,
verdicts) is tested with a stand-in measurement whose metrics follow known power laws in
width (`fake_measure_cell`, no JAX work); the real measurement runs in the `slow` tests of the
ci configuration.
"""

import json
import os
import re
import shutil
import stat
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from nt_pntk import cli
from nt_pntk._src.experiments import models
from nt_pntk._src.experiments.validation import config, fits, report, sweep
from nt_pntk._src.experiments.validation.metrics import cell_columns

SLOPE_BAND = (-0.65, -0.35)  # the ci configuration's `slope_band` (ci.toml)


def _validate(*argv: str) -> int:
    """`nt-pntk validate ARGV` without the command line's error wrapper, so errors surface as raised."""
    args = cli.build_parser("validate").parse_args(["validate", *argv])
    return args._run(args)


# --- A stand-in measurement with known slopes ---------------------------------------------------

#: The slope in log(width) of each metric of the stand-in (the accuracies stay at 0.5).
FAKE_SLOPES = {
    "err_pntk": -0.5,
    "err_single": -0.5,
    "err_trace": -0.5,
    "err_pntk_inf": -0.5,
    "err_entk_inf": -0.5,
    "offdiag_mass": -1.0,
    "pred_gap": -0.5,
    "err_lambda_max": -0.5,
    "err_cond": -0.2,
}
#: The stand-in's errors at width 1 (0.1·64^-0.2 = 0.044 at the widest: below the 0.2 level).
FAKE_SCALE = 0.1

#: The stand-in's O whose pNTK error converges too slowly (slope -0.2: outside the band, FAIL).
SLOW_OUT = 5


def fake_measure_cell(cell, cfg):
    """Rows as the measurement writes them: metric = 0.1 (1 + seed/100) · width^slope, twice that trained."""
    slopes = FAKE_SLOPES if cell.out != SLOW_OUT else {**FAKE_SLOPES, "err_pntk": -0.2}
    rows = []
    for phase, factor in (("init", 1.0), ("trained", 2.0)):
        scale = FAKE_SCALE * factor * (1 + cell.seed / 100)
        metrics = {m: scale * float(cell.width) ** slope for m, slope in slopes.items()}
        rows.append({**cell_columns(cell), "phase": phase, **metrics, "acc_entk": 0.5, "acc_pntk": 0.5})
    return rows


MINI = {
    "name": "mini",
    "seeds": 2,
    "n_train": 6,
    "n_test": 6,
    "train_steps": 2,
    "bootstrap": 10,
    "slope_band": list(SLOPE_BAND),
    "sweep": [{"architecture": "fc", "widths": [16, 32, 64], "outs": [3, SLOW_OUT]}],
}


@pytest.fixture
def fake_measurement(monkeypatch):
    monkeypatch.setattr(sweep, "measure_cell", fake_measure_cell)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """`nt-pntk validate` of MINI (as a TOML file) with the stand-in measurement."""
    out = tmp_path_factory.mktemp("validate-mini")
    toml = out.parent / "mini.toml"
    toml.write_text(_toml(MINI))
    previous = os.umask(0o022)  # a usual umask: the output must then be 0o644, readable by the group
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sweep, "measure_cell", fake_measure_cell)
            assert cli.main(["validate", "--config", str(toml), "--output", str(out), "--no-progress"]) == 0
    finally:
        os.umask(previous)
    return out


def _toml(raw: dict) -> str:
    top = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k != "sweep"]
    sweeps = [
        "[[sweep]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
        for table in raw["sweep"]
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(sweeps) + "\n"


def _report_row(text: str, metric: str, phase: str, out: int) -> list[str]:
    """The cells of `metric`'s row for (fc, O = `out`, `phase`) in report.md's slope table."""
    section = text.split(f"## `{metric}`:")[1].split("\n## ")[0]
    pattern = rf"\| fc \| \w+ \| {out} \| {phase} \|"
    (line,) = [row for row in section.splitlines() if re.match(pattern, row)]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize("out", [3, SLOW_OUT])
def test_verdicts_follow_the_slopes(fake_run, out):
    """The stand-in's slopes are known: each claim's slope, verdict and report row follow from them."""
    slopes = pd.read_csv(fake_run / report.SLOPES_CSV, keep_default_na=False, na_values=[""])
    text = (fake_run / report.REPORT_MD).read_text()
    expected = FAKE_SLOPES if out != SLOW_OUT else {**FAKE_SLOPES, "err_pntk": -0.2}
    for metric, slope in expected.items():
        for phase in ("init", "trained"):
            row = slopes[(slopes.metric == metric) & (slopes.phase == phase) & (slopes.out == out)]
            assert len(row) == 1
            assert row.slope.iloc[0] == pytest.approx(slope, abs=1e-9)
            if metric == "err_cond" or phase == "trained":  # no claimed rate; no claim after training
                assert row.verdict.iloc[0] == "-"
                continue
            in_band = SLOPE_BAND[0] <= slope / (-2 * FAKE_SLOPES[metric]) <= SLOPE_BAND[1]
            verdict = "PASS" if in_band else "FAIL"  # every stand-in error is below the level at 64
            assert row.verdict.iloc[0] == verdict
            if metric in report.CLAIMS:
                cells = _report_row(text, metric, phase, out)
                assert cells[5] == f"{slope:+.3f}" and cells[11] == verdict


# --- The ci configuration, measured for real (a minute on 2 cores) ------------------------------


@pytest.fixture(scope="module")
def ci_config():
    return config.load("ci")


@pytest.fixture(scope="module")
def ci_run(ci_config, tmp_path_factory):
    if os.environ.get("NT_PNTK_VALIDATE_CI"):  # this command's results, from scripts/wheel_smoke.sh
        return Path(os.environ["NT_PNTK_VALIDATE_CI"])
    out = tmp_path_factory.mktemp("validate-ci")
    assert cli.main(["validate", "--config", "ci", "--output", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_fc_rate_at_init_passes(ci_run, ci_config):
    """The ci configuration's FC pNTK error falls as width^-1/2 at initialization: PASS."""
    assert tuple(ci_config.slope_band) == SLOPE_BAND
    slopes = pd.read_csv(ci_run / report.SLOPES_CSV)
    row = slopes[(slopes.metric == "err_pntk") & (slopes.phase == "init")]
    assert len(row) == 1
    slope = row.slope.iloc[0]
    assert SLOPE_BAND[0] <= slope <= SLOPE_BAND[1]
    assert row.ci_low.iloc[0] <= slope <= row.ci_high.iloc[0]
    assert row.verdict.iloc[0] == "PASS"
    cells = _report_row((ci_run / report.REPORT_MD).read_text(), "err_pntk", "init", out=10)
    assert cells[5] == f"{slope:+.3f}" and cells[11] == "PASS"


@pytest.mark.slow
def test_report_numbers_are_those_of_the_results(ci_run, ci_config):
    table = pd.read_csv(ci_run / sweep.RESULTS_CSV)
    assert len(table) == 2 * len(ci_config.cells())  # init and trained rows per cell
    assert set(table.phase) == {"init", "trained"}
    assert table["err_pntk"].between(0, 1).all()
    # The slope, refitted here: least squares of log(err_pntk) on log(width) over every seed.
    init = table[table.phase == "init"]
    refit = np.polyfit(np.log(init.width), np.log(init.err_pntk), 1)[0]
    slopes = pd.read_csv(ci_run / report.SLOPES_CSV)
    fitted = slopes[(slopes.metric == "err_pntk") & (slopes.phase == "init")].slope.iloc[0]
    assert fitted == pytest.approx(refit, abs=1e-9)
    # The medians table: each (phase, width) median of err_pntk over seeds, as printed.
    text = (ci_run / report.REPORT_MD).read_text()
    medians = text.split("## Medians over seeds")[1]
    for (phase, width), value in table.groupby(["phase", "width"])["err_pntk"].median().items():
        row = rf"\| fc \| digits \| 10 \| {phase} \| {width} \|"
        (line,) = [r for r in medians.splitlines() if re.match(row, r)]
        assert line.split("|")[6].strip() == f"{value:.3f}"  # an error: no sign
    assert (ci_run / "err_pntk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((ci_run / "config.json").read_text())["name"] == "ci"


# --- Resume, refused output directories, checked cell files (stand-in measurement) ---------------


def test_resume_after_interruption_gives_the_same_csv(tmp_path, monkeypatch):
    cfg = config.parse(MINI)
    monkeypatch.setattr(sweep, "measure_cell", fake_measure_cell)
    uninterrupted = sweep.run_sweep(cfg, tmp_path / "whole", progress=False)
    finished = []

    def measure_then_die(cell, cfg):
        if len(finished) == 2:
            raise KeyboardInterrupt  # as if the process were killed mid-sweep
        finished.append(cell.key)
        return fake_measure_cell(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(cfg, tmp_path / "resumed", progress=False)
    assert sorted(p.stem for p in (tmp_path / "resumed" / "cells").glob("*.json")) == sorted(finished)

    recomputed = []

    def measure_and_record(cell, cfg):
        recomputed.append(cell.key)
        return fake_measure_cell(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_and_record)
    resumed = sweep.run_sweep(cfg, tmp_path / "resumed", progress=False)
    assert recomputed and not set(recomputed) & set(finished)  # finished cells are not recomputed
    assert len(resumed) == len(uninterrupted) == 2 * len(cfg.cells())
    whole_csv = (tmp_path / "whole" / sweep.RESULTS_CSV).read_bytes()
    assert (tmp_path / "resumed" / sweep.RESULTS_CSV).read_bytes() == whole_csv


def test_output_dir_of_another_configuration_is_refused(fake_run, tmp_path):
    shutil.copytree(fake_run, tmp_path, dirs_exist_ok=True)  # its config record and its cells
    other = config.parse({**MINI, "seeds": MINI["seeds"] + 1})
    with pytest.raises(ValueError, match="different configuration"):
        sweep.run_sweep(other, tmp_path, progress=False)


def test_a_finished_run_is_re_reported_with_other_fit_settings_without_measuring(
    fake_run, tmp_path, monkeypatch
):
    """bootstrap, slope_band, asymptotic_level and fit_widths change the report only: no cell is measured."""
    shutil.copytree(fake_run, tmp_path, dirs_exist_ok=True)
    refit = {**MINI, "bootstrap": 20, "slope_band": [-0.7, -0.3], "asymptotic_level": 0.5, "fit_widths": 2}
    toml = tmp_path.parent / "refit.toml"
    toml.write_text(_toml(refit))

    def must_not_measure(cell, cfg):
        raise AssertionError(f"cell {cell.key} measured again")

    monkeypatch.setattr(sweep, "measure_cell", must_not_measure)
    assert _validate("--config", str(toml), "--output", str(tmp_path), "--no-progress") == 0
    slopes = pd.read_csv(tmp_path / report.SLOPES_CSV)
    assert set(slopes.last_widths.dropna()) == {"32-64"}  # the widest 2 widths, as refit asks
    assert "[-0.70, -0.30]" in (tmp_path / report.REPORT_MD).read_text()


def test_cells_are_measured_seed_by_seed_across_sweeps(tmp_path, monkeypatch):
    """A run cut short has every sweep's widths with fewer seeds, not some sweeps and none of others."""
    two = {**MINI, "sweep": [*MINI["sweep"], {"architecture": "fc", "widths": [8, 16], "outs": [2]}]}
    order = []

    def measure_and_record(cell, cfg):
        order.append((cell.seed, cell.label))
        return fake_measure_cell(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_and_record)
    with pytest.raises(config.ConfigError, match="label"):  # two sweeps of one architecture need labels
        config.parse(two)
    two["sweep"][1]["label"] = "fc-narrow"
    sweep.run_sweep(config.parse(two), tmp_path, progress=False)
    seeds = [seed for seed, _ in order]
    assert seeds == sorted(seeds)
    assert {label for seed, label in order if seed == 0} == {"fc", "fc-narrow"}


def test_the_former_keyword_out_still_works(tmp_path, fake_measurement):
    cfg = config.parse(MINI)
    with pytest.warns(DeprecationWarning, match=r"run_sweep\(\): `out` is deprecated .*use `output`"):
        table = sweep.run_sweep(cfg, out=tmp_path, progress=False)
    assert len(table) == 2 * len(cfg.cells()) and (tmp_path / sweep.RESULTS_CSV).is_file()


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
                "options": dict(s.options),  # a copy: tests edit it
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


GOOD_SWEEP = '[[sweep]]\narchitecture = "fc"\nwidths = [64, 256]\nouts = [10]\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'seeds = 2\n[[sweep]]\narchitecture = "fc"\nwidths = [256, 64]\nouts = [10]\n',
            r"sweep\[0\]\.widths",
        ),
        # Unknown keys used to be ignored: 100 training steps instead of 5, a sweep without its typo.
        ("train_step = 5\n" + GOOD_SWEEP, r"`train_step`.*`train_steps`"),
        (GOOD_SWEEP + "widhts = [8]\n", r"`sweep\[0\]\.widhts`.*`widths`"),
        # A builder typo used to pass the check, write config.json, then crash with a TypeError.
        (GOOD_SWEEP + "options = { depht = 3 }\n", r"`sweep\[0\]\.options\.depht`.*`depth`"),
        (GOOD_SWEEP.replace('"fc"', '"resnet"') + "options = { depth = 7 }\n", r"`sweep\[0\]\.options`.*18"),
    ],
)
def test_bad_config_file_stops_the_command_before_writing(tmp_path, toml, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    out = tmp_path / "out"
    with pytest.raises(config.ConfigError, match=message) as raised:
        _validate("--config", str(bad), "--output", str(out), "--no-progress")
    assert raised.value.exit_code == 2
    assert not out.exists()


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("seeds = 2\nn_train = \n" + GOOD_SWEEP)
    with pytest.raises(config.ConfigError, match=r"broken\.toml.*line 2") as raised:
        config.load(str(bad))
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("where", "key", "suggestion"),
    [("top", "train_step", "train_steps"), ("sweep", "widhts", "widths"), ("options", "depht", "depth")],
)
def test_unknown_key_is_named_with_the_closest_and_the_known_keys(ci_config, where, key, suggestion):
    raw = _raw(ci_config)
    table = {"top": raw, "sweep": raw["sweep"][0], "options": raw["sweep"][0]["options"]}[where]
    table[key] = 5
    prefix = {"top": "", "sweep": r"sweep\[0\]\.", "options": r"sweep\[0\]\.options\."}[where]
    with pytest.raises(
        config.ConfigError, match=rf"`{prefix}{key}`.*`{suggestion}`\?.*Known keys: .*{suggestion}"
    ):
        config.parse(raw)


@pytest.mark.parametrize(
    ("where", "field"),
    [("top", f) for f in ("seeds", "n_train", "n_test", "ridge", "train_steps", "learning_rate", "bootstrap")]
    + [("sweep", f) for f in ("implementation", "n_train", "n_test")]
    + [("options", "depth")],
)
def test_a_bool_is_not_a_number(ci_config, where, field):
    raw = _raw(ci_config)
    table = {"top": raw, "sweep": raw["sweep"][0], "options": raw["sweep"][0]["options"]}[where]
    table[field] = True  # True == 1 in Python: it passed the `implementation in (1, 2, 3)` check
    with pytest.raises(config.ConfigError, match=rf"{field}` must .*got True"):
        config.parse(raw)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slope_band": [True, 2]}, "slope_band"),
        ({"slope_band": ["-0.6", "-0.4"]}, "slope_band"),
        ({"ridge": float("nan")}, "ridge"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"name": 3}, "name"),
    ],
)
def test_non_numbers_and_non_finite_numbers_are_refused(ci_config, change, field):
    with pytest.raises(config.ConfigError, match=field):
        config.parse({**_raw(ci_config), **change})


@pytest.mark.parametrize(("change", "field"), [({"widths": [True, 2]}, "widths"), ({"outs": [True]}, "outs")])
def test_a_bool_is_not_a_width_or_out(ci_config, change, field):
    raw = _raw(ci_config)
    raw["sweep"][0].update(change)
    with pytest.raises(config.ConfigError, match=rf"sweep\[0\]\.{field}"):
        config.parse(raw)


def test_config_check_builds_each_sweeps_model(ci_config, monkeypatch):
    raw = _raw(ci_config)
    raw["sweep"].append({"architecture": "resnet", "widths": [4, 8], "outs": [7], "options": {"depth": 34}})
    built = []
    get_model = config.models.get_model

    def record(name, **kwargs):
        built.append((name, kwargs))
        return get_model(name, **kwargs)

    monkeypatch.setattr(config.models, "get_model", record)
    config.parse(raw)
    assert built == [
        ("fc", {"width": 64, "outputs": 10, "depth": 3}),
        ("resnet", {"width": 4, "outputs": 7, "depth": 34}),
    ]


def test_output_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    with pytest.raises(sweep.OutDirError, match=r"`--output` .*results\.txt.* is a file") as raised:
        _validate("--config", "ci", "--output", str(out), "--no-progress")
    assert raised.value.exit_code == 2
    assert out.read_text() == "mine"


@pytest.mark.parametrize("record", ["{not json", "[1, 2]"])
def test_corrupt_config_record_is_refused_and_kept(tmp_path, record):
    (tmp_path / "config.json").write_text(record)
    with pytest.raises(
        sweep.OutDirError, match=r"corrupt configuration record .*config\.json.*Delete .*another `--output`"
    ):
        sweep.run_sweep(config.parse(MINI), tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == record
    assert not (tmp_path / "cells").exists()


def test_a_record_without_cells_does_not_lock_the_output_dir(tmp_path, monkeypatch):
    """A run that fails before its first cell leaves only config.json: another configuration may use it."""

    class Failed(Exception):
        pass

    def fail(cell, cfg):
        raise Failed

    monkeypatch.setattr(sweep, "measure_cell", fail)
    first, second = config.parse(MINI), config.parse({**MINI, "seeds": 3})
    with pytest.raises(Failed):
        sweep.run_sweep(first, tmp_path, progress=False)
    with pytest.raises(Failed):  # got past the record check to the measurement
        sweep.run_sweep(second, tmp_path, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["seeds"] == 3


def test_output_files_respect_the_umask(fake_run):
    files = [fake_run / n for n in ("config.json", sweep.RESULTS_CSV, report.SLOPES_CSV, report.REPORT_MD)]
    files += sorted((fake_run / "cells").glob("*.json")) + sorted(fake_run.glob("*.png"))
    assert len(files) > 4 + 1
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o644 for f in files}


def _first_cell(cfg, out):
    cell = cfg.cells()[0]
    return cell, out / "cells" / f"{cell.key}.json"


def test_tampered_cell_is_measured_again_not_merged(fake_run, tmp_path, monkeypatch, capsys):
    cfg = config.parse(MINI)
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    cell, path = _first_cell(cfg, run)
    stored = json.loads(path.read_text())
    stored["rows"][0]["err_pntk"] *= 1.5  # an edited number; key and digest left as they were
    path.write_text(json.dumps(stored))

    measured = []

    def measure_and_record(cell, cfg):
        measured.append(cell.key)
        return fake_measure_cell(cell, cfg)

    monkeypatch.setattr(sweep, "measure_cell", measure_and_record)
    sweep.run_sweep(cfg, run, progress=False)
    assert measured == [cell.key]
    assert str(path) in capsys.readouterr().err
    assert (run / sweep.RESULTS_CSV).read_bytes() == (fake_run / sweep.RESULTS_CSV).read_bytes()
    assert sweep.read_cell(path, cell) == json.loads((fake_run / "cells" / path.name).read_text())["rows"]


def _rewrite(stored, rows):
    """A cell file with `rows` and a digest that matches them (only the content checks can catch it)."""
    return json.dumps({**stored, "rows": rows, "digest": sweep._digest(rows)})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda s, other: "{cut off", "unreadable"),
        (lambda s, other: json.dumps(s["rows"]), "not a cell file"),  # the format before digests
        (lambda s, other: json.dumps({**s, "key": other["key"]}), "holds cell"),
        (lambda s, other: json.dumps({**s, "digest": "0" * 32}), "digest"),
        (lambda s, other: _rewrite(s, other["rows"]), "not of this cell"),  # another seed's rows
        (lambda s, other: _rewrite(s, s["rows"][:1]), "2 rows"),
        (lambda s, other: _rewrite(s, s["rows"][::-1]), "not of this cell and phase"),
        (lambda s, other: _rewrite(s, [{**r, "extra": 1.0} for r in s["rows"]]), "columns"),
        (lambda s, other: _rewrite(s, [{**r, "err_pntk": "0.1"} for r in s["rows"]]), "not a number"),
    ],
)
def test_cell_file_check_refuses(fake_run, tmp_path, tamper, reason):
    cfg = config.parse(MINI)
    cell, path = _first_cell(cfg, fake_run)
    stored = json.loads(path.read_text())
    assert sweep.read_cell(path, cell) == stored["rows"]  # the untouched file passes
    other_cell = cfg.cells()[1]
    assert other_cell.seed != cell.seed
    other = json.loads((fake_run / "cells" / f"{other_cell.key}.json").read_text())
    bad = tmp_path / path.name
    bad.write_text(tamper(stored, other))
    with pytest.raises(sweep.CellFileError, match=reason):
        sweep.read_cell(bad, cell)


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
    assert row.verdict == "PASS"


# --- The readout and body sweeps --------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["fc", "cnn"])
def test_readout_width_adds_a_dense_layer_of_that_width_before_the_last(architecture):
    model = models.get_model(architecture, width=3, outputs=5, depth=1, readout_width=7)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    kernels = [p[0].shape for p in params if isinstance(p, tuple) and len(p) == 2]
    assert kernels[-2][-2:] == (3, 7) and kernels[-1] == (7, 5)  # body 3 -> readout input 7 -> O = 5
    plain = models.get_model(architecture, width=3, outputs=5, depth=1)
    _, plain_params = plain.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    assert [p[0].shape for p in plain_params if isinstance(p, tuple) and len(p) == 2][-1] == (3, 5)


def test_readout_sweep_cells_build_the_body_and_readout_widths():
    raw = {
        **MINI,
        "sweep": [
            {"architecture": "cnn", "vary": "readout_width", "width": 8, "widths": [64, 256], "outs": [10]},
            {"architecture": "cnn", "widths": [4, 8], "outs": [10], "options": {"readout_width": 64}},
        ],
    }
    cfg = config.parse(raw)
    readout, body = cfg.cells()[0], cfg.cells()[-1]
    assert readout.role == "readout" and readout.model_arguments() == {"width": 8, "readout_width": 64}
    assert readout.label == "cnn-readout-body8"
    assert body.role == "body" and body.model_arguments() == {"width": 8, "readout_width": 64}
    assert body.label == "cnn-body-readout64"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            {"architecture": "cnn", "vary": "readout_width", "widths": [64], "outs": [10]},
            r"`sweep\[0\]\.width` is missing",
        ),
        (
            {"architecture": "resnet", "vary": "readout_width", "width": 8, "widths": [64], "outs": [10]},
            "option of the 'resnet' builder",
        ),
        (
            {"architecture": "cnn", "width": 8, "widths": [64], "outs": [10]},
            r"`sweep\[0\]\.width` must be left out",
        ),
        (
            {"architecture": "cnn", "vary": "depth", "width": 8, "widths": [64], "outs": [10]},
            r"`sweep\[0\]\.vary` must be one of",
        ),
    ],
)
def test_bad_readout_sweeps_are_named(sweep, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse({**MINI, "sweep": [sweep]})
