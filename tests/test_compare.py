"""Smoke tests of `nt-pntk compare` with tiny settings, and its argument errors."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pandas as pd
import pytest

from nt_pntk import cli
from nt_pntk.cli import compare as _compare

O = 3  # noqa: E741  (the number of outputs, as in the paper)
M = 2  # projection directions
TINY = ["--width", "8", "--out", str(O), "--n-train", "12", "--n-test", "6", "--repeats", "1"]
SPECTRAL = ["err_lmax", "err_cond", "err_topk"]


def test_zoo_model_table(tmp_path, capsys):
    csv = tmp_path / "out" / "compare.csv"
    argv = ["compare", "--model", "fc", *TINY, "--approximations", "projection", "--m", str(M)]
    assert cli.main([*argv, "--csv", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert list(table["approximation"]) == ["entk", f"projection (m={M})"]
    assert list(table["jac_rows"]) == [O, M]
    assert list(table.columns) == [c for c in _compare.COLUMNS if c != "rss_mib"]
    reference = table.iloc[0]
    assert reference["rel_err"] == 0 and reference["pred_gap"] == 0
    assert all(reference[c] == 0 for c in SPECTRAL)
    approximations = table.iloc[1:]
    assert np.all((approximations["rel_err"] > 0) & (approximations["pred_gap"] > 0))
    assert np.all((table["test_acc"] >= 0) & (table["test_acc"] <= 1))
    assert np.all(table[["time_s", "compile_s"]] > 0)
    assert np.all(table["runs"] == 1)
    printed = capsys.readouterr().out
    assert "approximation" in printed and f"projection (m={M})" in printed and str(csv) in printed


USER_MODULE = """
from neural_tangents import stax


def build(out):
    return stax.serial(stax.Flatten(), stax.Dense(8), stax.Relu(), stax.Dense(out))


def broken(out):
    return 42
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `user_nets` in the current directory, as a user would write it."""
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # undo the current directory's insertion
    yield "user_nets"
    sys.modules.pop("user_nets", None)


def test_user_model_in_a_fresh_process(user_module):
    # The peak-RSS worker loads MODULE:FUNCTION from the current directory in a new process.
    args = cli.build_parser("compare").parse_args(["compare", "--model", f"{user_module}:build", *TINY[2:]])
    setup = _compare.Setup.from_args(args)
    assert setup.width is None  # no --width: FUNCTION is called as FUNCTION(out=O)
    rss_mib = _compare.peak_rss_in_subprocess(setup, "single_logit", {"logit": -1})
    assert np.isfinite(rss_mib) and rss_mib >= 0


def test_user_model_is_loaded(user_module):
    init_fn, apply_fn = _compare.load_model(f"{user_module}:build", None, O)
    key = jax.ShapeDtypeStruct((2,), np.uint32)  # shapes only: nothing is compiled
    params = jax.eval_shape(lambda k: init_fn(k, (-1, 8, 8, 1))[1], key)
    assert jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((5, 8, 8, 1), np.float32)).shape == (5, O)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "0"], "--out must be at least 1"),
        (["--width", "0"], "--width must be at least 1"),
        (["--n-train", "0"], "--n-train must be at least 1"),
        (["--n-test", "0"], "--n-test must be at least 1"),
        (["--n-train", "1700", "--n-test", "98"], "at most 1797 (the digits); got 1798"),
        (["--m", "2", "0"], "--m must be at least 1; got [2, 0]"),
        (["--out", "3", "--logit", "3"], "--logit must be in [-O, O) = [-3, 3); got 3"),
        (["--ridge", "-1"], "--ridge must be >= 0"),
        (["--ridge", "nan"], "--ridge must be >= 0"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--out", "2", "--n-train", "5", "--top-k", "11"], "--top-k must be at most n_train·O = 10"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--time-budget", "0"], "--time-budget must be positive"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--model", "resnet9"], "--model must be one of ['cnn', 'fc'] or MODULE:FUNCTION; got 'resnet9'"),
    ],
)
def test_bad_arguments(arguments, message, capsys):
    assert cli.main(["compare", *arguments]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk compare: error: ") and message in line


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("missing", "cannot load 'missing'"),
        ("broken", "returned int; it must return (init_fn, apply_fn, ...)"),
    ],
)
def test_bad_user_model(user_module, function, message, capsys):
    assert cli.main(["compare", "--model", f"{user_module}:{function}", *TINY[2:]]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk compare: error: --model ") and message in line


def test_unknown_module(capsys):
    assert cli.main(["compare", "--model", "no_such_module_here:f", *TINY[2:]]) == 2
    assert "cannot load 'f': No module named 'no_such_module_here'" in capsys.readouterr().err
