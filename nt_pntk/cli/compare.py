"""The N×N approximations of the eNTK side by side: error, kernel regression, spectra and cost.

For a network at initialization (a zoo model, ``--model fc|cnn``, or your own,
``--model MODULE:FUNCTION``) on N = n_train + n_test digits images and O
outputs, each approximation K of ``nt_pntk.approximations`` (pntk, trace,
single_logit, projection with each ``--m``) is computed on all N inputs and
compared with the full eNTK Θ (N, N, O, O), the reference (first row):

* ``rel_err``: ``||Θ - K ⊗ I_O||_F / ||Θ||_F`` on all N inputs;
* ``test_acc``: test accuracy of kernel regression with K ⊗ I_O on centered
  one-hot targets of the labels mod O (ridge relative to the mean diagonal,
  ``nt_pntk.regression.predict``), and ``pred_gap``,
  ``||f_K - f_Θ|| / ||f_Θ||``, the gap to the eNTK's own predictions;
* ``err_lmax``, ``err_cond``, ``err_topk``: relative errors of λ_max, of the
  condition number and (the largest over) the top-k eigenvalues of K ⊗ I_O
  against Θ's, on the training inputs (``nt_pntk.spectra``);
* ``time_s``: median wall time of the jitted kernel (``block_until_ready``)
  over ``runs`` calls after a warm-up (``--repeats``, fewer when the warm-up
  shows they would exceed ``--time-budget``); ``compile_s``: trace, lower and
  compile; ``temp_mib``: XLA's temp bytes (``jit(...).lower(...).compile().memory_analysis()``); with
  ``--rss``, ``rss_mib``: the peak RSS increase of a fresh process computing
  that kernel alone, over its baseline after imports, data and parameters
  (all measured by `nt_pntk._src.measure`).

``MODULE:FUNCTION`` is imported (the current directory is searched first) and
called as ``FUNCTION(outputs=O)``, or ``FUNCTION(outputs=O, width=W)`` when
``--width`` is given (a FUNCTION that takes ``out`` instead of ``outputs``, the
older name, still works, with a warning); it returns ``(init_fn, apply_fn, ...)``
as ``stax.serial`` does (or an object with ``init_fn`` and ``apply_fn``), for NHWC
inputs (N, 8, 8, 1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from nt_pntk._src import deprecations
from nt_pntk._src.experiments import compare as experiment
from nt_pntk.cli import add_timing_arguments, option_name, save_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="fc",
        help="zoo model 'fc' or 'cnn' (3 hidden layers), or MODULE:FUNCTION returning "
        "(init_fn, apply_fn, ...) (default: fc)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"hidden units / channels (default: {experiment.ZOO_WIDTHS} for the zoo; not passed to "
        "FUNCTION)",
    )
    parser.add_argument("--outputs", type=int, default=10, help="number of outputs O (default: 10)")
    deprecations.add_option_alias(parser, "compare", "--out", type=int)
    parser.add_argument("--n-train", type=int, default=200, help="training images (default: 200)")
    parser.add_argument("--n-test", type=int, default=100, help="test images (default: 100)")
    parser.add_argument(
        "--approximations",
        nargs="+",
        default=list(experiment.APPROXIMATIONS),
        choices=experiment.APPROXIMATIONS,
        help="N×N approximations to compare with the full eNTK (default: all)",
    )
    parser.add_argument(
        "--m", type=int, nargs="+", default=None, help="projection: numbers of directions (default: 1 and O)"
    )
    parser.add_argument("--logit", type=int, default=0, help="single_logit: the logit k (default: 0)")
    parser.add_argument(
        "--ridge", type=float, default=1e-3, help="ridge, relative to the mean diagonal (default: 1e-3)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="eigenvalues compared (default: 2·O)")
    parser.add_argument(
        "--implementation",
        type=int,
        default=1,
        choices=(0, 1, 2, 3),
        help="nt.NtkImplementation value (default: 1, JACOBIAN_CONTRACTION)",
    )
    parser.add_argument(
        "--no-vmap",
        action="store_true",
        help="do not pass vmap_axes=0 (for a model that mixes examples, e.g. batch norm)",
    )
    add_timing_arguments(parser, time_budget=10.0)
    parser.add_argument(
        "--rss", action="store_true", help="also measure each kernel's peak RSS in a fresh process (slower)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, parameters, projections")
    parser.add_argument("--csv", type=Path, default=None, help="also save the table as this CSV file")


def run(args: argparse.Namespace) -> int:
    """Prints the comparison table (and saves it with ``--csv``)."""
    import pandas as pd

    setup = setup_from_args(args)
    start = time.perf_counter()
    print(setup.describe(), flush=True)
    rows = experiment.compare(setup, rss=args.rss)
    table = pd.DataFrame(rows).reindex(columns=list(experiment.COLUMNS))
    if not args.rss:
        table = table.drop(columns="rss_mib")
    print(format_table(table))
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s")
    if args.csv is not None:
        save_csv(table, args.csv, "the table")
    return 0


def setup_from_args(args: argparse.Namespace) -> experiment.Setup:
    """The checked `Setup` of the options (errors name the options)."""
    return experiment.Setup.create(
        model=args.model,
        width=args.width,
        outputs=args.outputs,
        n_train=args.n_train,
        n_test=args.n_test,
        approximations=args.approximations,
        m=args.m,
        logit=args.logit,
        ridge=args.ridge,
        top_k=args.top_k,
        implementation=args.implementation,
        vmap=not args.no_vmap,
        repeats=args.repeats,
        time_budget=args.time_budget,
        seed=args.seed,
        names=option_name,
    )


def format_table(table: Any) -> str:
    """The table as text, with a legend."""
    formatters = {
        "rel_err": "{:.4f}".format,
        "test_acc": "{:.3f}".format,
        "pred_gap": "{:.4f}".format,
        "err_lmax": "{:.4f}".format,
        "err_cond": "{:.4f}".format,
        "err_topk": "{:.4f}".format,
        "time_s": "{:.4g}".format,
        "compile_s": "{:.2f}".format,
        "temp_mib": "{:.1f}".format,
        "rss_mib": "{:.0f}".format,
    }
    legend = (
        "rel_err = ||eNTK - K⊗I||/||eNTK||; test_acc, pred_gap = ||f_K - f_eNTK||/||f_eNTK||: kernel "
        "regression;\nerr_lmax, err_cond, err_topk (max over top-k): relative spectral errors on the "
        "training kernel;\njac_rows: Jacobian rows per input; time_s: median; temp_mib: XLA temp bytes"
        + ("; rss_mib: peak RSS increase in a fresh process." if "rss_mib" in table.columns else ".")
    )
    return "\n" + table.to_string(index=False, formatters=formatters, na_rep="-") + "\n\n" + legend
