"""`nt-pntk compare` with tiny settings: its errors against kernels computed here in float64, its
peak-RSS subprocess, its argument errors; and the measurements it reports (`nt_pntk._src.measure`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from reference import entk_from_jacobians, kernel_from_entk, kronecker_error

import nt_pntk
from nt_pntk import cli
from nt_pntk._src import measure
from nt_pntk._src.experiments import compare as _compare
from nt_pntk.cli import compare as _compare_cli

O = 3  # noqa: E741  (the number of outputs, as in the paper)
LOGIT = 1  # the single_logit approximation's logit
TINY = ["--width", "8", "--outputs", str(O), "--n-train", "12", "--n-test", "6", "--repeats", "1"]
SPECTRAL = ["err_lmax", "err_cond", "err_topk"]
MIB = 2**20


def reference_entk(argv: list[str]) -> np.ndarray:
    """The eNTK (N, N, O, O) of compare's network, parameters and inputs, from `jax.jacrev` in float64."""
    setup = _compare_cli.setup_from_args(cli.build_parser("compare").parse_args(["compare", *argv]))
    apply_fn, params, x_all, _, _ = _compare._inputs(setup)  # the inputs; the kernels are computed here
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: np.asarray(a, np.float64), params))
        per_example = jax.jacrev(lambda p, xi: apply_fn(unravel(p), xi[None])[0])
        jacobians = jax.jit(jax.vmap(per_example, in_axes=(None, 0)))(flat, np.asarray(x_all, np.float64))
        j = np.asarray(jacobians)  # (N, O, P)
    finally:
        jax.config.update("jax_enable_x64", previous)
    return entk_from_jacobians(j)


@pytest.mark.slow
def test_reported_errors_match_kernels_computed_here(tmp_path, capsys):
    """About 8 s on 2 cores: the digits, four kernels and the reference compiled."""
    csv = tmp_path / "out" / "compare.csv"
    argv = ["--model", "fc", *TINY, "--approximations", "pntk", "trace", "single_logit"]
    assert cli.main(["compare", *argv, "--logit", str(LOGIT), "--csv", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert list(table["approximation"]) == ["entk", "pntk", "trace", f"single_logit (logit={LOGIT})"]
    assert list(table["jac_rows"]) == [O, 1, O, 1]
    assert list(table.columns) == [c for c in _compare.COLUMNS if c != "rss_mib"]

    entk = reference_entk(argv)
    expected = [
        0.0,
        kronecker_error(entk, kernel_from_entk(entk, "pntk")),  # pNTK: (1/O) Σ_{o,o'} Θ_oo'
        kronecker_error(entk, kernel_from_entk(entk, "trace")),  # NT's trace: (1/O) Σ_o Θ_oo
        kronecker_error(entk, kernel_from_entk(entk, "single_logit", logit=LOGIT)),  # Θ_kk
    ]
    np.testing.assert_allclose(table["rel_err"], expected, rtol=1e-4, atol=1e-6)
    assert expected[2] < expected[1]  # the trace is the best K ⊗ I_O: the check can tell them apart

    reference = table.iloc[0]
    assert reference["pred_gap"] == 0 and all(reference[c] == 0 for c in SPECTRAL)
    assert np.all(table["pred_gap"].iloc[1:] > 0)
    assert np.all((table["test_acc"] >= 0) & (table["test_acc"] <= 1))
    assert np.all(table[["time_s", "compile_s", "temp_mib"]] > 0) and np.all(table["runs"] == 1)
    printed = capsys.readouterr().out
    assert "approximation" in printed and f"single_logit (logit={LOGIT})" in printed and str(csv) in printed


USER_MODULE = """
from neural_tangents import stax


def build(outputs):
    return stax.serial(stax.Flatten(), stax.Dense(8), stax.Relu(), stax.Dense(outputs))


def build_with_the_former_name(out):
    return stax.serial(stax.Flatten(), stax.Dense(8), stax.Relu(), stax.Dense(out))


def broken(outputs):
    return 42


def without_outputs(width):
    return stax.serial(stax.Flatten(), stax.Dense(width))


def raises(outputs):
    raise RuntimeError("the builder broke")
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `user_nets` in the current directory, as a user would write it."""
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # undo the current directory's insertion
    sys.modules.pop("user_nets", None)  # another test's module of that name
    yield "user_nets"
    sys.modules.pop("user_nets", None)


@pytest.mark.slow
def test_user_model_in_a_fresh_process(user_module):
    """About 5 s: a fresh interpreter imports JAX, loads the digits and compiles the kernel."""
    # The peak-RSS worker loads MODULE:FUNCTION from the current directory in a new process.
    args = cli.build_parser("compare").parse_args(["compare", "--model", f"{user_module}:build", *TINY[2:]])
    setup = _compare_cli.setup_from_args(args)
    assert setup.width is None  # no --width: FUNCTION is called as FUNCTION(outputs=O)
    rss_mib = _compare.peak_rss_in_subprocess(setup, "single_logit", {"logit": -1})
    # Compiling and running a kernel takes memory (XLA's compiler alone takes megabytes); a tiny
    # network's cannot take a gigabyte.
    assert 0 < rss_mib < 1024


@pytest.mark.parametrize("function", ["build", "build_with_the_former_name"])
def test_user_model_is_loaded(user_module, capsys, function):
    init_fn, apply_fn = _compare.load_model(f"{user_module}:{function}", None, O)
    key = jax.ShapeDtypeStruct((2,), np.uint32)  # shapes only: nothing is compiled
    params = jax.eval_shape(lambda k: init_fn(k, (-1, 8, 8, 1))[1], key)
    assert jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((5, 8, 8, 1), np.float32)).shape == (5, O)
    warned = capsys.readouterr().err
    if function == "build":
        assert warned == ""
    else:
        assert warned == (
            f"nt-pntk compare: warning: --model {user_module}:{function}: calling FUNCTION(out=O) is "
            "deprecated; name its parameter `outputs`\n"
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--outputs", "0"], "`--outputs` must be an int >= 1; got --outputs=0"),
        (["--width", "0"], "`--width` must be an int >= 1; got --width=0"),
        (["--width", str(2**31)], "`width` must be an int in [1, 2,147,483,647]"),  # the zoo's check
        (["--n-train", "0"], "`--n-train` must be an int >= 1; got --n-train=0"),
        (["--n-test", "0"], "`--n-test` must be an int >= 1; got --n-test=0"),
        (
            ["--n-train", "1700", "--n-test", "98"],
            "`--n-train + --n-test` must be an int in [2, 1,797] (the digits); got --n-train + --n-test=1798",
        ),
        (["--m", "2", "0"], "`--m` must be an int >= 1; got --m=0"),
        (
            ["--outputs", "3", "--logit", "3"],
            "`--logit` must be an int in [-3, 2] (an index of the O=3 logits",
        ),
        (["--ridge", "-1"], "`--ridge` must be >= 0; got --ridge=-1.0"),
        (["--ridge", "nan"], "`--ridge` must be finite; got --ridge=nan"),
        (["--top-k", "0"], "`--top-k` must be at least 1"),
        (
            ["--outputs", "2", "--n-train", "5", "--top-k", "11"],
            "`--top-k` must be at least 1 and at most 10 (the number of eigenvalues of the training eNTK, "
            "n_train·O); got --top-k=11",
        ),
        (["--repeats", "0"], "`--repeats` must be an int >= 1; got --repeats=0"),
        (["--time-budget", "0"], "`--time-budget` must be > 0; got --time-budget=0.0"),
        (["--time-budget", "inf"], "`--time-budget` must be finite; got --time-budget=inf"),
        (["--seed", "-1"], "`--seed` must be an int in [0, 2**32)"),
        (
            ["--seed", str(2**70)],
            f"`--seed` must be an int in [0, 2**32) (a seed of JAX's and NumPy's random generators, "
            f"which ignore higher bits or refuse negative seeds); got --seed={2**70}",
        ),
        (["--model", "resnet9"], "--model must be one of ['cnn', 'fc'] or MODULE:FUNCTION; got 'resnet9'"),
    ],
)
def test_bad_arguments(arguments, message, capsys):
    assert cli.main(["compare", *arguments]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk compare: error: ") and message in line


@pytest.mark.parametrize(
    ("function", "code", "facts"),
    [
        ("missing", 2, ["has no attribute 'missing' named in --model 'user_nets:missing'"]),
        ("broken", 2, ["--model 'user_nets:broken' returned int; it must return (init_fn, apply_fn, ...)"]),
        # It used to be a raw TypeError traceback: "without_outputs() got an unexpected keyword argument".
        (
            "without_outputs",
            2,
            ["--model user_nets:without_outputs: without_outputs(width) must take the number of outputs"],
        ),
        # The user's own code failing is a failure (1), not a usage error, in one line naming it.
        (
            "raises",
            1,
            [
                "--model user_nets:raises: calling raises(outputs=3) failed with RuntimeError: the builder "
                "broke (",
                "user_nets.py, line ",
            ],
        ),
    ],
)
def test_bad_user_model(user_module, function, code, facts, capsys):
    assert cli.main(["compare", "--model", f"{user_module}:{function}", *TINY[2:]]) == code
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk compare: error: ")
    for fact in facts:
        assert fact in line


def test_user_model_without_width_when_width_is_given(user_module, capsys):
    assert cli.main(["compare", "--model", f"{user_module}:build", "--width", "8", *TINY[2:]]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "build(outputs) takes no `width`, but --width was given" in line


def test_user_module_that_raises_on_import(user_module, capsys):
    Path("exploding.py").write_text("raise RuntimeError('no GPU here')\n")  # in the current folder
    sys.modules.pop("exploding", None)
    assert cli.main(["compare", "--model", "exploding:build", *TINY[2:]]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "nt-pntk compare: error: importing module 'exploding' named in --model 'exploding:build' failed "
        "with RuntimeError: no GPU here ("
    )


def test_unknown_module(capsys):
    assert cli.main(["compare", "--model", "no_such_module_here:f", *TINY[2:]]) == 2
    assert (
        "cannot import module 'no_such_module_here' named in --model 'no_such_module_here:f'"
        in capsys.readouterr().err
    )


# --- The measurements compare (and demo, figure1) report: `nt_pntk._src.measure`. ---


def test_peak_rss_sees_an_allocation():
    """In a fresh interpreter (whose peak is its current size): 128 MiB written raise the peak by as much."""
    code = textwrap.dedent(
        """
        import os
        import numpy as np
        from nt_pntk._src import measure
        before = measure.peak_rss_bytes()
        block = np.ones(128 * 2**20, np.uint8)  # written: resident
        after = measure.peak_rss_bytes()
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        print(before, after, resident)
        """
    )
    checkout = str(Path(nt_pntk.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    before, after, resident = map(int, proc.stdout.split())
    assert 120 * MIB <= after - before <= 160 * MIB
    assert after >= resident  # a peak is never below the current size


def test_physical_memory_is_the_systems():
    with open("/proc/meminfo") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    assert measure.physical_memory_bytes() == pytest.approx(total_kib * 1024, rel=0.01)


def test_timing_and_xla_figures_of_a_known_program():
    x = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 1000
    y = np.ones((32, 16), np.float32)

    def program(a, b):
        return (a @ b).sum()

    timing, value = measure.time_compiled(program, x, y, repeats=3, time_budget=60.0)
    assert float(value) == pytest.approx(float(np.sum(x.astype(np.float64) @ y)), rel=1e-6)
    assert timing.runs == 3 and timing.median_s > 0 and timing.compile_s > 0 and timing.warmup_s > 0
    compiled, compile_s = measure.compile_timed(program, x, y)
    assert compile_s > 0
    # A budget shorter than any call: one timed call after the warm-up, never none.
    assert measure.time_calls(compiled, x, y, repeats=5, time_budget=1e-12)[0].runs == 1
    # Arguments and output are known: the peak holds them (plus XLA's temporaries).
    assert measure.peak_bytes(compiled) >= x.nbytes + y.nbytes + 4
    assert measure.temp_bytes(compiled) >= 0
    # A (64×32)·(32×16) product is 2·64·32·16 flops (XLA counts multiply and add); the sum adds fewer.
    flops = measure.cost_analysis(compiled)["flops"]
    assert 2 * 64 * 32 * 16 <= flops <= 2 * 64 * 32 * 16 + 2 * 64 * 16


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"repeats": 0}, ValueError, "`repeats` must be an int >= 1"),
        ({"repeats": 1.5}, TypeError, "`repeats` must be an int"),
        ({"time_budget": 0.0}, ValueError, "`time_budget` must be > 0"),
        ({"time_budget": float("nan")}, ValueError, "`time_budget` must be finite"),
    ],
)
def test_timing_refuses_bad_counts(options, error, message):
    with pytest.raises(error, match=message):
        measure.time_calls(lambda: None, **options)
