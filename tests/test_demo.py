"""`nt-pntk demo` with tiny settings: the kernels it measures against per-example Jacobians in float64,
its error formulas, its summary, and its argument errors."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from reference import entk_from_jacobians, kernel_from_entk, kronecker_error

from nt_pntk import cli
from nt_pntk._src.experiments import demo as _demo
from nt_pntk.experiments import data, models

N, O, WIDTH = 4, 3, 4  # noqa: E741  (O: the number of outputs, as in the paper)


def _spec(tmp_path, kernel: str, **changes) -> dict:
    spec = dict(
        kernel=kernel,
        outputs=O,
        implementation=1,
        n=N,
        width=WIDTH,
        seed=0,
        repeats=2,
        time_budget=10.0,
        max_temp_bytes=2**30,
        kernel_path=str(tmp_path / f"{kernel}.npy"),
        result_path=str(tmp_path / f"{kernel}.json"),
    )
    return {**spec, **changes}


def reference_kernels(n: int, outputs: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo's eNTK (N, N, O, O) and pNTK (N, N) in float64 from per-example derivatives.

    The same CNN, parameters and images as `measure_kernel` (float32 parameters from the same
    key), then in float64: the eNTK from the Jacobians ``jax.vmap(jax.jacrev(f))``, the pNTK
    from the gradients of ``Σ_o f_o / √O``, ``jax.vmap(jax.grad(...))`` (not from the eNTK).
    """
    x = data.digits_split(n, 0, seed=seed)[0]
    model = models.get_model("cnn", width=width, outputs=outputs)
    _, params = model.init_fn(jax.random.PRNGKey(seed), x.shape)
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: np.asarray(a, np.float64), params))
        x64 = np.asarray(x, np.float64)

        def logits(p, xi):
            return model.apply_fn(unravel(p), xi[None])[0]

        def derivatives(p, x):  # one compiled program: eager dispatch of each op is far slower
            jacobians = jax.vmap(jax.jacrev(logits), in_axes=(None, 0))(p, x)  # (N, O, P)
            summed = jax.vmap(
                jax.grad(lambda p, xi: logits(p, xi).sum() / np.sqrt(outputs)), in_axes=(None, 0)
            )
            return jacobians, summed(p, x)  # (N, P)

        jacobians, gradients = map(np.asarray, jax.jit(derivatives)(flat, x64))
    finally:
        jax.config.update("jax_enable_x64", previous)
    return entk_from_jacobians(jacobians), gradients @ gradients.T


@pytest.mark.slow
def test_measured_kernels_match_an_independent_reference(tmp_path):
    """About 10 s on 2 cores: the CNN's first (eager) init and four compilations."""
    entk, pntk = reference_kernels(N, O, WIDTH, seed=0)
    for kernel, expected in (("eNTK", entk), ("pNTK", pntk)):
        spec = _spec(tmp_path, kernel)
        result = _demo.measure_kernel(spec)
        value = np.load(spec["kernel_path"])
        assert value.dtype == np.float32 and result["shape"] == "x".join(map(str, expected.shape))
        np.testing.assert_allclose(value, expected, rtol=0, atol=3e-5 * np.abs(expected).max())
        assert result["status"] == "ok" and result["runs"] == 2
        assert result["time_s"] > 0 and result["compile_s"] > 0
        assert result["rss_increase_mib"] >= 0 and result["peak_rss_mib"] >= result["rss_increase_mib"]
        assert result["temp_mib"] >= 0  # the CPU backend reports XLA's memory analysis
    # The pNTK is the eNTK's (1/O) Σ_{o,o'} blocks: the two references agree with each other too.
    np.testing.assert_allclose(kernel_from_entk(entk, "pntk"), pntk, rtol=1e-10, atol=0)


@pytest.mark.slow
def test_a_kernel_over_the_temp_budget_is_not_run(tmp_path):
    """About 5 s on 2 cores: the CNN's first init and the eNTK's compilation."""
    spec = _spec(tmp_path, "eNTK", max_temp_bytes=0)
    result = _demo.measure_kernel(spec)
    assert result["temp_mib"] > 0
    assert result["status"].startswith("not run: XLA temp")
    assert result["runs"] == 0 and math.isnan(result["time_s"])
    assert not (tmp_path / "eNTK.npy").exists()


def _random_entk(rng, n: int, outputs: int) -> np.ndarray:
    """J Jᵀ of random per-example Jacobians (n, outputs, 7): an eNTK-shaped Gram array."""
    j = rng.normal(size=(n, outputs, 7))
    return entk_from_jacobians(j)


def test_approximation_errors_match_definitions():
    rng = np.random.default_rng(0)
    entk = _random_entk(rng, 5, O)
    pntk = rng.normal(size=(5, 5))
    errors = _demo.approximation_errors(entk, pntk, O)
    # Written out with the NO×NO matrices: rows (example, output), K ⊗ I_O by np.kron.
    trace = kernel_from_entk(entk, "trace")
    for kernel, key in ((pntk, "pntk_rel_error"), (trace, "trace_rel_error")):
        assert errors[key] == pytest.approx(kronecker_error(entk, kernel), rel=1e-12)
    # The trace is the Frobenius projection of the eNTK onto K ⊗ I_O: never worse than any other K.
    assert 0 < errors["trace_rel_error"] < errors["pntk_rel_error"]


def test_approximation_errors_are_zero_for_an_exact_kronecker_product_and_nan_without_entk():
    k = np.random.default_rng(0).normal(size=(5, 5))
    entk = k[:, :, None, None] * np.eye(O)
    errors = _demo.approximation_errors(entk, k, O)
    assert errors["pntk_rel_error"] == pytest.approx(0, abs=1e-12)
    assert errors["trace_rel_error"] == pytest.approx(0, abs=1e-12)
    assert math.isnan(_demo.approximation_errors(None, k, O)["pntk_rel_error"])
    assert math.isnan(_demo.approximation_errors(entk, None, O)["pntk_rel_error"])
    with pytest.raises(ValueError, match=r"`entk` must have shape \(N, N, 4, 4\)"):
        _demo.approximation_errors(entk, k, 4)


def test_summarize_compares_the_fastest_implementations():
    rows = [
        # kernel, implementation, time, peak RSS, RSS increase, temp
        ("eNTK", 1, 2.0, 1000.0, 600.0, 500.0),
        ("eNTK", 3, 1.0, 3000.0, 2600.0, 2000.0),  # fastest eNTK
        ("pNTK", 1, 0.1, 450.0, 50.0, 10.0),  # fastest pNTK
        ("pNTK", 3, 0.2, 420.0, 20.0, 30.0),
    ]
    table = pd.DataFrame(
        [
            dict(
                outputs=10,
                kernel=k,
                implementation=i,
                status="ok",
                time_s=t,
                peak_rss_mib=r,
                rss_increase_mib=d,
                temp_mib=m,
            )
            for k, i, t, r, d, m in rows
        ]
        + [dict(outputs=10, kernel="eNTK", implementation=2, status="not run", time_s=math.nan)]
    )
    summary = _demo.summarize(table, 10)
    assert summary["best"]["eNTK"]["implementation"] == 3
    assert summary["best"]["pNTK"]["implementation"] == 1
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["speed (time)"]["ratio"] == pytest.approx(10.0)
    assert goals["speed (time)"]["verdict"] == "PASS"  # >= O/2 = 5
    assert goals["peak RSS (whole process)"]["verdict"] == "PASS"  # 3000/450 >= 2.5
    assert goals["peak RSS (increase over baseline)"]["ratio"] == pytest.approx(52.0)
    assert goals["XLA temp bytes"]["ratio"] == pytest.approx(200.0)
    assert goals["XLA temp bytes"]["per_metric_ratio"] == pytest.approx(50.0)  # 500 / 10
    slow = table.assign(time_s=table["time_s"].where(table["kernel"] == "eNTK", 1.0))
    assert {g["goal"]: g for g in _demo.summarize(slow, 10)["goals"]}["speed (time)"]["verdict"] == "FAIL"


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, capsys):
    """Two kernels in fresh processes; the saved table and the printed errors, recomputed."""
    csv = tmp_path / "demo.csv"
    argv = ["demo", "--n", str(N), "--outputs", str(O), "--width", str(WIDTH)]
    argv += ["--implementations", "1", "--repeats", "1", "--csv", str(csv)]
    assert cli.main(argv) == 0
    report = capsys.readouterr().out

    table = pd.read_csv(csv)
    assert list(table["kernel"]) == ["eNTK", "pNTK"]
    assert (table["status"] == "ok").all(), table["status"].tolist()
    assert list(table["shape"]) == [f"{N}x{N}x{O}x{O}", f"{N}x{N}"]  # NO×NO and N×N
    assert (table["time_s"] > 0).all() and (table["peak_rss_mib"] > 0).all()

    assert f"=== O = {O} ===" in report
    match = re.search(r"pNTK ⊗ I_O: ([0-9.]+)\s+NT's trace \(trace_axes=\(-1,\)\) ⊗ I_O: ([0-9.]+)", report)
    assert match, report
    entk, pntk = reference_kernels(N, O, WIDTH, seed=0)
    trace = kernel_from_entk(entk, "trace")
    for printed, kernel in zip(map(float, match.groups()), (pntk, trace), strict=True):
        assert printed == pytest.approx(kronecker_error(entk, kernel), abs=1e-4)  # printed with 4 decimals
    verdicts = re.findall(r"\b(PASS|FAIL)\b", report)
    assert len(verdicts) == 4, report


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "`--n` must be an int in [1, 1,797] (the digits); got --n=0"),
        (["--outputs", "3", "0"], "`outputs` must be an int in [1, 2,147,483,647] (the network's outputs O)"),
        (["--width", str(2**31)], "`width` must be an int in [1, 2,147,483,647]"),  # the zoo's own check
        (["--time-budget", "inf"], "`--time-budget` must be finite; got --time-budget=inf"),
        (["--max-temp-gib", "0"], "`--max-temp-gib` must be > 0; got --max-temp-gib=0.0."),
        # int(inf * 2**30) raised OverflowError.
        (["--max-temp-gib", "inf"], "`--max-temp-gib` must be finite; got --max-temp-gib=inf."),
    ],
)
def test_demo_rejects_bad_arguments(capsys, argv, message):
    assert cli.main(["demo", *argv]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nt-pntk demo: error: ") and message in line
