"""A network's pNTK (or eNTK) on a dataset with `nt_pntk.tiled.kernel_matrix`: tiled, to disk, resumable.

The network is a zoo model (``--model fc --width 512 --out-dim 10``) or your own
``--function module:function`` returning ``(init_fn, apply_fn)`` (a stax triple
works too); its parameters are ``init_fn(PRNGKey(--seed), ...)``. The inputs are
a ``.npy`` file of examples along axis 0 (``--input``), or the digits
(8×8×1 images, standardized): ``--n`` examples, a random subset of the 1,797
digits, or for ``--n`` above 1,797 the digits repeated, each copy after the
first shifted by up to one pixel and with N(0, 0.05²) noise added
(augmented, so that no two inputs are identical).

Run it again with the same arguments to resume an interrupted run: finished
tiles are kept (see ``<output>.tiles/``).

Example::

    nt-pntk kernel --model fc --width 256 --n 20000 --output k.npy --memory-budget 2GiB
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

DIGITS = 1797


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    model = parser.add_argument_group("network")
    model.add_argument("--model", default="fc", help="zoo model: fc, cnn, wide_resnet, resnet (default: fc)")
    model.add_argument("--width", type=int, default=256, help="hidden units or channels (default: 256)")
    model.add_argument(
        "--depth", type=int, default=None, help="the zoo model's depth option (default: its own)"
    )
    model.add_argument("--out-dim", type=int, default=10, help="number of outputs O (default: 10)")
    model.add_argument(
        "--function",
        default=None,
        metavar="MODULE:FUNCTION",
        help="instead of --model: a function of no arguments returning (init_fn, apply_fn)",
    )
    model.add_argument(
        "--kernel",
        choices=("pntk", "ntk"),
        default="pntk",
        help="pntk: the pseudo-NTK; ntk: NT's eNTK traced over the outputs (default: pntk)",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--input", type=Path, default=None, help="a .npy file of examples along axis 0")
    data.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"number of examples: the first N of --input, or N digits (augmented above {DIGITS}); "
        f"default: all of --input, or {DIGITS} digits",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, required=True, help="the kernel's path: .npy or .zarr")
    out.add_argument("--memory-budget", default=None, help="e.g. 2GiB (default: half the available memory)")
    out.add_argument(
        "--tile-size", type=int, default=None, help="tile side (default: chosen from the budget)"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the parameters and the data (default: 0)"
    )


def run(args: argparse.Namespace) -> int:
    import jax

    import nt_pntk
    from nt_pntk import tiled

    if args.output.suffix not in (".npy", ".zarr"):
        raise SystemExit(f"nt-pntk kernel: error: --output must end in .npy or .zarr; got {args.output}")
    x = load_inputs(args.input, args.n, args.seed)
    init_fn, apply_fn, name = load_network(args)
    _, params = init_fn(jax.random.PRNGKey(args.seed), (-1, *x.shape[1:]))
    if args.kernel == "pntk":
        fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    else:
        import neural_tangents as nt

        fn = tiled.with_jacobian_features(nt.empirical_ntk_fn(apply_fn, vmap_axes=0), apply_fn, vmap_axes=0)
    print(
        f"{args.kernel} of {name} on {x.shape[0]} inputs of shape {x.shape[1:]} -> {args.output}", flush=True
    )
    start = time.perf_counter()
    try:
        k = tiled.kernel_matrix(
            fn,
            x,
            None,
            params,
            out=args.output,
            memory_budget=args.memory_budget,
            tile_size=args.tile_size,
            progress=not args.no_progress,
        )
    except ValueError as e:
        print(f"nt-pntk kernel: error: {e}", file=sys.stderr)
        return 2
    print(f"{k.shape} {k.dtype} kernel in {args.output} ({time.perf_counter() - start:.1f} s)")
    return 0


def load_inputs(path: Path | None, n: int | None, seed: int) -> np.ndarray:
    if n is not None and n < 1:
        raise SystemExit(f"nt-pntk kernel: error: --n must be positive; got {n}")
    if path is not None:
        x = np.load(path, mmap_mode="r")
        if x.ndim < 1 or (n is not None and n > x.shape[0]):
            raise SystemExit(f"nt-pntk kernel: error: {path} has shape {x.shape}; --n {n} asks for more rows")
        return np.asarray(x[:n] if n is not None else x)
    return digits(DIGITS if n is None else n, seed)


def digits(n: int, seed: int = 0) -> np.ndarray:
    """`n` standardized digits (N, 8, 8, 1): a random subset, or augmented copies beyond 1,797.

    Copy c ≥ 1 of the 1,797 images is shifted by a random (dy, dx) in {-1, 0, 1}²
    (np.roll, per image) and gets N(0, 0.05²) noise.
    """
    from nt_pntk.data import load_digits_images

    images, _ = load_digits_images()
    rng = np.random.default_rng(seed)
    if n <= len(images):
        return images[np.sort(rng.permutation(len(images))[:n])]
    copies = [images]
    while sum(len(c) for c in copies) < n:
        shifts = rng.integers(-1, 2, size=(len(images), 2))
        shifted = np.stack(
            [np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(images, shifts, strict=True)]
        )
        copies.append((shifted + rng.normal(0.0, 0.05, shifted.shape)).astype(images.dtype))
    return np.concatenate(copies)[:n]


def load_network(args: argparse.Namespace) -> tuple:
    if args.function:
        module_name, _, function_name = args.function.partition(":")
        if not module_name or not function_name:
            raise SystemExit(
                f"nt-pntk kernel: error: --function must be module:function; got {args.function!r}"
            )
        network = getattr(importlib.import_module(module_name), function_name)()
        if not isinstance(network, tuple) or len(network) < 2:
            raise SystemExit(
                f"nt-pntk kernel: error: {args.function}() must return (init_fn, apply_fn); "
                f"got {type(network)}"
            )
        return network[0], network[1], args.function
    from nt_pntk import models

    options = {} if args.depth is None else {"depth": args.depth}
    try:
        model = models.get_model(args.model, width=args.width, out=args.out_dim, **options)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"nt-pntk kernel: error: {e}") from e
    depth = f", depth {args.depth}" if args.depth is not None else ""
    return model.init_fn, model.apply_fn, f"{args.model} (width {args.width}{depth}, {args.out_dim} outputs)"
