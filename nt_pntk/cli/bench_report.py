"""Fitted scaling exponents of time and memory in N, O and width from the asv suite's results.

Reads asv's results (``asv_bench/results``, written by ``asv_bench/run.sh``), fits
``log figure = exponent · log x + c`` for every metric (``time``; ``peakmem``, the
process's peak RSS minus the reference process; XLA's ``temp_bytes``, ``total_bytes``,
``flops``, ``bytes_accessed``), model or suite, kernel and implementation along each axis
x in (N, O, width), the other two held fixed, and prints the exponents with the fit
quality R² (two-point fits have none). Expected: the pNTK's exponent in O near 0, the full
eNTK's between 1 and 2.

``--compare BASELINE CONTENDER`` (two commits, hashes or prefixes) prints the ratio
contender / baseline of every figure measured in both, flags those above ``--threshold``
(worse) or below its inverse (better), and the exponents' changes; ``--strict`` makes
the command exit with 1 when a figure got worse, or when no figure could be compared (a gate
that compared nothing has not passed). A results file that is not in asv's format (not
JSON, a figure that is neither a number nor null) is an error naming the file (exit 2).

asv environments are kept apart, as ``asv compare`` does: the same commit measured in two
environments (``asv run -E existing:...`` and a virtualenv, or two Python versions) gives two
sets of figures, fitted and compared each on its own (an ``env`` column says which), never
merged. ``--env NAME`` reports one environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nt_pntk.cli import UsageError

HOW_TO_MAKE_RESULTS = (
    "Run the benchmarks first with `bash asv_bench/run.sh` (about 15 minutes on 2 cores; see "
    "asv_bench/README.md), or pass --results DIR"
)


def _default_results_dir() -> Path:
    """``asv_bench/results`` in the current directory or above it, else beside the package."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "asv_bench" / "asv.conf.json").is_file():
            return directory / "asv_bench" / "results"
        if (directory / "asv.conf.json").is_file() and directory.name == "asv_bench":
            return directory / "results"
    return Path(__file__).resolve().parents[1] / "asv_bench" / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="asv's results directory (default: asv_bench/results of this checkout)",
    )
    parser.add_argument("--machine", default=None, help="only this asv machine's results (default: all)")
    parser.add_argument(
        "--env",
        default=None,
        help="only this asv environment's results (default: every environment, each reported apart)",
    )
    parser.add_argument("--commit", default=None, help="the commit to fit (hash or prefix; default: newest)")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BASELINE", "CONTENDER"),
        default=None,
        help="compare two commits (hashes or prefixes): ratios contender / baseline",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=1.2,
        help="flag a figure whose ratio exceeds this factor as worse, below its inverse as better "
        "(default: 1.2)",
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="only this metric (time, peakmem, temp_bytes, total_bytes, flops, bytes_accessed); repeatable",
    )
    parser.add_argument(
        "--min-points",
        type=int,
        default=3,
        help="fit only sweeps with at least this many usable points (default: 3)",
    )
    parser.add_argument(
        "--plots",
        default="out/bench-report",
        help="directory for the log-log plots (default: out/bench-report); '' for none",
    )
    parser.add_argument(
        "--csv", type=Path, default=None, help="also save the fits (and the comparison) as CSV files here"
    )
    parser.add_argument(
        "--all-rows", action="store_true", help="print every compared figure, not only the flagged ones"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 when --compare flags a figure as worse"
    )


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from nt_pntk._src.bench import asv_results as br

    if not args.threshold > 1:
        raise UsageError(f"--threshold must be > 1; got {args.threshold}")
    results_dir = args.results if args.results is not None else _default_results_dir()
    if args.results is not None and not results_dir.is_dir():
        raise UsageError(f"--results {results_dir} is not a folder; pass asv's results directory")
    if not results_dir.is_dir():  # a fresh checkout: the suite has not run yet
        raise ValueError(f"no asv results yet: {results_dir} does not exist. {HOW_TO_MAKE_RESULTS}")
    try:
        raw = br.load_results(results_dir, machine=args.machine)
    except br.ResultsFormatError as e:
        raise UsageError(f"{e}; fix or remove the file, or rerun the benchmarks") from e
    if raw.empty:
        machine = f" of machine {args.machine!r}" if args.machine else ""
        raise ValueError(f"no asv results{machine} under {results_dir} yet. {HOW_TO_MAKE_RESULTS}")
    if args.env is not None:
        try:
            raw = br.select_environment(raw, args.env)
        except ValueError as e:
            raise UsageError(f"--env {args.env}: {e}") from e
    frame = br.prepare(raw)
    if args.metric:
        known = sorted(set(frame["metric"]))
        frame = frame[frame["metric"].isin(args.metric)]
        if frame.empty:
            raise UsageError(f"--metric {' '.join(args.metric)} matches no results; the results have {known}")
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.max_columns", 30)

    commit = _resolve_commit(br, frame, args.commit, "--commit")
    fits = br.fit_exponents(frame, commit=commit, min_points=args.min_points)
    n_figures = int((frame["commit"] == commit).sum())
    print(f"asv results: {results_dir} — commit {commit[:8]}, {n_figures} figures")
    envs = br.environments(frame)
    several_envs = len(envs) > 1
    if several_envs:
        print(f"asv environments: {', '.join(envs)}; each reported apart (pick one with --env NAME)")
    print("Fitted exponents, log figure = exponent · log x + c along each axis (R² in parentheses;")
    print("peakmem = peak RSS minus the reference process; the other axes held at the values in `held`):\n")
    if fits.empty:
        print("(no sweep with two or more points)")
    else:
        print(br.exponent_table(fits).to_string())
        widest = fits.sort_values("points", kind="stable").drop_duplicates(["suite", "axis"], keep="last")
        sweeps = widest.sort_values(["suite", "axis"])[["suite", "axis", "x_min", "x_max", "points", "held"]]
        print("\nSweeps (the widest fitted of each suite and axis):")
        print(sweeps.to_string(index=False))
    if args.plots:
        written = br.plot_scaling(frame, Path(args.plots), commit=commit, min_points=args.min_points)
        print(f"\n{len(written)} log-log plots in {args.plots}/")
    if args.csv is not None:
        args.csv.mkdir(parents=True, exist_ok=True)
        fits.to_csv(args.csv / f"exponents-{commit[:8]}.csv", index=False)

    worse = 0
    if args.compare:
        baseline, contender = (_resolve_commit(br, frame, c, "--compare") for c in args.compare)
        table = br.compare(frame, baseline, contender, threshold=args.threshold)
        nothing_compared = br.why_nothing_compared(frame, baseline, contender) if table.empty else None
        if nothing_compared:
            print(f"\nNothing compared: {nothing_compared}.")
        worse = int((table["flag"] == "worse").sum())
        better = int((table["flag"] == "better").sum())
        print(
            f"\nComparison {baseline[:8]} (baseline) -> {contender[:8]}: {len(table)} figures in both; "
            f"{worse} worse (ratio > {args.threshold:g}), {better} better (ratio < {1 / args.threshold:.3g})."
        )
        if not table.empty:
            import numpy as np

            summary = table.groupby("metric")["ratio"].agg(
                figures="count", geomean=lambda r: float(np.exp(np.log(r).mean())), min="min", max="max"
            )
            print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
        shown = table if args.all_rows else table[table["flag"] != ""]
        if not shown.empty:
            units = frame.drop_duplicates("benchmark").set_index("benchmark")["unit"]
            printable = pd.DataFrame(
                {
                    **({"env": shown["env"]} if several_envs else {}),
                    "metric": shown["metric"],
                    "suite": shown["suite"],
                    "kernel": shown["kernel"],
                    "impl": shown["implementation"],
                    "point": [br.describe_point(r) for r in shown.itertuples(index=False)],
                    "baseline": [
                        br.format_value(v, units.get(b, ""))
                        for v, b in zip(shown["baseline"], shown["benchmark"], strict=True)
                    ],
                    "contender": [
                        br.format_value(v, units.get(b, ""))
                        for v, b in zip(shown["contender"], shown["benchmark"], strict=True)
                    ],
                    "ratio": shown["ratio"].map(lambda r: f"{r:.3f}"),
                    "flag": shown["flag"],
                }
            )
            print()
            print(printable.to_string(index=False))
        exponents = br.compare_exponents(frame, baseline, contender, min_points=args.min_points)
        moved = exponents[exponents["change"].abs() > 0.25]
        print(f"\nExponents that moved by more than 0.25: {len(moved)} of {len(exponents)}")
        if not moved.empty:
            print(moved.to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
        if args.csv is not None:
            table.to_csv(args.csv / f"compare-{baseline[:8]}-{contender[:8]}.csv", index=False)
        if args.strict and nothing_compared:  # a gate that compared nothing has not passed
            raise ValueError(
                f"--strict: the comparison {baseline[:8]} -> {contender[:8]} compared no figure: "
                f"{nothing_compared}. Rerun the benchmarks of both commits in one environment "
                "(bash asv_bench/run.sh)"
            )
    return 1 if (args.strict and worse) else 0


def _resolve_commit(br, frame, prefix: str | None, option: str) -> str:
    """`bench_report.resolve_commit`, its error (an unknown or ambiguous prefix) blamed on `option`."""
    try:
        return br.resolve_commit(frame, prefix)
    except ValueError as e:
        raise UsageError(f"{option} {prefix}: {e}") from e
