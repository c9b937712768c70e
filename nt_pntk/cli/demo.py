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
import os
import platform
import time
from pathlib import Path
from typing import Any

from nt_pntk._src import deprecations, measure
from nt_pntk._src.experiments import demo as experiment
from nt_pntk.cli import add_timing_arguments, option_name, save_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=64, help="number of digits images N (default: 64)")
    parser.add_argument(
        "--outputs",
        type=int,
        nargs="+",
        default=list(experiment.DEFAULT_OUTPUTS),
        help="numbers of outputs O (default: 10 100)",
    )
    deprecations.add_option_alias(parser, "demo", "--outs", type=int, nargs="+")
    parser.add_argument("--width", type=int, default=32, help="CNN channels (default: 32)")
    parser.add_argument(
        "--implementations",
        type=int,
        nargs="+",
        default=list(experiment.DEFAULT_IMPLEMENTATIONS),
        choices=experiment.DEFAULT_IMPLEMENTATIONS,
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
    experiment.check_arguments(
        n=args.n,
        outputs=args.outputs,
        width=args.width,
        repeats=args.repeats,
        time_budget=args.time_budget,
        max_temp_gib=args.max_temp_gib,
        seed=args.seed,
        names=option_name,
    )
    memory = measure.physical_memory_bytes()
    max_temp_bytes = experiment.temp_budget_bytes(args.max_temp_gib)
    version = measure.installed_version
    print(
        f"eNTK vs pNTK: CNN (3 conv layers, width {args.width}) at init, N={args.n} digits images, "
        f"O in {args.outputs}, implementations {args.implementations}; each measurement in its own "
        f"process; kernels with XLA temp > {max_temp_bytes / 2**30:.1f} GiB are compiled but not run.\n"
        f"JAX {version('jax')}, jaxlib {version('jaxlib')}, neural-tangents "
        f"{version('neural-tangents')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{memory / 2**30:.0f} GiB memory.",
        flush=True,
    )
    start = time.perf_counter()
    table, errors, summaries = experiment.measure_all(
        n=args.n,
        outputs=args.outputs,
        width=args.width,
        implementations=args.implementations,
        repeats=args.repeats,
        time_budget=args.time_budget,
        max_temp_bytes=max_temp_bytes,
        seed=args.seed,
    )
    print(format_report(table, errors, summaries, args.outputs))
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s", flush=True)
    if args.csv is not None:
        save_csv(table, args.csv, "the measurements")
    return 0


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
