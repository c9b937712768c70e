"""The validation's fits: known synthetic slopes, the asymptotic slope, verdicts, the O scaling."""

import numpy as np
import pandas as pd
import pytest

from nt_pntk._src.experiments.validation import fits

BAND = (-0.65, -0.35)
WIDTHS = (16, 64, 256, 1024, 4096)


def _table(
    law, widths=WIDTHS, seeds=4, outputs=10, role="theorem", phase="init", metric="err_pntk", noise=0.0
):
    """Rows of one sweep whose `metric` is law(width) · (1 + noise·ε); every other metric is 1."""
    rng = np.random.default_rng(1)
    rows = [
        {"key": f"k{w}_{s}", "sweep": "net", "role": role, "architecture": "fc", "data": "digits"}
        | {
            "outputs": outputs,
            "phase": phase,
            "seed": s,
            "width": w,
            metric: law(w) * (1 + noise * rng.standard_normal()),
        }
        for w in widths
        for s in range(seeds)
    ]
    table = pd.DataFrame(rows)
    return table.assign(**{m: 1.0 for m in fits.EXPECTED_SLOPES if m != metric})


def _row(slopes, metric="err_pntk"):
    (row,) = slopes[slopes.metric == metric].itertuples()
    return row


@pytest.mark.parametrize("slope", [-0.5, -0.25, -1.0])
def test_a_power_law_gives_its_slope_everywhere(slope):
    row = _row(fits.fit_slopes(_table(lambda w: 3.0 * w**slope), bootstrap=50))
    assert row.slope == pytest.approx(slope, abs=1e-12)
    assert row.slope_last == pytest.approx(slope, abs=1e-12)
    assert row.ci_low == pytest.approx(slope, abs=1e-12) and row.ci_high == pytest.approx(slope, abs=1e-12)
    assert row.last_widths == "256-4096"


def test_slope_is_least_squares_over_every_point_and_the_interval_covers_it():
    table = _table(lambda w: 2.0 * w**-0.5, noise=0.2)
    row = _row(fits.fit_slopes(table, bootstrap=400))
    refit = np.polyfit(np.log(table.width), np.log(table.err_pntk), 1)[0]
    assert row.slope == pytest.approx(refit, abs=1e-12)
    assert row.ci_low < row.slope < row.ci_high
    last = table[table.width >= 256]
    assert row.slope_last == pytest.approx(
        np.polyfit(np.log(last.width), np.log(last.err_pntk), 1)[0], abs=1e-12
    )


def test_two_term_law_shows_its_leading_exponent_only_at_the_widest_widths():
    """err = n^-1/2 + 4 n^-1: the all-widths slope bends away from -1/2, the widest three much less."""
    row = _row(fits.fit_slopes(_table(lambda w: w**-0.5 + 4.0 / w), bootstrap=20))
    assert row.slope < -0.6
    assert row.slope + 0.05 < row.slope_last < -0.5
    assert row.verdict == "PASS"


@pytest.mark.parametrize(
    ("law", "verdict"),
    [
        (lambda w: 2.0 * w**-0.5, "PASS"),
        (lambda w: 5.0 * w**-0.2, "PRE-ASYMPTOTIC"),  # 5·4096^-0.2 = 0.94 at the widest: above 0.2
        (lambda w: 0.5 * w**-0.2, "FAIL"),  # 0.5·4096^-0.2 = 0.095: below 0.2, and the rate is wrong
        (lambda w: 0.1 * w**-0.9, "FAIL"),  # too fast is no more the theorem than too slow
    ],
)
def test_verdicts(law, verdict):
    row = _row(fits.fit_slopes(_table(law), bootstrap=20, band=BAND, level=0.2))
    assert row.verdict == verdict


@pytest.mark.parametrize("metric", sorted(fits.BOUNDS))
def test_a_bound_passes_when_it_falls_faster_but_not_slower(metric):
    """pred_gap and err_lambda_max are claimed to be O(n^-1/2): n^-0.9 passes, n^-0.2 does not."""
    fast = _row(fits.fit_slopes(_table(lambda w: 0.1 * w**-0.9, metric=metric), bootstrap=20), metric)
    assert fast.verdict == "PASS"
    slow = _row(fits.fit_slopes(_table(lambda w: 0.5 * w**-0.2, metric=metric), bootstrap=20), metric)
    assert slow.verdict == "FAIL"


def test_the_off_diagonal_mass_is_held_to_n_to_the_minus_one():
    table = _table(lambda w: 0.5 * w**-1.0, metric="offdiag_mass")
    assert _row(fits.fit_slopes(table, bootstrap=20), "offdiag_mass").verdict == "PASS"
    table = _table(lambda w: 0.5 * w**-0.5, metric="offdiag_mass")
    row = _row(fits.fit_slopes(table, bootstrap=20, level=0.2), "offdiag_mass")
    assert row.level == pytest.approx(0.04) and row.verdict == "FAIL"  # 0.5/64 = 0.008 at 4096 < 0.04


@pytest.mark.parametrize(("role", "phase"), [("theorem", "trained"), ("readout", "init"), ("body", "init")])
def test_trained_rows_and_partial_sweeps_carry_a_slope_but_no_verdict(role, phase):
    row = _row(fits.fit_slopes(_table(lambda w: 0.5 * w**-0.1, role=role, phase=phase), bootstrap=20))
    assert row.slope == pytest.approx(-0.1, abs=1e-12) and row.verdict == "-"


def test_values_at_or_below_zero_and_not_finite_are_counted_not_dropped():
    table = _table(lambda w: 2.0 * w**-0.5)
    table.loc[0, "err_pntk"] = 0.0
    table.loc[1, "err_pntk"] = -1e-3
    table.loc[2, "err_pntk"] = np.nan
    row = _row(fits.fit_slopes(table, bootstrap=20))
    assert (row.nonpositive, row.nonfinite) == (2, 1)
    assert row.slope == pytest.approx(-0.5, abs=1e-12)  # the other points still follow the law
    every = table.assign(err_pntk=0.0)
    row = _row(fits.fit_slopes(every, bootstrap=20))
    assert np.isnan(row.slope) and row.nonpositive == len(every) and row.verdict == "-"


def test_ragged_slope_matches_polyfit():
    rng = np.random.default_rng(0)
    logs = {w: rng.standard_normal(k) - 0.4 * np.log(w) for w, k in ((8, 3), (32, 1), (128, 5))}
    x = np.concatenate([np.full(len(v), np.log(w)) for w, v in logs.items()])
    y = np.concatenate(list(logs.values()))
    slope, low, high = fits.ragged_slope(logs, bootstrap=300, rng=rng)
    assert slope == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-12)
    assert low < high


def test_output_scaling_recovers_the_exponents_of_o_and_n():
    rows = [
        {"key": f"{w}{o}{s}", "sweep": "fc-outs", "role": "theorem", "architecture": "fc", "data": "digits"}
        | {
            "phase": "init",
            "outputs": o,
            "width": w,
            "seed": s,
            "err_pntk": 0.7 * o**0.45 * w**-0.5 * (1 + 0.01 * s),
        }
        for w in (64, 256, 1024)
        for o in (2, 10, 100)
        for s in range(3)
    ]
    scaling = fits.output_scaling(pd.DataFrame(rows), bootstrap=50)
    (row,) = scaling.itertuples()
    assert row.beta == pytest.approx(0.45, abs=1e-9) and row.alpha == pytest.approx(-0.5, abs=1e-9)
    assert row.beta_low <= row.beta <= row.beta_high
    assert row.outputs == "2,10,100" and row.points == 27 and row.excluded == 0
