"""Validate the paper's convergence claims: width sweeps, fitted rates, report and plots."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Iterator

from nt_pntk._src import checks, deprecations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="quick",
        help="'quick' (< 5 min on 2 cores), 'paper' (hours), 'ci' (a minute; the test suite's), "
        "or a path to a TOML file (copy one of those to start).",
    )
    parser.add_argument("--output", default="runs/validate-quick", help="output directory; rerun to resume")
    deprecations.add_option_alias(parser, "validate", "--out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG plots (PDFs beside them)")


@contextlib.contextmanager
def _deprecations_on_stderr() -> Iterator[None]:
    """The library's `DeprecationWarning`s (a configuration's or a results directory's former
    names) as one line each on stderr, as the deprecated options' (Python hides them by default)."""

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:
            if issubclass(category, DeprecationWarning):
                print(f"nt-pntk validate: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *args, **kwargs)

        warnings.filterwarnings("always", category=DeprecationWarning, module=r"nt_pntk(\.|$)")
        warnings.showwarning = show
        yield


def run(args: argparse.Namespace) -> int:
    with _deprecations_on_stderr():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from nt_pntk._src.experiments.validation import config, fits, report, sweep

    # A bad configuration raises `config.ConfigError` (exit code 2) before anything is written;
    # a bad `--output` raises `sweep.OutDirError` (exit code 2) before anything is computed.
    # On a finished output directory nothing is measured: the fits and the report are rewritten.
    cfg = config.load(args.config)
    checks.positive_int("--dpi", args.dpi)
    start = time.perf_counter()
    table = sweep.run_sweep(cfg, args.output, progress=not args.no_progress)
    slopes = fits.fit_slopes(
        table,
        bootstrap=cfg.bootstrap,
        band=cfg.slope_band,
        level=cfg.asymptotic_level,
        fit_widths=cfg.fit_widths,
    )
    timing = {"cells": sweep.measured_seconds(cfg, args.output), "run": time.perf_counter() - start}
    path = report.write_report(
        table,
        slopes,
        args.output,
        config_name=cfg.name,
        band=cfg.slope_band,
        level=cfg.asymptotic_level,
        fit_widths=cfg.fit_widths,
        bootstrap=cfg.bootstrap,
        dpi=args.dpi,
        timing=timing,
    )
    print(report.slope_table(slopes))
    print(f"\n{len(table)} rows in {time.perf_counter() - start:.0f} s; report: {path}")
    return 0
