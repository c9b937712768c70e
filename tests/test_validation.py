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
    slopes = FAKE_SLOPES if cell.outputs != SLOW_OUT else {**FAKE_SLOPES, "err_pntk": -0.2}
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
    "sweep": [{"architecture": "fc", "widths": [16, 32, 64], "outputs": [3, SLOW_OUT]}],
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


def _report_row(text: str, metric: str, phase: str, outputs: int) -> list[str]:
    """The cells of `metric`'s row for (fc, O = `outputs`, `phase`) in report.md's slope table."""
    section = text.split(f"## `{metric}`:")[1].split("\n## ")[0]
    pattern = rf"\| fc \| \w+ \| {outputs} \| {phase} \|"
    (line,) = [row for row in section.splitlines() if re.match(pattern, row)]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize("outputs", [3, SLOW_OUT])
def test_verdicts_follow_the_slopes(fake_run, outputs):
    """The stand-in's slopes are known: each claim's slope, verdict and report row follow from them."""
    slopes = pd.read_csv(fake_run / report.SLOPES_CSV, keep_default_na=False, na_values=[""])
    text = (fake_run / report.REPORT_MD).read_text()
    expected = FAKE_SLOPES if outputs != SLOW_OUT else {**FAKE_SLOPES, "err_pntk": -0.2}
    for metric, slope in expected.items():
        for phase in ("init", "trained"):
            row = slopes[(slopes.metric == metric) & (slopes.phase == phase) & (slopes.outputs == outputs)]
            assert len(row) == 1
            assert row.slope.iloc[0] == pytest.approx(slope, abs=1e-9)
            if metric == "err_cond" or phase == "trained":  # no claimed rate; no claim after training
                assert row.verdict.iloc[0] == "-"
                continue
            in_band = SLOPE_BAND[0] <= slope / (-2 * FAKE_SLOPES[metric]) <= SLOPE_BAND[1]
            verdict = "PASS" if in_band else "FAIL"  # every stand-in error is below the level at 64
            assert row.verdict.iloc[0] == verdict
            if metric in report.CLAIMS:
                cells = _report_row(text, metric, phase, outputs)
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
    cells = _report_row((ci_run / report.REPORT_MD).read_text(), "err_pntk", "init", outputs=10)
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
    two = {**MINI, "sweep": [*MINI["sweep"], {"architecture": "fc", "widths": [8, 16], "outputs": [2]}]}
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


# --- Results and configurations of an earlier release: O was `out` and `outs` ------------------


def _as_former_release(directory):
    """Rewrites a finished output directory as an earlier release wrote it: the column `out` in the
    cells' rows (with their digests) and the field `outs` in config.json."""
    for path in (directory / "cells").glob("*.json"):
        stored = json.loads(path.read_text())
        rows = [{("out" if k == "outputs" else k): v for k, v in row.items()} for row in stored["rows"]]
        path.write_text(_rewrite(stored, rows))
    record = json.loads((directory / sweep.CONFIG_JSON).read_text())
    record["sweeps"] = [
        {("outs" if k == "outputs" else k): v for k, v in s.items()} for s in record["sweeps"]
    ]
    (directory / sweep.CONFIG_JSON).write_text(json.dumps(record, sort_keys=True, indent=1))


@pytest.fixture
def no_plots(monkeypatch):
    """The report without its plots (seconds each): for tests of the tables only."""
    for name in ("plot_metric", "plot_outputs_collapse", "plot_controls"):
        monkeypatch.setattr(report, name, lambda *args, **kwargs: ["plot.png", "plot.pdf"])


def test_results_of_an_earlier_release_resume_with_a_warning(fake_run, tmp_path, monkeypatch):
    """Cells and config.json with `out`/`outs` are read under the current names, nothing is measured
    again, and the table is the one this release writes."""
    shutil.copytree(fake_run, tmp_path, dirs_exist_ok=True)
    _as_former_release(tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "cells").glob("*.json")}

    def must_not_measure(cell, cfg):
        raise AssertionError(f"cell {cell.key} measured again")

    monkeypatch.setattr(sweep, "measure_cell", must_not_measure)
    cfg = config.parse(MINI)
    cells = len(cfg.cells())
    with pytest.warns(
        DeprecationWarning, match=rf"older release \(the column `out` in {cells} cell files and "
    ):
        table = sweep.run_sweep(cfg, tmp_path, progress=False)
    assert "outputs" in table.columns and "out" not in table.columns
    assert (tmp_path / sweep.RESULTS_CSV).read_bytes() == (fake_run / sweep.RESULTS_CSV).read_bytes()
    assert {p.name: p.read_bytes() for p in (tmp_path / "cells").glob("*.json")} == before  # left as they are


def test_the_command_resumes_results_of_an_earlier_release_with_a_warning_line(
    fake_run, tmp_path, monkeypatch, capsys, no_plots
):
    shutil.copytree(fake_run, tmp_path / "run")
    _as_former_release(tmp_path / "run")
    toml = tmp_path / "mini.toml"
    toml.write_text(_toml(MINI).replace("outputs = ", "outs = "))  # an earlier release's configuration

    def must_not_measure(cell, cfg):
        raise AssertionError(f"cell {cell.key} measured again")

    monkeypatch.setattr(sweep, "measure_cell", must_not_measure)
    argv = ["validate", "--config", str(toml), "--output", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(
        "nt-pntk validate: warning: The [[sweep]] key `outs` (sweep[0]) is deprecated"
    )
    assert "use `outputs`" in warnings[0]
    assert warnings[1].startswith("nt-pntk validate: warning: `--output` ") and "older release" in warnings[1]
    for name in (sweep.RESULTS_CSV, report.SLOPES_CSV, report.SCALING_CSV):
        assert (tmp_path / "run" / name).read_bytes() == (fake_run / name).read_bytes(), name


def test_a_configuration_of_an_earlier_release_loads_with_a_warning(tmp_path):
    """`outs`, the former name of a [[sweep]] table's `outputs`: the same configuration, and a warning."""
    toml = tmp_path / "old.toml"
    toml.write_text(_toml(MINI).replace("outputs = ", "outs = "))
    with pytest.warns(
        DeprecationWarning, match=r"The \[\[sweep\]\] key `outs` \(sweep\[0\]\) is deprecated .*use `outputs`"
    ):
        former = config.load(str(toml))
    assert former == config.parse(MINI)
    both = {**MINI, "sweep": [{**MINI["sweep"][0], "outs": [3]}]}
    with pytest.raises(
        config.ConfigError, match=r"`sweep\[0\]\.outs` is the former name of `sweep\[0\]\.outputs`"
    ):
        config.parse(both)


def test_tables_of_an_earlier_release_are_fitted_and_reported_with_a_warning(fake_run, tmp_path, no_plots):
    """results.csv and slopes.csv with the column `out`, as an earlier release wrote them."""
    table = pd.read_csv(fake_run / sweep.RESULTS_CSV)
    slopes = fits.fit_slopes(table, bootstrap=10)
    former = table.rename(columns={"outputs": "out"})
    with pytest.warns(DeprecationWarning, match=r"fit_slopes\(\): a table with the former column `out`"):
        refitted = fits.fit_slopes(former, bootstrap=10)
    pd.testing.assert_frame_equal(refitted, slopes)
    with pytest.warns(DeprecationWarning, match=r"output_scaling\(\): a table with the former column `out`"):
        fits.output_scaling(former, bootstrap=10)
    with pytest.warns(DeprecationWarning, match=r"write_report\(\): a table with the former column `out`"):
        report.write_report(
            former, slopes.rename(columns={"outputs": "out"}), tmp_path, config_name="x", dpi=20
        )
    assert "outputs" in pd.read_csv(tmp_path / report.SLOPES_CSV).columns
    with pytest.raises(ValueError, match="both `outputs` and its former name `out`"):
        fits.fit_slopes(table.assign(out=table.outputs), bootstrap=10)


PAPER = Path(__file__).resolve().parent.parent / "validation" / "results" / "paper"


def test_the_committed_paper_cells_still_load(tmp_path, monkeypatch):
    """validation/results/paper keeps the cells and config.json of the run that measured them (an
    earlier release's names): they resume under the paper configuration, nothing measured, and give
    the committed results.csv."""
    shutil.copytree(PAPER / "cells", tmp_path / "cells")
    shutil.copy(PAPER / sweep.CONFIG_JSON, tmp_path)

    def must_not_measure(cell, cfg):
        raise AssertionError(f"cell {cell.key} measured again")

    monkeypatch.setattr(sweep, "measure_cell", must_not_measure)
    with pytest.warns(DeprecationWarning, match="older release"):
        table = sweep.run_sweep(config.load("paper"), tmp_path, progress=False)
    assert len(table) == 510
    assert (tmp_path / sweep.RESULTS_CSV).read_bytes() == (PAPER / sweep.RESULTS_CSV).read_bytes()


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
                "outputs": list(s.outputs),
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
        ({"outputs": [0]}, r"sweep\[0\]\.outputs"),
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


GOOD_SWEEP = '[[sweep]]\narchitecture = "fc"\nwidths = [64, 256]\noutputs = [10]\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'seeds = 2\n[[sweep]]\narchitecture = "fc"\nwidths = [256, 64]\noutputs = [10]\n',
            r"sweep\[0\]\.widths",
        ),
        # Unknown keys used to be ignored: 100 training steps instead of 5, a sweep without its typo.
        ("train_step = 5\n" + GOOD_SWEEP, r"`train_step`.*`train_steps`"),
        (GOOD_SWEEP + "widhts = [8]\n", r"`sweep\[0\]\.widhts`.*`widths`"),
        # A builder typo used to pass the check, write config.json, then crash with a TypeError.
        (GOOD_SWEEP + "options = { depht = 3 }\n", r"`sweep\[0\]\.options\.depht`.*`depth`"),
        (
            GOOD_SWEEP.replace('"fc"', '"resnet"') + "options = { depth = 7 }\n",
            r"`sweep\[0\]\.options\.depth`.*18",
        ),
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


@pytest.mark.parametrize(
    ("change", "field"), [({"widths": [True, 2]}, "widths"), ({"outputs": [True]}, "outputs")]
)
def test_a_bool_is_not_a_width_or_outputs(ci_config, change, field):
    raw = _raw(ci_config)
    raw["sweep"][0].update(change)
    with pytest.raises(config.ConfigError, match=rf"sweep\[0\]\.{field}"):
        config.parse(raw)


def test_config_check_builds_each_sweeps_model(ci_config, monkeypatch):
    raw = _raw(ci_config)
    raw["sweep"].append(
        {"architecture": "resnet", "widths": [4, 8], "outputs": [7], "options": {"depth": 34}}
    )
    built = []
    get_model = config.models.get_model

    def record(name, **kwargs):
        built.append((name, kwargs))
        return get_model(name, **kwargs)

    monkeypatch.setattr(config.models, "get_model", record)
    config.parse(raw)
    # The widest cell of each sweep: its options and sizes, then its memory (`cell_memory`).
    fc, resnet = (
        ("fc", {"width": 1024, "outputs": 10, "depth": 3}),
        ("resnet", {"width": 8, "outputs": 7, "depth": 34}),
    )
    assert built == [fc, resnet, fc, resnet]


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
        {"architecture": "fc", "data": "d", "outputs": 1, "phase": "init", "seed": s, "width": w}
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
            {
                "architecture": "cnn",
                "vary": "readout_width",
                "width": 8,
                "widths": [64, 256],
                "outputs": [10],
            },
            {"architecture": "cnn", "widths": [4, 8], "outputs": [10], "options": {"readout_width": 64}},
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
            {"architecture": "cnn", "vary": "readout_width", "widths": [64], "outputs": [10]},
            r"`sweep\[0\]\.width` is missing",
        ),
        (
            {"architecture": "resnet", "vary": "readout_width", "width": 8, "widths": [64], "outputs": [10]},
            "option of the 'resnet' builder",
        ),
        (
            {"architecture": "cnn", "width": 8, "widths": [64], "outputs": [10]},
            r"`sweep\[0\]\.width` must be left out",
        ),
        (
            {"architecture": "cnn", "vary": "depth", "width": 8, "widths": [64], "outputs": [10]},
            r"`sweep\[0\]\.vary` must be one of",
        ),
    ],
)
def test_bad_readout_sweeps_are_named(sweep, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse({**MINI, "sweep": [sweep]})


# --- A configuration that cannot run is refused by the check, naming the field. ---


def _sweep(**change) -> dict:
    return {**MINI, "sweep": [{**MINI["sweep"][0], **change}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # It was accepted and still running after 300 s (building alone takes a minute).
        (
            _sweep(options={"depth": 100_000}),
            r"^`sweep\[0\]\.options\.depth` does not build a 'fc' model .*: `depth` must be an int in "
            r"\[1, 1,000\] \(hidden layers\); got depth=100000\.$",
        ),
        # It aborted the interpreter (SIGABRT, "overflow in static extent product").
        (
            _sweep(outputs=[100_000_000]),
            r"^`sweep\[0\]\.outputs` = \[100000000\]: the cell of width 64 and O = 100,000,000 needs "
            r"at least "
            r".* GiB \(.*\), more than this machine's .* GiB of memory; lower `sweep\[0\]\.outputs`",
        ),
        # A JaxRuntimeError after the first cells were measured.
        (
            _sweep(widths=[16, 10**10]),
            r"^`sweep\[0\]\.widths` does not build a 'fc' model \(the sweep's widest cell: "
            r"width=10000000000, outputs=5, options \{\}\): `width` must be an int in \[1, 2,147,483,647\]",
        ),
        (_sweep(outputs=[3, 0]), r"^`sweep\[0\]\.outputs` must be a non-empty list of integers >= 1"),
        # A MemoryError only after every cell was measured.
        (
            {**MINI, "bootstrap": 10**9},
            r"^`bootstrap` must be at most 100,000 resamples .*; got 1,000,000,000\.$",
        ),
        (
            {**MINI, "learning_rate": 1e308},
            r"^`learning_rate` must be a number in \(0, 1\): .*; got 1e\+308\.$",
        ),
        ({**MINI, "learning_rate": 1.0}, r"^`learning_rate` must be a number in \(0, 1\)"),
        (
            {**MINI, "train_steps": 10**9},
            r"^`train_steps` must be at most 1,000,000 .*; got 1,000,000,000\.$",
        ),
        (
            {**MINI, "seeds": 10**9},
            r"^The configuration has 6,000,000,000 cells \(.*\), more than the 100,000 a run may have; lower "
            r"`seeds`",
        ),
    ],
)
def test_a_configuration_that_cannot_run_is_refused_before_any_work(tmp_path, capsys, raw, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(raw)
    toml = tmp_path / "bad.toml"
    toml.write_text(_toml(raw))
    out = tmp_path / "out"
    assert cli.main(["validate", "--config", str(toml), "--output", str(out), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk validate: error: `") or line.startswith("nt-pntk validate: error: The ")
    assert not out.exists()


def test_a_sweep_wider_than_the_memory_is_refused_naming_its_widths(monkeypatch):
    monkeypatch.setattr(config.measure, "physical_memory_bytes", lambda: 16 * 2**30)
    # depth 3: 64·W + 2·W² + 5·W + 3·W + 5 float32 parameters, three copies while training: ~2.4e19 bytes.
    with pytest.raises(
        config.ConfigError,
        match=r"^`sweep\[0\]\.widths` = \[16, 1000000000\]: the cell of width 1,000,000,000 and O = 5 "
        r"needs at least 2.24e\+10 GiB \(parameters 2.24e\+10 GiB, .*\), more than this machine's 16 GiB of "
        r"memory; lower `sweep\[0\]\.widths`",
    ):
        config.parse(_sweep(widths=[16, 10**9], options={"depth": 3}))


@pytest.mark.parametrize("phases", [["init"], ["init", "trained"]])
def test_cell_memory_counts_the_parameters_and_kernels_the_cell_holds(phases):
    cfg = config.parse(_sweep(phases=phases, options={"depth": 2}))
    (sweep_,) = cfg.sweeps
    need = config.cell_memory(cfg, sweep_, 32, 5)
    # The parameters init allocates (independently counted), three copies while training.
    model = models.get_model("fc", width=32, outputs=5, depth=2)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    allocated = sum(np.asarray(p).nbytes for p in jax.tree_util.tree_leaves(params))
    assert allocated == 4 * (64 * 32 + 32 + 32 * 32 + 32 + 32 * 5 + 5)
    assert need["parameters"] == (3 if "trained" in phases else 1) * allocated
    n = 12  # n_train + n_test
    assert need["kernels"] == 8 * n * n * 5 * 5 + 8 * n * n  # float64 eNTK (N, N, O, O) and pNTK (N, N)


@pytest.mark.parametrize("name", ["ci", "quick", "paper"])
def test_the_shipped_configurations_pass_the_check(name):
    assert config.load(name).name == name
