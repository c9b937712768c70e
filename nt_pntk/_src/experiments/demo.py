"""eNTK against pNTK on the zoo CNN: the measurements of ``nt-pntk demo``.

For each number of outputs O and each NTK implementation, the full eNTK
(``nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)``, (N, N, O, O)) and
the pNTK (``nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)``, (N, N)) are each
measured in a fresh process (`fresh_process`), so that its peak RSS is that
kernel's alone: compile time, median wall time, peak RSS and its increase over
the baseline, XLA's temp bytes. Then the relative errors of pNTK ⊗ I_O and of
NT's trace ⊗ I_O against the eNTK, and the best eNTK against the best pNTK with
the goals. `nt_pntk.cli.demo` parses the options, calls `measure_all` and prints
the report.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nt_pntk._src import checks, measure, numerics
from nt_pntk._src.experiments import fresh_process

KERNELS = ("eNTK", "pNTK")
DEFAULT_OUTPUTS = (10, 100)
DEFAULT_IMPLEMENTATIONS = (1, 2, 3)
DIGITS = 1797
MIB = 2.0**20


def _same(name: str) -> str:
    return name


def check_arguments(
    *,
    n: int,
    outputs: Sequence[int],
    width: int,
    repeats: int,
    time_budget: float,
    max_temp_gib: float | None,
    seed: int,
    names: Callable[[str], str] = _same,
) -> None:
    """Refuses what `measure_all` could not measure, before any work.

    Args:
      names: the name each argument has for the caller, e.g. ``--max-temp-gib`` (the command
        line's), used in the errors.

    Raises:
      UsageError: an argument out of range (a `UsageTypeError` for one of the wrong type); the
        zoo's own checks of the CNN's sizes.
    """
    from nt_pntk._src.experiments import models

    checks.positive_int(names("repeats"), repeats)
    checks.positive(names("time_budget"), time_budget)
    checks.seed(names("seed"), seed)
    checks.int_between(names("n"), n, 1, DIGITS, "the digits")
    if max_temp_gib is not None:  # finite: int(inf * 2**30) would overflow
        checks.positive(names("max_temp_gib"), max_temp_gib)
    for o in outputs:  # the zoo's builder checks the sizes (stax layers only: cheap)
        models.get_model("cnn", width=width, outputs=o)


def temp_budget_bytes(max_temp_gib: float | None) -> int:
    """`max_temp_gib` in bytes; None: half the physical memory."""
    if max_temp_gib is None:
        return measure.physical_memory_bytes() // 2
    return int(max_temp_gib * 2**30)


def measure_all(
    *,
    n: int,
    outputs: Sequence[int],
    width: int,
    implementations: Sequence[int],
    repeats: int,
    time_budget: float,
    max_temp_bytes: int,
    seed: int,
) -> tuple[Any, list[dict[str, float]], list[dict[str, Any]]]:
    """Every (O, kernel, implementation), each in a fresh process (`measure_kernel`).

    Returns:
      ``(table, errors, summaries)``: the measurements (a DataFrame, a row per kernel, with the
      relative difference of each implementation's kernel to the first's), the
      `approximation_errors` and the `summarize` of each O.
    """
    import pandas as pd
    from tqdm import tqdm

    rows, errors = [], []
    specs = [(o, k, i) for o in outputs for k in KERNELS for i in implementations]
    with tempfile.TemporaryDirectory(prefix="nt-pntk-demo-") as tmp:
        references: dict[tuple[int, str], np.ndarray] = {}
        for o, kernel, implementation in tqdm(specs, desc="measurements", unit="kernel", disable=None):
            spec = dict(
                kernel=kernel,
                outputs=o,
                implementation=implementation,
                n=n,
                width=width,
                seed=seed,
                repeats=repeats,
                time_budget=time_budget,
                max_temp_bytes=max_temp_bytes,
                kernel_path=str(Path(tmp) / "kernel.npy"),
            )
            row: dict[str, Any] = {"outputs": o, "kernel": kernel, "implementation": implementation}
            try:
                row.update(fresh_process.run(f"{__name__}:measure_kernel", spec))
            except fresh_process.WorkerFailed as e:
                row["status"] = f"failed (exit {e.returncode}): {e.last_line}"
            # Cross-check: every implementation must give the same kernel.
            row["rel_diff_vs_first_impl"] = math.nan
            if row["status"] == "ok":
                value = np.load(spec["kernel_path"])
                os.remove(spec["kernel_path"])
                if (o, kernel) in references:
                    first = references[(o, kernel)]
                    row["rel_diff_vs_first_impl"] = numerics.relative_error(first, value)
                else:
                    references[(o, kernel)] = value
                    row["rel_diff_vs_first_impl"] = 0.0
            rows.append(row)
        for o in outputs:
            entk = references.pop((o, "eNTK"), None)
            pntk = references.pop((o, "pNTK"), None)
            errors.append(approximation_errors(entk, pntk, o))
    table = pd.DataFrame(rows)
    summaries = [summarize(table[table["outputs"] == o], o) for o in outputs]
    return table, errors, summaries


def measure_kernel(spec: dict[str, Any]) -> dict[str, Any]:
    """Measures one kernel in this process (meant to be a fresh one); see the module docstring.

    Saves the kernel to ``spec["kernel_path"]`` when it ran, and returns the
    measurements as a JSON-able dict.
    """
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    import nt_pntk
    from nt_pntk._src.experiments import data, models

    x = jnp.asarray(data.digits_split(spec["n"], 0, seed=spec["seed"])[0])
    model = models.get_model("cnn", width=spec["width"], outputs=spec["outputs"])
    _, params = model.init_fn(jax.random.PRNGKey(spec["seed"]), x.shape)
    jax.block_until_ready((x, params))
    baseline = measure.peak_rss_bytes()

    if spec["kernel"] == "eNTK":
        kernel_fn = nt.empirical_ntk_fn(
            model.apply_fn, trace_axes=(), vmap_axes=0, implementation=spec["implementation"]
        )
    elif spec["kernel"] == "pNTK":
        kernel_fn = nt_pntk.empirical_pntk_fn(
            model.apply_fn, vmap_axes=0, implementation=spec["implementation"]
        )
    else:
        raise ValueError(f"`kernel` must be one of {KERNELS}; got {spec['kernel']!r}")

    compiled, compile_s = measure.compile_timed(lambda x1, p: kernel_fn(x1, None, p), x, params)
    temp_bytes = measure.temp_bytes(compiled)
    result: dict[str, Any] = dict(
        status="ok",
        time_s=math.nan,
        runs=0,
        compile_s=compile_s,
        peak_rss_mib=math.nan,
        rss_increase_mib=math.nan,
        temp_mib=math.nan if temp_bytes is None else temp_bytes / MIB,
        shape="",
    )
    if temp_bytes is not None and temp_bytes > spec["max_temp_bytes"]:
        result["status"] = f"not run: XLA temp {temp_bytes / 2**30:.1f} GiB > budget"
        return result

    timing, value = measure.time_calls(
        compiled, x, params, repeats=spec["repeats"], time_budget=spec["time_budget"]
    )
    peak = measure.peak_rss_bytes()
    value = np.asarray(value)
    np.save(spec["kernel_path"], value)
    result.update(
        time_s=timing.median_s,
        runs=timing.runs,
        peak_rss_mib=peak / MIB,
        rss_increase_mib=(peak - baseline) / MIB,
        shape="x".join(map(str, value.shape)),
    )
    return result


def approximation_errors(entk: np.ndarray | None, pntk: np.ndarray | None, outputs: int) -> dict[str, float]:
    """Relative Frobenius errors of pNTK ⊗ I_O and of NT's trace ⊗ I_O against the eNTK.

    Args:
      entk: the full eNTK, shape ``(N, N, O, O)`` (NT's layout for ``trace_axes=()``).
      pntk: the pNTK, shape ``(N, N)``.
      outputs: O.

    Returns:
      ``{"outputs", "pntk_rel_error", "trace_rel_error"}``; NaN where a kernel is missing.

    Raises:
      ValueError: an eNTK whose shape is not ``(N, N, O, O)``.
    """
    errors = dict(outputs=outputs, pntk_rel_error=math.nan, trace_rel_error=math.nan)
    if entk is None:
        return errors
    entk = np.asarray(entk, np.float64)
    if entk.ndim != 4 or entk.shape[2:] != (outputs, outputs):
        raise ValueError(f"`entk` must have shape (N, N, {outputs}, {outputs}); got {entk.shape}")
    # NT's trace_axes=(-1,) kernel: (1/O) Σ_o Θ_oo.
    errors["trace_rel_error"] = numerics.entk_relative_error(entk, np.einsum("ijoo->ij", entk) / outputs)
    if pntk is not None:
        errors["pntk_rel_error"] = numerics.entk_relative_error(entk, pntk)
    return errors


def summarize(table: Any, outputs: int) -> dict[str, Any]:
    """Best (fastest) eNTK against best pNTK for one O, with the goals' PASS/FAIL.

    Args:
      table: the measurement rows for this O (a DataFrame with the columns of `measure_kernel`).
      outputs: O.
    """
    best = {}
    for kernel in KERNELS:
        ran = table[(table["kernel"] == kernel) & (table["status"] == "ok")]
        best[kernel] = None if ran.empty else ran.loc[ran["time_s"].idxmin()]
    summary: dict[str, Any] = dict(outputs=outputs, best=best, goals=[])
    e, p = best["eNTK"], best["pNTK"]
    goals = [
        ("speed (time)", "time_s", outputs / 2, "O/2"),
        ("peak RSS (whole process)", "peak_rss_mib", outputs / 4, "O/4"),
        ("peak RSS (increase over baseline)", "rss_increase_mib", outputs / 4, "O/4"),
        ("XLA temp bytes", "temp_mib", outputs, "O"),
    ]
    ran = table[table["status"] == "ok"]
    for name, column, target, target_name in goals:
        ratio = per_metric_ratio = math.nan
        if e is not None and p is not None:
            ratio = _ratio(float(e[column]), float(p[column]))
            # Informational: each kernel's best implementation for this metric alone.
            per_metric_ratio = _ratio(
                ran.loc[ran["kernel"] == "eNTK", column].min(), ran.loc[ran["kernel"] == "pNTK", column].min()
            )
        verdict = "n/a" if math.isnan(ratio) else ("PASS" if ratio >= target else "FAIL")
        summary["goals"].append(
            dict(
                goal=name,
                ratio=ratio,
                per_metric_ratio=per_metric_ratio,
                target=target,
                target_name=target_name,
                verdict=verdict,
            )
        )
    return summary


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den):
        return math.nan
    return num / den if den > 0 else (math.inf if num > 0 else math.nan)
