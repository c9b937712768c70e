"""The XLA regression gate: XLA's FLOPs and bytes of every benchmarked kernel against a baseline.

    python asv_bench/xla_gate.py check     # exit 1 when a figure grew > 10%, 2 when not comparable
    python asv_bench/xla_gate.py update    # rewrite asv_bench/xla_baseline.json from this checkout

Compiles (never runs) every kernel × implementation × grid point of the asv suite with the
suite's own ``benchmarks/_common.py`` (so the gate and ``kernels.*Xla.track_*`` measure the same
programs) and compares ``flops``, ``bytes_accessed``, ``temp_bytes`` and ``total_bytes`` with
``xla_baseline.json`` (logic: ``nt_pntk._src.bench.xla_gate``). These figures are
deterministic for one XLA: a shared, noisy machine cannot fake or hide a regression in them.
The options ``--models``, ``--kernels``, ``--implementations`` and ``--points`` restrict the
grid (a restricted ``update`` merges into the baseline). See asv_bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BASELINE = HERE / "xla_baseline.json"
#: The grid the committed baseline holds and CI checks: ``ci``, every kernel × implementation the
#: suite measures at the quick grid's points (28 programs, about 2 minutes on 2 cores). The full
#: one (98 programs) took 6.5 minutes on the 2 loaded cores of the development machine, the quick
#: one (8: pntk and entk with implementation 1 only) about 40 s (asv_bench/README.md).
DEFAULT_GRID = "ci"
UPDATE_COMMAND = "python asv_bench/xla_gate.py update"
PROG = "xla_gate"


def _common():
    """The asv suite's ``benchmarks/_common.py`` (not a package module: asv imports it by path)."""
    benchmarks = str(HERE / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    import _common

    return _common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("check", "compare this checkout's figures with the baseline"),
        ("update", "write this checkout's figures as the baseline"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="the baseline JSON file")
        command.add_argument(
            "--grid",
            choices=("full", "ci", "quick"),
            default=DEFAULT_GRID,
            help="the suite's full grid, its NT_PNTK_BENCH_QUICK one, or ci: every kernel and "
            f"implementation at the quick grid's points (default: {DEFAULT_GRID})",
        )
        command.add_argument(
            "--jax-cache",
            type=Path,
            default=None,
            help="also write the compiled programs into JAX's persistent compilation cache in this "
            "folder, for the asv suite to load (NT_PNTK_BENCH_JAX_CACHE; the test command)",
        )
        command.add_argument("--models", nargs="+", default=None, help="only these models (fc, cnn)")
        command.add_argument(
            "--kernels", nargs="+", default=None, help="only these kernels (entk, trace, pntk)"
        )
        command.add_argument(
            "--implementations",
            nargs="+",
            type=int,
            default=None,
            help="only these NT implementations (1, 2, 3)",
        )
        command.add_argument(
            "--points",
            nargs="+",
            default=None,
            help="only these grid points ('N=16,O=10,width=128', or base)",
        )
        if name == "check":
            command.add_argument(
                "--tolerance",
                type=float,
                default=0.10,
                help="fail when a figure grows by more than this fraction (default: 0.10)",
            )
    return parser


def _grid(common, grid: str) -> list[tuple[str, str, int, str]]:
    """Every (model, kernel, implementation, point) the suite's ``*Xla`` benchmarks measure (for
    ``ci``: every kernel and implementation of the full suite, at the quick grid's points)."""
    kernels = common.KERNELS if grid == "ci" else common.kernels()
    implementations = common.IMPLEMENTATIONS if grid == "ci" else common.implementations()
    return [
        (model, kernel, implementation, point)
        for model in common.MODELS
        for point in common.points(model)
        for kernel in kernels
        for implementation in implementations
        if common.measured(kernel, implementation)
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check" and not args.tolerance > 0:
        return _error(f"--tolerance must be > 0; got {args.tolerance}")
    # The grid is chosen by --grid, not inherited from the caller's environment (and the
    # caller's environment is left as it was, for a test that calls `main`).
    previous = os.environ.get("NT_PNTK_BENCH_QUICK")
    os.environ["NT_PNTK_BENCH_QUICK"] = "0" if args.grid == "full" else "1"
    try:
        return _run(args)
    finally:
        if previous is None:
            del os.environ["NT_PNTK_BENCH_QUICK"]
        else:
            os.environ["NT_PNTK_BENCH_QUICK"] = previous


def _run(args: argparse.Namespace) -> int:
    from nt_pntk._src.bench import xla_gate as gate

    common = _common()
    restricted = any(v is not None for v in (args.models, args.kernels, args.implementations, args.points))
    try:
        keys = gate.select(
            _grid(common, args.grid),
            models=args.models,
            kernels=args.kernels,
            implementations=args.implementations,
            points=args.points,
        )
    except ValueError as e:  # "`kernels` must be among ..." -> "--kernels must be among ..."
        return _error("--" + str(e).replace("`", ""))

    baseline = None
    if args.command == "check" or (restricted and args.baseline.is_file()):
        try:
            baseline = gate.load(args.baseline)
        except (FileNotFoundError, ValueError) as e:
            return _error(f"{e}; make one with `{UPDATE_COMMAND}`", code=gate.NOT_COMPARABLE)

    # Fresh compiles, the figures of what XLA builds now; with --jax-cache, also saved for the asv
    # suite (a program found there is loaded with its figures, which are those of its compile).
    common.setup_jax(cache_dir=None if args.jax_cache is None else str(args.jax_cache))
    import jax

    versions = gate.installed_versions(jax.default_backend())
    if args.command == "check":
        try:
            gate.check_comparable(baseline, versions, args.grid, keys, complete=not restricted)
        except gate.NotComparable as e:
            return _error(f"{e}. If that is expected, regenerate the baseline: {UPDATE_COMMAND}", code=2)

    start = time.perf_counter()
    current = gate.compute(keys, lambda key: _figures(common, key))
    seconds = time.perf_counter() - start
    print(f"{PROG}: compiled {len(keys)} programs ({args.grid} grid) in {seconds:.0f}s")

    if args.command == "update":
        figures = dict(current)
        if baseline is not None and baseline.versions == versions and baseline.grid == args.grid:
            figures = {**baseline.figures, **current}  # a restricted update keeps the rest
        gate.save(
            args.baseline,
            gate.Baseline(versions=versions, grid=args.grid, figures=figures),
            update_command=UPDATE_COMMAND,
        )
        print(f"{PROG}: wrote {len(figures)} programs' figures to {args.baseline}")
        return gate.OK

    changes = gate.compare(baseline.figures, current, tolerance=args.tolerance)
    grew = [c for c in changes if c.regression]
    print(
        f"{PROG}: {len(current)} programs against {args.baseline}: {len(grew)} figure(s) grew and "
        f"{len(changes) - len(grew)} shrank by more than {args.tolerance:.0%}"
    )
    if changes:
        print(gate.format_changes(changes))
    if grew:
        print(
            f"{PROG}: FAILED: XLA's figures grew for: "
            + ", ".join(sorted({gate.describe(c.key) for c in grew}))
            + f". If the growth is intended, update the baseline: {UPDATE_COMMAND}"
        )
        return gate.REGRESSION
    if changes:
        print(f"{PROG}: figures shrank; record the improvement with `{UPDATE_COMMAND}`")
    return gate.OK


def _figures(common, key) -> dict[str, float]:
    model, kernel, implementation, point = key
    return common.Compiled(model, kernel, implementation, **common.parse_point(point)).xla_figures()


def _error(message: str, *, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
