"""The validation report from a table with known laws: header, sections, plots, labels, values ≤ 0."""

import re
import struct

import numpy as np
import pandas as pd
import pytest

from nt_pntk._src.experiments.validation import fits, report

WIDTHS = (64, 256, 1024)


def _rows(sweep, role, arch, outs, law, seeds=3):
    """Rows whose every error follows law(width, O) (the off-diagonal mass its square); accuracies 0.5."""
    rows = []
    for w in WIDTHS:
        for o in outs:
            for s in range(seeds):
                for phase in ("init", "trained"):
                    e = law(w, o) * (1 + 0.02 * s) * (1 if phase == "init" else 1.5)
                    metrics = {m: e for m in fits.EXPECTED_SLOPES} | {"offdiag_mass": e**2}
                    metrics |= {"err_trace": 0.9 * e, "acc_entk": 0.5, "acc_pntk": 0.5, "err_cond": 2.0}
                    rows.append(
                        {"key": f"{sweep}{w}{o}{s}", "sweep": sweep, "role": role, "architecture": arch}
                        | {"data": "digits", "width": w, "outputs": o, "seed": s, "phase": phase, **metrics}
                    )
    return rows


@pytest.fixture(scope="module")
def table():
    rows = _rows("fc", "theorem", "fc", (2, 10, 100), lambda w, o: 0.5 * np.sqrt(o / w))
    rows += _rows("cnn", "theorem", "cnn", (10,), lambda w, o: 3.0 * w**-0.5)
    rows += _rows("cnn-readout-body8", "readout", "cnn", (10,), lambda w, o: 0.2 + 0.0 * w)
    rows += _rows("cnn-body-readout16", "body", "cnn", (10,), lambda w, o: 0.3 * w**-0.1)
    table = pd.DataFrame(rows)
    table.loc[(table.sweep == "cnn") & (table.width == 64) & (table.seed == 0), "err_lambda_max"] = 0.0
    return table


@pytest.fixture(scope="module")
def written(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    slopes = fits.fit_slopes(table, bootstrap=50)
    path = report.write_report(table, slopes, out, config_name="synthetic", bootstrap=50, dpi=40)
    return out, path.read_text(), slopes


def test_header_states_date_commit_machine_and_versions(written):
    _, text, _ = written
    head = text.splitlines()[:7]
    assert head[0] == "# nt-pntk validation report: `synthetic`"
    for field in ("date", "commit", "machine", "versions"):
        assert any(line.startswith(f"- {field}: ") for line in head), field
    assert re.search(r"- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "jax " in text and "neural-tangents " in text


def test_every_plot_is_written_as_png_and_pdf(written):
    out, text, _ = written
    stems = [*report.CLAIMS, "outputs_collapse", "controls", "err_pntk_readout", "err_pntk_body"]
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-", stem
        assert f"({stem}.pdf)" in text, stem


def _png_size(path):
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_dpi_sets_the_png_resolution(table, written, tmp_path):
    # The report of `written` has dpi 40: one more at twice that (a report takes seconds).
    out, _, slopes = written
    sizes = {40: _png_size(out / "err_pntk.png")}
    report.write_report(table, slopes, tmp_path, config_name="x", bootstrap=10, dpi=80)
    sizes[80] = _png_size(tmp_path / "err_pntk.png")
    assert sizes[80][0] == pytest.approx(2 * sizes[40][0], abs=2)
    with pytest.raises(ValueError, match="dpi"):
        report.write_report(table, slopes, tmp_path, config_name="x", dpi=0)


def test_verdicts_and_sections(written):
    _, text, _ = written
    summary = text.split("## The theorem at initialization")[1].split("\n## ")[0]
    assert "| err_pntk | fc | digits | 100 | init |" in summary
    assert "PASS" in summary and "FAIL" not in summary
    # The readout and body sweeps: their slopes, no verdict, and what the slopes say in words.
    readout = text.split("## The readout claim")[1].split("\n## ")[0]
    assert "### readout sweep, `err_pntk`" in readout and "### body sweep, `err_pntk`" in readout
    assert "| verdict |" not in readout
    assert re.search(r"`cnn-readout-body8` \(O = 10\): slope \+0\.000 .* it levels off", readout)
    assert re.search(r"`cnn-body-readout16` .* slope -0\.100 .* it levels off", readout)
    # The O scaling: err ∝ O^0.5 n^-0.5 by construction.
    outputs = text.split("## The dependence on O")[1].split("\n## ")[0]
    assert "beta = +0.500" in outputs and "alpha = -0.500" in outputs
    # Controls: the trace is 0.9 of the pNTK's error here.
    controls = text.split("## Controls")[1].split("\n## ")[0]
    assert "trace / pNTK 0.900" in controls and "single-logit / pNTK error 1.000" in controls


def test_values_at_or_below_zero_are_reported(written):
    _, text, slopes = written
    row = slopes[(slopes.sweep == "cnn") & (slopes.metric == "err_lambda_max") & (slopes.phase == "init")]
    assert row.nonpositive.iloc[0] == 1
    section = text.split("## `err_lambda_max`")[1].split("\n## ")[0]
    (line,) = [r for r in section.splitlines() if r.startswith("| cnn | digits | 10 | init |")]
    assert line.rstrip(" |").endswith("1 / 0")


def test_accuracies_have_no_sign_and_slopes_do(written):
    _, text, _ = written
    medians = text.split("## Medians over seeds")[1]
    (line,) = [r for r in medians.splitlines() if r.startswith("| cnn | digits | 10 | init | 64 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[-2:] == ["0.500", "0.500"]
    assert "+" not in line
    section = text.split("## `err_pntk`")[1].split("\n## ")[0]
    (line,) = [r for r in section.splitlines() if r.startswith("| cnn | digits | 10 | init |")]
    assert "| -0.500 |" in line


@pytest.mark.parametrize(
    ("metric", "reference", "fitted"),
    [("err_pntk", "n^{-1/2}", "-0.50"), ("offdiag_mass", "n^{-1}", "-1.00")],
)
def test_plot_labels_legend_and_reference_slope(table, tmp_path, monkeypatch, metric, reference, fitted):
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path, dpi: figures.append(fig) or ["x.png", "x.pdf"])
    slopes = fits.fit_slopes(table, bootstrap=20)
    report.plot_metric(table, slopes, metric, tmp_path / metric)
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_ylabel() == report.LABELS[metric] and "\\|" in ax.get_ylabel()
    assert ax.get_xlabel().startswith("width $n$")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(reference in t and "theory" in t for t in legend)
    assert "median over seeds; bars: min–max over seeds" in legend
    assert any("95% bootstrap band" in t for t in legend)
    assert any(f"cnn O=10: fit {fitted} over n=64-1024" in t for t in legend)
