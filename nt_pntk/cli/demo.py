"""Compare the full eNTK and the pNTK of a CNN on digits: time, memory and approximation error.

For each number of outputs O and each NTK implementation (1, 2, 3) this measures,
on the zoo CNN at init and N digits images (8x8x1):

* the full eNTK, ``nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)``,
  an (N, N, O, O) array (NO x NO);
* the pNTK, ``nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)``, an (N, N) array.

Each (kernel, O, implementation) runs in a fresh subprocess that computes only
that kernel, so its peak RSS is that kernel's alone. Reported: compile time
(trace + lower + compile), the median wall time of the compiled kernel over
``--repeats`` calls after one warm-up call (fewer when one call takes longer than
``--time-budget`` allows), the process's peak RSS and its increase over the
baseline after imports, data and parameters, and XLA's temp bytes
(``compiled.memory_analysis().temp_size_in_bytes``), all by `nt_pntk._src.measure`.
A kernel whose temp bytes exceed ``--max-temp-gib`` is compiled but not run.

Then the relative Frobenius errors ``||eNTK - pNTK (x) I_O|| / ||eNTK||`` and, for
comparison, of NT's trace approximation ``(1/O) sum_o eNTK_oo`` (NT's default
``trace_axes=(-1,)``), and a summary of best eNTK against best pNTK (best = the
fastest implementation) with the goals pNTK >= O/2 times faster, >= O/4 times
less peak RSS and >= O times fewer XLA temp bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nt_pntk._src import checks, deprecations, measure, numerics
from nt_pntk.cli import (
    UsageError,
    add_timing_arguments,
    check,
    check_timing_arguments,
    installed_version,
    save_csv,
    zoo_model,
)

KERNELS = ("eNTK", "pNTK")
DEFAULT_OUTPUTS = (10, 100)
DEFAULT_IMPLEMENTATIONS = (1, 2, 3)
MIB = 2.0**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=64, help="number of digits images N (default: 64)")
    parser.add_argument(
        "--outputs",
        type=int,
        nargs="+",
        default=list(DEFAULT_OUTPUTS),
        help="numbers of outputs O (default: 10 100)",
    )
    deprecations.add_option_alias(parser, "demo", "--outs", type=int, nargs="+")
    parser.add_argument("--width", type=int, default=32, help="CNN channels (default: 32)")
    parser.add_argument(
        "--implementations",
        type=int,
        nargs="+",
        default=list(DEFAULT_IMPLEMENTATIONS),
        choices=DEFAULT_IMPLEMENTATIONS,
        help="nt.NtkImplementation values to measure (default: 1 2 3)",
    )
    add_timing_arguments(parser, time_budget=60.0)
    parser.add_argument(
        "--max-temp-gib",
        type=float,
        default=None,
        help="do not run a kernel whose XLA temp bytes exceed this many GiB "
        "(default: half the physical memory)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data subset and parameters")
    parser.add_argument("--csv", type=Path, default=None, help="also save the measurements as this CSV file")
    deprecations.add_option_alias(parser, "demo", "--out", type=Path)


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm import tqdm

    _validate(args)
    memory = measure.physical_memory_bytes()
    max_temp_bytes = int(args.max_temp_gib * 2**30) if args.max_temp_gib is not None else memory // 2
    print(
        f"eNTK vs pNTK: CNN (3 conv layers, width {args.width}) at init, N={args.n} digits images, "
        f"O in {args.outputs}, implementations {args.implementations}; each measurement in its own "
        f"process; kernels with XLA temp > {max_temp_bytes / 2**30:.1f} GiB are compiled but not run.\n"
        f"JAX {installed_version('jax')}, jaxlib {installed_version('jaxlib')}, neural-tangents "
        f"{installed_version('neural-tangents')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{memory / 2**30:.0f} GiB memory.",
        flush=True,
    )
    start = time.perf_counter()
    rows, errors = [], []
    specs = [(o, k, i) for o in args.outputs for k in KERNELS for i in args.implementations]
    with tempfile.TemporaryDirectory(prefix="nt-pntk-demo-") as tmp:
        references: dict[tuple[int, str], np.ndarray] = {}
        for outputs, kernel, implementation in tqdm(specs, desc="measurements", unit="kernel", disable=None):
            spec = dict(
                kernel=kernel,
                outputs=outputs,
                implementation=implementation,
                n=args.n,
                width=args.width,
                seed=args.seed,
                repeats=args.repeats,
                time_budget=args.time_budget,
                max_temp_bytes=max_temp_bytes,
                kernel_path=str(Path(tmp) / "kernel.npy"),
                result_path=str(Path(tmp) / "result.json"),
            )
            row = _run_worker(spec)
            # Cross-check: every implementation must give the same kernel.
            row["rel_diff_vs_first_impl"] = math.nan
            if row["status"] == "ok":
                value = np.load(spec["kernel_path"])
                os.remove(spec["kernel_path"])
                if (outputs, kernel) in references:
                    first = references[(outputs, kernel)]
                    row["rel_diff_vs_first_impl"] = numerics.relative_error(first, value)
                else:
                    references[(outputs, kernel)] = value
                    row["rel_diff_vs_first_impl"] = 0.0
            rows.append(row)
        for outputs in args.outputs:
            entk = references.pop((outputs, "eNTK"), None)
            pntk = references.pop((outputs, "pNTK"), None)
            errors.append(approximation_errors(entk, pntk, outputs))
    table = pd.DataFrame(rows)
    summaries = [summarize(table[table["outputs"] == o], o) for o in args.outputs]
    print(format_report(table, errors, summaries, args.outputs))
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s", flush=True)
    if args.csv is not None:
        save_csv(table, args.csv, "the measurements")
    return 0


def _validate(args: argparse.Namespace) -> None:
    check_timing_arguments(args)
    check(checks.seed, "--seed", args.seed)
    if not 1 <= args.n <= 1797:
        raise UsageError(f"--n must be between 1 and 1797 (the digits); got {args.n}")
    if args.max_temp_gib is not None:  # finite: int(inf * 2**30) would overflow
        check(checks.positive, "--max-temp-gib", args.max_temp_gib)
    for outputs in args.outputs:  # the zoo's builder checks the sizes (stax layers only: cheap)
        zoo_model("cnn", width=args.width, outputs=outputs)


# --- The worker: one kernel, one O, one implementation, in its own process. ---


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs `measure_kernel(spec)` in a fresh Python process; returns its result row."""
    row = {k: spec[k] for k in ("outputs", "kernel", "implementation")}
    command = [sys.executable, "-m", "nt_pntk.cli.demo", "--worker", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not Path(spec["result_path"]).exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {**row, "status": f"failed (exit {proc.returncode}): {tail[0][:200]}"}
    result = json.loads(Path(spec["result_path"]).read_text())
    os.remove(spec["result_path"])
    return {**row, **result}


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


# --- Errors, summary and report. ---


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


def format_report(table: Any, errors: list[dict], summaries: list[dict], outputs: list[int]) -> str:
    """The printed report: one table per O, the errors, and the summary with the goals."""
    columns = {
        "kernel": "kernel",
        "implementation": "impl",
        "time_s": "time [s]",
        "runs": "runs",
        "compile_s": "compile [s]",
        "peak_rss_mib": "peak RSS [MiB]",
        "rss_increase_mib": "RSS increase [MiB]",
        "temp_mib": "XLA temp [MiB]",
        "shape": "shape",
        "rel_diff_vs_first_impl": "rel. diff vs first impl",
        "status": "status",
    }
    formatters = {
        "time [s]": "{:.4g}".format,
        "compile [s]": "{:.2f}".format,
        "peak RSS [MiB]": "{:.0f}".format,
        "RSS increase [MiB]": "{:.0f}".format,
        "XLA temp [MiB]": "{:.1f}".format,
        "rel. diff vs first impl": "{:.1e}".format,
    }
    lines = []
    for o, err, summary in zip(outputs, errors, summaries, strict=True):
        part = table[table["outputs"] == o].reindex(columns=list(columns)).rename(columns=columns)
        lines += ["", f"=== O = {o} ===", part.to_string(index=False, formatters=formatters, na_rep="-")]
        lines += [
            "",
            f"relative Frobenius error vs the eNTK:  pNTK ⊗ I_O: {err['pntk_rel_error']:.4f}   "
            f"NT's trace (trace_axes=(-1,)) ⊗ I_O: {err['trace_rel_error']:.4f}",
        ]
        e, p = summary["best"]["eNTK"], summary["best"]["pNTK"]
        if e is None or p is None:
            lines.append("summary: n/a (no eNTK or no pNTK measurement ran)")
            continue
        lines.append(
            f"best eNTK: implementation {e['implementation']} ({e['time_s']:.4g} s); "
            f"best pNTK: implementation {p['implementation']} ({p['time_s']:.4g} s)"
        )
        lines.append(
            f"  {'eNTK / pNTK':<34} {'fastest impls':>13} {'goal':>12}  verdict   (best impl per metric)"
        )
        for goal in summary["goals"]:
            target = f">= {goal['target']:g}"
            lines.append(
                f"  {goal['goal']:<34} {goal['ratio']:13.1f} {target:>12}  {goal['verdict']:<7}   "
                f"({goal['per_metric_ratio']:.1f})"
            )
    return "\n".join(lines)


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m nt_pntk.cli.demo")
    parser.add_argument("--worker", required=True, help="JSON spec of one measurement")
    spec = json.loads(parser.parse_args(argv).worker)
    result = measure_kernel(spec)
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
