"""`python -m nt_pntk.figure1` on a tiny ResNet-18: the table, the CSV and the plot."""

from __future__ import annotations

import pandas as pd
import pytest

from nt_pntk import figure1


@pytest.mark.slow
def test_figure1_tiny(tmp_path, capsys):
    """Two compilations of a width-2 ResNet-18 kernel (about 20 s on 2 cores)."""
    out = tmp_path / "fig"
    argv = ["--depths", "18", "--outs", "3", "--width", "2", "--image-size", "8"]
    assert figure1.main([*argv, "--repeats", "1", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "figure1.csv")
    assert list(frame["O"]) == [3] and list(frame["depth"]) == [18]
    assert (frame[["eNTK_s", "pNTK_s", "ratio"]] > 0).all().all()
    assert (out / "figure1.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Figure 1" in printed and "eNTK/pNTK" in printed
