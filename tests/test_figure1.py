"""`python -m nt_pntk.figure1` on a tiny ResNet-18: the table, the CSV and the plot."""

from __future__ import annotations

import pandas as pd

from nt_pntk import figure1


def test_figure1_tiny(tmp_path, capsys):
    out = tmp_path / "fig"
    argv = ["--depths", "18", "--outs", "1", "3", "--width", "2", "--image-size", "8"]
    assert figure1.main([*argv, "--repeats", "1", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "figure1.csv")
    assert list(frame["O"]) == [1, 3] and set(frame["depth"]) == {18}
    assert (frame[["eNTK_s", "pNTK_s", "ratio"]] > 0).all().all()
    assert (out / "figure1.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Figure 1" in printed and "eNTK/pNTK" in printed
