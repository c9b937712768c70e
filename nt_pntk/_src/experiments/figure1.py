"""The paper's Figure 1: wall-clock time of the eNTK and the pNTK for a pair of inputs over ResNet depths.

Mohamadi, Bae & Sutherland (ICML 2023), Figure 1, times the full eNTK and the pNTK of
one pair of inputs on ResNets of growing depth and reports the pNTK about three orders
of magnitude faster. This reproduces it on the zoo's ``resnet`` (ResNet-18/34/50 stage
layouts; see `nt_pntk.models.resnet`):

* eNTK: ``nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)``, an (1, 1, O, O) array;
* pNTK: ``nt_pntk.empirical_pntk_fn(f, vmap_axes=0)``, an (1, 1) array;

for x1, x2 one random image each, at O = 10 and O = 200 outputs, with each NT
implementation asked for (default 1, JACOBIAN_CONTRACTION). Each kernel is jitted and
compiled ahead of time (the compile time is reported apart), called once to warm up,
then timed over ``--repeats`` calls (``block_until_ready``); the median is reported.

The default is reduced to run on two CPU cores in a few minutes (first-stage width 8,
16×16×3 images); ``--full-size`` is the standard width-64 ResNet on 32×32×3 images
(CIFAR size; ResNet-18 has about 11M parameters) for a GPU.

Usage: ``python -m nt_pntk.figure1 [--full-size] [--out DIR]``; writes ``figure1.csv``
and ``figure1.png`` (log-scale time against depth) to ``DIR`` (default
``out/figure1``) and prints the table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

DEFAULT_DEPTHS = (18, 34, 50)  # must be keys of nt_pntk.models.RESNET_STAGES (checked by `check_args`)
DEFAULT_OUTS = (10, 200)
REDUCED = {"width": 8, "image_size": 16}
FULL_SIZE = {"width": 64, "image_size": 32}


class UsageError(ValueError):
    """A bad command-line option; the message names it, what it got and what would work."""

    exit_code = 2  # the command line's wrapper exits with 2, as argparse does


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEFAULT_DEPTHS), help="ResNet depths")
    parser.add_argument(
        "--outs", type=int, nargs="+", default=list(DEFAULT_OUTS), help="numbers of outputs O"
    )
    parser.add_argument(
        "--implementations",
        type=int,
        nargs="+",
        default=[1],
        choices=(1, 2, 3),
        help="nt.NtkImplementation values (default: 1)",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help=f"width {FULL_SIZE['width']}, {FULL_SIZE['image_size']}x{FULL_SIZE['image_size']}x3 images "
        f"(default: width {REDUCED['width']}, {REDUCED['image_size']}x{REDUCED['image_size']}x3; for a GPU)",
    )
    parser.add_argument("--width", type=int, default=None, help="first-stage channels (overrides the size)")
    parser.add_argument("--image-size", type=int, default=None, help="image side (overrides the size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (default: 3)")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        help="seconds of timed calls per kernel: fewer repeats (at least 1) when the warm-up call "
        "shows they would take longer (default: 30)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/figure1"), help="output directory")


def _time_kernel(fn, x1, x2, params, repeats: int, time_budget: float) -> tuple[float, float]:
    """(compile seconds, median seconds of a call)."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(x1, x2, params).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled(x1, x2, params).block_until_ready()
    warm = time.perf_counter() - start
    count = max(1, min(repeats, int(time_budget / max(warm, 1e-9))))
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        compiled(x1, x2, params).block_until_ready()
        samples.append(time.perf_counter() - start)
    return compile_s, statistics.median(samples)


def measure(args: argparse.Namespace):
    """The measurements as a DataFrame: one row per (depth, O, implementation)."""
    import jax
    import neural_tangents as nt
    import pandas as pd

    import nt_pntk
    from nt_pntk._src.experiments import models

    check_args(args)
    size = dict(FULL_SIZE if args.full_size else REDUCED)
    if args.width is not None:
        size["width"] = args.width
    if args.image_size is not None:
        size["image_size"] = args.image_size
    shape = (size["image_size"], size["image_size"], 3)
    rows = []
    for depth in args.depths:
        for out in args.outs:
            model = models.get_model("resnet", width=size["width"], outputs=out, depth=depth)
            k_params, k1, k2 = jax.random.split(jax.random.PRNGKey(args.seed), 3)
            _, params = model.init_fn(k_params, (-1, *shape))
            x1 = jax.random.normal(k1, (1, *shape))
            x2 = jax.random.normal(k2, (1, *shape))
            n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
            for implementation in args.implementations:
                entk = nt.empirical_ntk_fn(
                    model.apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation
                )
                pntk = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=implementation)
                entk_compile, entk_s = _time_kernel(entk, x1, x2, params, args.repeats, args.time_budget)
                pntk_compile, pntk_s = _time_kernel(pntk, x1, x2, params, args.repeats, args.time_budget)
                row = {
                    "depth": depth,
                    "O": out,
                    "implementation": implementation,
                    "params": n_params,
                    "eNTK_s": entk_s,
                    "pNTK_s": pntk_s,
                    "ratio": entk_s / pntk_s,
                    "eNTK_compile_s": entk_compile,
                    "pNTK_compile_s": pntk_compile,
                }
                rows.append(row)
                print(
                    f"ResNet-{depth} O={out} impl {implementation}: eNTK {entk_s * 1e3:.2f} ms, "
                    f"pNTK {pntk_s * 1e3:.3f} ms, ratio {entk_s / pntk_s:.0f}",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    frame.attrs.update(size=size, device=str(jax.devices()[0]), image_shape=shape)
    return frame


def plot(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = {"eNTK_s": "o-", "pNTK_s": "s--"}
    for (out, implementation), group in frame.groupby(["O", "implementation"], sort=True):
        for column, style in markers.items():
            label = f"{column[:4]}, O={out}" + (
                f", impl {implementation}" if frame["implementation"].nunique() > 1 else ""
            )
            ax.semilogy(group["depth"], group[column], style, label=label)
    ax.set_xlabel("ResNet depth")
    ax.set_ylabel("wall-clock time for one pair of inputs (s)")
    ax.set_xticks(sorted(frame["depth"].unique()))
    size = frame.attrs.get("size", {})
    device = frame.attrs.get("device", "")
    ax.set_title(
        f"eNTK vs pNTK (width {size.get('width')}, {size.get('image_size')}px, {device})", fontsize=9
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_args(args: argparse.Namespace) -> None:
    """Refuses every option that would time a wrong network or write a meaningless number.

    Raises:
      UsageError: naming the option, what it got and what would work.
    """
    from nt_pntk._src.experiments.models import RESNET_STAGES  # the ResNet depths the zoo builds

    bad_depths = [d for d in args.depths if d not in RESNET_STAGES]
    if bad_depths:
        raise UsageError(f"`--depths` must be among {sorted(RESNET_STAGES)} (ResNet-N); got {bad_depths}.")
    if any(out < 1 for out in args.outs):
        raise UsageError(f"`--outs` must be integers >= 1 (numbers of outputs); got {args.outs}.")
    for name, value in (("width", args.width), ("image-size", args.image_size), ("repeats", args.repeats)):
        if value is not None and value < 1:
            raise UsageError(f"`--{name}` must be an integer >= 1; got {value}.")
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise UsageError(f"`--time-budget` must be a finite number of seconds > 0; got {args.time_budget}.")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"`--seed` must be an integer in [0, 2**32); got {args.seed}.")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"`--out` {str(args.out)!r} is a file, not a directory; pass a directory.")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    check_args(args)
    args.out.mkdir(parents=True, exist_ok=True)  # now, not after minutes of timing
    frame = measure(args)
    frame.to_csv(args.out / "figure1.csv", index=False)
    plot(frame, args.out / "figure1.png")
    size = frame.attrs["size"]
    print(
        f"\nFigure 1: eNTK vs pNTK for one pair of inputs, ResNet width {size['width']}, "
        f"{size['image_size']}x{size['image_size']}x3 images, on {frame.attrs['device']}; "
        "median wall-clock of compiled calls:"
    )
    table = pd.DataFrame(
        {
            "depth": frame["depth"],
            "O": frame["O"],
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
    print(f"\nWrote {args.out / 'figure1.csv'} and {args.out / 'figure1.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m nt_pntk.figure1 ...`` is ``nt-pntk figure1 ...`` (one error handling for both)."""
    from nt_pntk import cli

    return cli.main(["figure1", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
