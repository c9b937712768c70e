"""`python -m nt_pntk.figure1` on a tiny ResNet-18: the table, the CSV and the plot; bad options."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from nt_pntk._src.experiments import figure1


@pytest.mark.slow
def test_figure1_tiny(tmp_path, capsys):
    """Two compilations of a width-2 ResNet-18 kernel (about 20 s on 2 cores)."""
    out = tmp_path / "fig"
    argv = ["--depths", "18", "--outs", "3", "--width", "2", "--image-size", "8"]
    previous = os.umask(0o022)
    try:
        assert figure1.main([*argv, "--repeats", "1", "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    frame = pd.read_csv(out / "figure1.csv")
    assert list(frame["O"]) == [3] and list(frame["depth"]) == [18]
    assert (frame[["eNTK_s", "pNTK_s", "ratio"]] > 0).all().all()
    assert (out / "figure1.png").stat().st_size > 0
    for name in ("figure1.csv", "figure1.png"):  # readable by the group, as open() would make them
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    printed = capsys.readouterr().out
    assert "Figure 1" in printed and "eNTK/pNTK" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depths", "18", "7"], r"`--depths` must be among \[10, 18, 34, 50, 101, 152\].*got \[7\]"),
        (["--outs", "10", "0"], r"`--outs` must be integers >= 1.*got \[10, 0\]"),
        (["--image-size", "0"], r"`--image-size` must be an integer >= 1; got 0"),
        (["--width", "-2"], r"`--width` must be an integer >= 1; got -2"),
        (["--repeats", "0"], r"`--repeats` must be an integer >= 1; got 0"),
        (["--time-budget", "0"], r"`--time-budget` must be .* > 0; got 0"),
        (["--time-budget", "nan"], r"`--time-budget` must be a finite .*; got nan"),
        (["--time-budget", "inf"], r"`--time-budget` must be a finite .*; got inf"),
        (["--seed", "-1"], r"`--seed` must be an integer in \[0, 2\*\*32\); got -1"),
    ],
)
def test_bad_option_is_a_usage_error_before_any_work(tmp_path, argv, message):
    out = tmp_path / "fig"
    with pytest.raises(figure1.UsageError, match=message) as raised:
        figure1.main([*argv, "--out", str(out)])
    assert raised.value.exit_code == 2
    assert not out.exists()


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    out = tmp_path / "figure.png"
    out.write_bytes(b"mine")
    with pytest.raises(figure1.UsageError, match=r"figure\.png.* is a file"):
        figure1.main(["--out", str(out)])
    assert out.read_bytes() == b"mine"


def test_the_check_accepts_defaults_and_boundary_values(tmp_path):
    """The check must not refuse what works: it fails this test by raising."""
    parser = figure1.argparse.ArgumentParser()
    figure1.add_arguments(parser)
    boundary = ["--depths", "18", "34", "50", "101", "152", "--outs", "1", "--width", "1"]
    boundary += ["--image-size", "1", "--repeats", "1", "--time-budget", "1e-3", "--seed", str(2**32 - 1)]
    for argv in ([], ["--full-size"], boundary):
        args = parser.parse_args([*argv, "--out", str(tmp_path)])
        figure1.check_args(args)
    assert args.depths == [18, 34, 50, 101, 152]
