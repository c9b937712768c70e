"""The paper's Figure 1: wall time of the eNTK and the pNTK for a pair of inputs over ResNet depths.

Times the full eNTK (``nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)``) and the
pNTK (``nt_pntk.empirical_pntk_fn(f, vmap_axes=0)``) of one pair of random images on
the zoo's ResNets, each compiled ahead of time (compile time reported apart), warmed
up once and timed over ``--repeats`` calls (median). The default size runs on two CPU
cores in minutes; ``--full-size`` is the width-64 ResNet on 32×32×3 images, for a GPU.
Writes ``figure1.csv`` and ``figure1.png`` to ``--output`` and prints the table
(`nt_pntk.experiments.figure1` is the experiment itself).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from nt_pntk._src import deprecations
from nt_pntk._src.experiments import figure1 as experiment
from nt_pntk.cli import UsageError, add_timing_arguments, option_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depths", type=int, nargs="+", default=list(experiment.DEFAULT_DEPTHS), help="ResNet depths"
    )
    parser.add_argument(
        "--outputs",
        type=int,
        nargs="+",
        default=list(experiment.DEFAULT_OUTPUTS),
        help="numbers of outputs O (default: 10 200)",
    )
    deprecations.add_option_alias(parser, "figure1", "--outs", type=int, nargs="+")
    parser.add_argument(
        "--implementations",
        type=int,
        nargs="+",
        default=[1],
        choices=(1, 2, 3),
        help="nt.NtkImplementation values (default: 1)",
    )
    full, reduced = experiment.FULL_SIZE, experiment.REDUCED
    parser.add_argument(
        "--full-size",
        action="store_true",
        help=f"width {full['width']}, {full['image_size']}x{full['image_size']}x3 images "
        f"(default: width {reduced['width']}, {reduced['image_size']}x{reduced['image_size']}x3; for a GPU)",
    )
    parser.add_argument("--width", type=int, default=None, help="first-stage channels (overrides the size)")
    parser.add_argument("--image-size", type=int, default=None, help="image side (overrides the size)")
    add_timing_arguments(parser, time_budget=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=Path("out/figure1"), help="output directory (default: out/figure1)"
    )
    deprecations.add_option_alias(parser, "figure1", "--out", type=Path)


def size(args: argparse.Namespace) -> dict[str, int]:
    """``{"width", "image_size"}``: the reduced or full size, with ``--width``/``--image-size`` over it."""
    chosen = dict(experiment.FULL_SIZE if args.full_size else experiment.REDUCED)
    if args.width is not None:
        chosen["width"] = args.width
    if args.image_size is not None:
        chosen["image_size"] = args.image_size
    return chosen


def check_args(args: argparse.Namespace) -> None:
    """Refuses every option that would time a wrong network or write a meaningless number.

    Raises:
      UsageError: naming the option, what it got and what would work.
    """
    experiment.check_arguments(
        depths=args.depths,
        outputs=args.outputs,
        implementations=args.implementations,
        repeats=args.repeats,
        time_budget=args.time_budget,
        seed=args.seed,
        names=option_name,
        **size(args),
    )
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"`--output` {str(args.output)!r} is a file, not a directory; pass a directory.")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    check_args(args)
    args.output.mkdir(parents=True, exist_ok=True)  # now, not after minutes of timing
    frame = experiment.measure(
        depths=args.depths,
        outputs=args.outputs,
        implementations=args.implementations,
        repeats=args.repeats,
        time_budget=args.time_budget,
        seed=args.seed,
        log=functools.partial(print, flush=True),
        **size(args),
    )
    frame.to_csv(args.output / "figure1.csv", index=False)
    experiment.plot(frame, args.output / "figure1.png")
    chosen = frame.attrs["size"]
    print(
        f"\nFigure 1: eNTK vs pNTK for one pair of inputs, ResNet width {chosen['width']}, "
        f"{chosen['image_size']}x{chosen['image_size']}x3 images, on {frame.attrs['device']}; "
        "median wall-clock of compiled calls:"
    )
    table = pd.DataFrame(
        {
            "depth": frame["depth"],
            "outputs": frame["outputs"],
            "impl": frame["implementation"],
            "params": frame["params"].map(lambda p: f"{p / 1e6:.2f}M"),
            "eNTK": frame["eNTK_s"].map(lambda s: f"{s * 1e3:.2f} ms"),
            "pNTK": frame["pNTK_s"].map(lambda s: f"{s * 1e3:.3f} ms"),
            "eNTK/pNTK": frame["ratio"].map(lambda r: f"{r:.0f}x"),
            "compile eNTK": frame["eNTK_compile_s"].map(lambda s: f"{s:.1f} s"),
            "compile pNTK": frame["pNTK_compile_s"].map(lambda s: f"{s:.1f} s"),
        }
    )
    print(table.to_string(index=False))
    print(f"\nWrote {args.output / 'figure1.csv'} and {args.output / 'figure1.png'}")
    return 0
