"""`nt-pntk figure1` on a tiny ResNet-10 (the table, the CSV and the plot), its bad options, and the
experiment's own argument checks (`nt_pntk.experiments.figure1.measure`)."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from nt_pntk import cli
from nt_pntk.cli import figure1 as figure1_cli
from nt_pntk.experiments import figure1


def parse(*argv: str):
    return cli.build_parser("figure1").parse_args(["figure1", *argv])


@pytest.mark.slow
def test_figure1_tiny(tmp_path, capsys):
    """Two compilations of a width-2 ResNet-10 kernel (the smallest depth: about 10 s on 2 cores)."""
    out = tmp_path / "fig"
    argv = ["figure1", "--depths", "10", "--outputs", "3", "--width", "2", "--image-size", "8"]
    previous = os.umask(0o022)
    try:
        assert cli.main([*argv, "--repeats", "1", "--output", str(out)]) == 0
    finally:
        os.umask(previous)
    frame = pd.read_csv(out / "figure1.csv")
    assert list(frame["outputs"]) == [3] and list(frame["depth"]) == [10]
    assert (frame[["eNTK_s", "pNTK_s", "eNTK_compile_s", "pNTK_compile_s"]] > 0).all().all()
    assert frame["ratio"].iloc[0] == pytest.approx(frame["eNTK_s"].iloc[0] / frame["pNTK_s"].iloc[0])
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("figure1.csv", "figure1.png"):  # readable by the group, as open() would make them
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    printed = capsys.readouterr().out
    assert "Figure 1" in printed and "eNTK/pNTK" in printed and "ResNet-10 O=3 impl 1" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depths", "18", "7"], r"`--depths` must be one of \[10, 18, 34, 50, 101, 152\]; got 7"),
        (["--outputs", "10", "0"], r"`--outputs` must be an int >= 1; got --outputs=0"),
        (["--image-size", "0"], r"`--image-size` must be an int in \[1, 4,096\] .*; got --image-size=0"),
        (
            ["--image-size", "100000"],
            r"`--image-size` must be an int in \[1, 4,096\] .*; got --image-size=100000",
        ),
        (["--width", "-2"], r"`--width` must be an int >= 1; got --width=-2"),
        # The zoo's own check: ResNet-50's last stage has width * 8 * 4 channels.
        (
            ["--width", str(2**27), "--depths", "50"],
            r"`width`=134217728 makes a layer 4,294,967,296 channels",
        ),
        (["--repeats", "0"], r"`--repeats` must be an int >= 1; got --repeats=0"),
        (["--time-budget", "0"], r"`--time-budget` must be > 0; got --time-budget=0"),
        (["--time-budget", "nan"], r"`--time-budget` must be finite; got --time-budget=nan"),
        (["--time-budget", "inf"], r"`--time-budget` must be finite; got --time-budget=inf"),
        (["--seed", "-1"], r"`--seed` must be an int in \[0, 2\*\*32\) .*; got --seed=-1"),
        (["--seed", str(2**32)], r"`--seed` must be an int in \[0, 2\*\*32\) .*; got --seed=4294967296"),
    ],
)
def test_bad_option_is_a_usage_error_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "fig"
    with pytest.raises(cli.UsageError, match=message):
        figure1_cli.check_args(parse(*argv, "--output", str(out)))
    assert cli.main(["figure1", *argv, "--output", str(out)]) == 2  # one line, exit code 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk figure1: error: `")
    assert not out.exists()


def test_output_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "figure.png"
    out.write_bytes(b"mine")
    assert cli.main(["figure1", "--output", str(out)]) == 2
    assert "figure.png' is a file, not a directory" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"


def test_the_check_accepts_defaults_and_boundary_values(tmp_path):
    """The check must not refuse what works: it fails this test by raising."""
    boundary = ["--depths", "18", "34", "50", "101", "152", "--outputs", "1", "--width", "1"]
    boundary += ["--image-size", "1", "--repeats", "1", "--time-budget", "1e-3", "--seed", str(2**32 - 1)]
    for argv in ([], ["--full-size"], boundary):
        args = parse(*argv, "--output", str(tmp_path))
        figure1_cli.check_args(args)
    assert args.depths == [18, 34, 50, 101, 152]


@pytest.mark.parametrize(
    ("argv", "size"),
    [
        ([], figure1.REDUCED),
        (["--full-size"], figure1.FULL_SIZE),
        (["--full-size", "--width", "16"], {"width": 16, "image_size": 32}),
        (["--image-size", "12"], {"width": 8, "image_size": 12}),
    ],
)
def test_size_options(argv, size):
    assert figure1_cli.size(parse(*argv)) == size


def test_the_command_passes_its_options_to_the_experiment(tmp_path, monkeypatch, capsys):
    """What `measure` is asked for, and what the command writes from the frame it returns."""
    received = {}

    def fake_measure(**options):
        received.update(options)
        frame = pd.DataFrame(
            [
                {
                    "depth": 18,
                    "outputs": 4,
                    "implementation": 2,
                    "params": 1000,
                    "eNTK_s": 0.5,
                    "pNTK_s": 0.001,
                }
                | {"ratio": 500.0, "eNTK_compile_s": 1.0, "pNTK_compile_s": 0.5}
            ]
        )
        frame.attrs.update(size={"width": 3, "image_size": 5}, device="cpu")
        return frame

    monkeypatch.setattr(figure1_cli.experiment, "measure", fake_measure)  # the module the command calls
    argv = ["figure1", "--depths", "18", "--outputs", "4", "--implementations", "2", "--width", "3"]
    argv += ["--image-size", "5", "--repeats", "2", "--time-budget", "7", "--seed", "9"]
    assert cli.main([*argv, "--output", str(tmp_path)]) == 0
    del received["log"]
    assert received == dict(
        depths=[18],
        outputs=[4],
        implementations=[2],
        width=3,
        image_size=5,
        repeats=2,
        time_budget=7.0,
        seed=9,
    )
    assert pd.read_csv(tmp_path / "figure1.csv")["ratio"].tolist() == [500.0]
    assert (tmp_path / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "500x" in printed and "500.00 ms" in printed and "1.000 ms" in printed


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"depths": [7]}, ValueError, r"`depths` must be one of \[10, 18, 34, 50, 101, 152\]; got 7"),
        ({"depths": [18.0]}, TypeError, r"`depths` must be an int; got 18.0"),
        ({"outputs": [0]}, ValueError, r"`outputs` must be an int >= 1; got outputs=0"),
        ({"implementations": [4]}, ValueError, r"`implementations` must be one of \[1, 2, 3\]; got 4"),
        ({"width": 0}, ValueError, r"`width` must be an int >= 1"),
        ({"image_size": True}, TypeError, r"`image_size` must be an int; got True"),
        ({"repeats": 0}, ValueError, r"`repeats` must be an int >= 1"),
        ({"time_budget": float("nan")}, ValueError, r"`time_budget` must be finite"),
        ({"seed": -1}, ValueError, r"`seed` must be an int in \[0, 2\*\*32\) .*; got seed=-1"),
        # JAX without x64 keeps the low 32 bits: seed 2**32 + 9 would be seed 9's parameters.
        ({"seed": 2**32 + 9}, ValueError, r"`seed` must be an int in \[0, 2\*\*32\)"),
        ({"image_size": 5000}, ValueError, r"`image_size` must be an int in \[1, 4,096\]"),
    ],
)
def test_the_experiment_checks_its_arguments(options, error, message):
    with pytest.raises(error, match=message):
        figure1.measure(**options)
