"""A network's pNTK (or NT's trace kernel) on a dataset with `nt_pntk.tiled.kernel_matrix`: resumable.

The network is a zoo model (``--model fc --width 512 --outputs 10``) or your own
``--function module:function``, a function of no arguments returning either
``(init_fn, apply_fn)`` (a stax triple works too; the parameters are then
``init_fn(PRNGKey(--seed), ...)``) or ``(apply_fn, params)``, a network with its
parameters, as `nt_pntk.from_linen`, `nt_pntk.from_nnx` and
`nt_pntk.from_equinox` return it for a flax or equinox model. The inputs are
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
import dataclasses
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nt_pntk._src import checks, deprecations
from nt_pntk.cli import (
    UsageError,
    load_user_function,
    user_code_error,
)

DIGITS = 1797
KERNELS = ("pntk", "trace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    model = parser.add_argument_group("network")
    model.add_argument("--model", default="fc", help="zoo model: fc, cnn, wide_resnet, resnet (default: fc)")
    model.add_argument("--width", type=int, default=256, help="hidden units or channels (default: 256)")
    model.add_argument(
        "--depth", type=int, default=None, help="the zoo model's depth option (default: its own)"
    )
    model.add_argument("--outputs", type=int, default=10, help="number of outputs O (default: 10)")
    deprecations.add_option_alias(model, "kernel", "--out-dim", type=int)
    model.add_argument(
        "--function",
        default=None,
        metavar="MODULE:FUNCTION",
        help="instead of --model: a function of no arguments returning (init_fn, apply_fn), or "
        "(apply_fn, params) as nt_pntk.from_linen / from_nnx / from_equinox return",
    )
    model.add_argument(
        "--kernel",
        type=deprecations.option_value("kernel", "--kernel"),  # `ntk`: `trace`, with a warning
        choices=KERNELS,
        default="pntk",
        help="pntk: the pseudo-NTK, (1/O) Σ_{o,o'} Θ_oo' (one Jacobian row per input); trace: NT's "
        "eNTK traced over the outputs, (1/O) Σ_o Θ_oo (O rows per input) (default: pntk)",
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
    sketch = parser.add_argument_group("sketch")
    sketch.add_argument(
        "--sketch",
        type=int,
        default=None,
        metavar="K",
        help="sketch each Jacobian row to K numbers (nt_pntk.approximations.Sketch, seeded by --seed): "
        "an unbiased estimate of the kernel, relative error ~ K^-1/2, for networks and datasets whose "
        "exact kernel would take too long (default: exact)",
    )
    sketch.add_argument(
        "--sketch-method",
        choices=("tensorsketch", "countsketch"),
        default="tensorsketch",
        help="tensorsketch: dense and convolution layers from their factors; countsketch: every "
        "parameter from its per-example gradient (default: tensorsketch)",
    )
    sketch.add_argument(
        "--features",
        type=Path,
        default=None,
        help="with --sketch: also write the features Φ (.npy or .zarr, resumable) and compute the "
        "kernel as ΦΦᵀ from them (for nt_pntk.regression.predict_features)",
    )
    model.add_argument(
        "--implementation",
        type=int,
        choices=(0, 1, 2, 3),
        default=0,
        help="NT's implementation, which sets kernel_matrix's route: 1 Jacobian rows, 2 NTK-vector "
        "products (tiled directly), 3 structured derivatives (dense layers as factors), 0 AUTO: the "
        "cheapest of rows and structured by XLA's cost analysis (default: 0)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, default=None, help="the kernel's path: .npy or .zarr (required)")
    out.add_argument(
        "--plan",
        action="store_true",
        help="print how the kernel would be computed (route, estimates, tiles, memory) and exit: "
        "compiles, computes nothing, writes nothing (--output not needed)",
    )
    out.add_argument("--memory-budget", default=None, help="e.g. 2GiB (default: half the available memory)")
    out.add_argument(
        "--tile-size", type=int, default=None, help="tile side (default: chosen from the budget)"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument(
        "--allow-non-finite",
        action="store_true",
        help="keep NaN or inf kernel entries (default: such a tile is an error naming its inputs, exit 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the parameters and the data (default: 0)"
    )


def run(args: argparse.Namespace) -> int:
    # The arguments are checked before JAX is imported: a usage error costs no start-up.
    checks.seed("--seed", args.seed)
    if args.sketch is not None:
        checks.positive_int("--sketch", args.sketch)
    if args.features is not None:
        if args.sketch is None:
            raise UsageError("--features needs --sketch K: the features are the sketched Jacobian rows")
        check_output(args.features, "--features")
    if not args.plan:
        if args.output is None:
            raise UsageError("--output is required (the kernel path, .npy or .zarr) unless --plan is given")
        check_output(args.output)
    x = load_inputs(args.input, args.n, args.seed)

    from nt_pntk import tiled
    from nt_pntk._src.kernels import approximations

    network = load_network(args)
    apply_fn, name = network.apply_fn, network.name
    if not args.function:
        check_input_rank(args.model, x.shape)
    if network.params is not None:
        params = network.params
        check_takes_inputs(network, x)
    else:
        params = _init_params(network, args.seed, x.shape)
    from nt_pntk._src.kernels import sketch

    base = approximations.PNTK() if args.kernel == "pntk" else approximations.Trace()
    approximation = base
    if args.sketch is not None:
        approximation = sketch.Sketch(base=base, dim=args.sketch, seed=args.seed, method=args.sketch_method)
    fn = approximation.kernel_fn(apply_fn, vmap_axes=0, implementation=args.implementation)
    kernel = args.kernel if args.sketch is None else f"{args.kernel} sketched to {args.sketch}"
    if args.plan:
        print(f"{kernel} of {name} on {x.shape[0]} inputs of shape {x.shape[1:]}", flush=True)
        # A bad --memory-budget or --tile-size is the library's `UsageError` (exit code 2).
        plan = tiled.plan_kernel_matrix(
            fn, x, None, params, memory_budget=args.memory_budget, tile_size=args.tile_size
        )
        print(plan)
        if args.sketch is None:  # the exact plan comes with its sketched alternative
            dim = sketch.DEFAULT_DIM
            alternative = sketch.Sketch(base=base, dim=dim, seed=args.seed, method=args.sketch_method)
            alt = tiled.plan_kernel_matrix(
                alternative.kernel_fn(apply_fn, vmap_axes=0),
                x,
                None,
                params,
                memory_budget=args.memory_budget,
            )
            print(
                f"sketched alternative (--sketch {dim}: unbiased, relative error ~ {dim}^-1/2): estimated "
                f"{alt.choice.estimates['rows']}"
            )
        return 0
    print(f"{kernel} of {name} on {x.shape[0]} inputs of shape {x.shape[1:]} -> {args.output}", flush=True)
    start = time.perf_counter()
    if args.features is not None:
        fn, x, params = _features_gram(fn, x, params, args)
    # A bad --memory-budget or --tile-size, an --output holding another kernel: the library's
    # `UsageError` (exit code 2); a failure of the computation: a ValueError (exit code 1).
    try:
        k = tiled.kernel_matrix(
            fn,
            x,
            None,
            params,
            output=args.output,
            memory_budget=args.memory_budget,
            tile_size=args.tile_size,
            progress=not args.no_progress,
            allow_non_finite=args.allow_non_finite,
        )
    except tiled.NonFiniteKernelError as e:  # a failure of the network on these inputs (exit 1)
        raise tiled.NonFiniteKernelError(str(e).replace("allow_non_finite=True", "--allow-non-finite")) from e
    except OSError as e:
        if e.filename is None and e.errno is not None:  # e.g. ENOSPC from a write: name the output
            raise OSError(e.errno, e.strerror, str(args.output)) from e
        raise
    print(f"{k.shape} {k.dtype} kernel in {args.output} ({time.perf_counter() - start:.1f} s)")
    return 0


def _features_gram(fn: Any, x: np.ndarray, params: Any, args: argparse.Namespace) -> tuple:
    """Φ written to --features; then the kernel ΦΦᵀ as a linear kernel of Φ's rows (computed once)."""
    import jax.numpy as jnp

    from nt_pntk import tiled

    phi = tiled.feature_matrix(
        fn,
        x,
        params,
        output=args.features,
        memory_budget=args.memory_budget,
        progress=not args.no_progress,
        allow_non_finite=args.allow_non_finite,
    )
    print(f"{phi.shape} {phi.dtype} features in {args.features}", flush=True)
    rows = np.asarray(phi).reshape(len(x), -1)

    def features_gram(a: Any, b: Any, unit: Any) -> Any:
        return unit * jnp.matmul(a, b.T, precision="highest")

    return features_gram, rows, jnp.ones((), rows.dtype)


@dataclasses.dataclass(frozen=True)
class Network:
    """A network to take the kernel of: ``apply_fn`` with either ``init_fn`` or its ``params``."""

    apply_fn: Callable
    name: str
    init_fn: Callable | None = None
    params: Any = None
    zoo: bool = False  # a zoo model (--model), sized by --width, --depth, --outputs


def _init_params(network: Network, seed: int, shape: tuple[int, ...]) -> Any:
    """The parameters ``init_fn(PRNGKey(seed), (-1, *example_shape))``, checked to fit in memory first.

    Raises:
      UsageError: the network cannot take inputs of this shape, or its parameters cannot fit.
      UserCodeError: a user's ``init_fn`` failed otherwise.
    """
    import jax

    from nt_pntk._src.experiments import models
    from nt_pntk._src.tiled import planning

    input_shape = (-1, *shape[1:])
    try:
        need = models.parameter_bytes(network.init_fn, input_shape)  # shapes only: nothing allocated
        free = planning.free_bytes(jax.devices()[0])
        if free is not None and need > free:
            fix = "use a smaller --width, --depth or --outputs" if network.zoo else "use a smaller network"
            raise UsageError(
                f"the parameters of {network.name} need {planning.format_bytes(need)}, more than the "
                f"{planning.format_bytes(free)} of memory free on {jax.devices()[0].platform}; {fix}"
            )
        _, params = network.init_fn(jax.random.PRNGKey(seed), input_shape)
    except (ValueError, TypeError, IndexError) as e:
        if isinstance(e, UsageError):
            raise
        # stax fails deep inside a layer (an IndexError for a conv on flat inputs): say which pairing failed.
        raise UsageError(
            f"{network.name} cannot take inputs of shape {shape[1:]} (one example): its init_fn failed with "
            f"{type(e).__name__}: {e}. Pass inputs of the shape the network expects."
        ) from e
    except Exception as e:  # the user's init_fn raised something else: their code failed
        raise user_code_error(f"the init_fn of {network.name}", e) from e
    return params


def check_takes_inputs(network: Network, x: np.ndarray) -> None:
    """A network given with its parameters, traced on one example (no compute) before any work."""
    import jax

    try:
        jax.eval_shape(network.apply_fn, network.params, x[:1])
    except Exception as e:  # any failure of the user's network on one example is theirs to fix
        raise UsageError(
            f"{network.name} cannot take inputs of shape {x.shape[1:]} (one example): its apply_fn failed "
            f"with {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def check_output(path: Path, option: str = "--output") -> None:
    """An output's suffix, and a writable folder to hold it, checked before any work."""
    if path.suffix not in (".npy", ".zarr"):
        raise UsageError(f"{option} must end in .npy or .zarr; got {path}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: its folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{option} {path}: its folder {parent} is not writable (permission denied); "
            "choose a folder you can write to"
        )


# Zoo models built from convolutions take NHWC images; the FC flattens whatever it gets.
IMAGE_MODELS = ("cnn", "wide_resnet", "resnet")


def check_input_rank(model: str, shape: tuple[int, ...]) -> None:
    """A zoo model's input rank, checked before building it (stax's own failure is an IndexError)."""
    if model in IMAGE_MODELS and len(shape) != 4:
        raise UsageError(
            f"--model {model} needs images of shape (N, height, width, channels); the inputs have shape "
            f"{shape}. Reshape them (e.g. x.reshape(-1, 8, 8, 1) for flat 8×8 images) or use --model fc"
        )
    if len(shape) < 2:
        raise UsageError(
            f"--model {model} needs inputs of shape (N, features...) with examples along axis 0; "
            f"got shape {shape}. For one feature per example save x[:, None]"
        )


NPY_MAGIC = b"\x93NUMPY"


def load_inputs(path: Path | None, n: int | None, seed: int) -> np.ndarray:
    if n is not None:
        checks.positive_int("--n", n)
    if path is None:
        return digits(DIGITS if n is None else n, seed)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UsageError(f"--input {path} {what}; pass a .npy file of examples along axis 0 (numpy.save)")
    fix = "Save the examples with numpy.save(path, x): a numeric array, examples along axis 0"
    with open(path, "rb") as f:
        is_npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
    if not is_npy:
        raise UsageError(f"--input {path} is not a .npy file (it lacks NumPy's header). {fix}")
    try:
        x = np.load(path, mmap_mode="r")
    except ValueError as e:  # truncated, or an object array (which would need pickle)
        raise UsageError(f"--input {path} is not a readable .npy array: {str(e).rstrip('.')}. {fix}") from e
    if x.dtype.kind not in "biuf" or x.ndim < 1:
        raise UsageError(f"--input {path} holds a {x.dtype} array of shape {x.shape}. {fix}")
    if n is not None and n > x.shape[0]:
        raise UsageError(f"--n {n} asks for more rows than --input {path} has: its shape is {x.shape}")
    return np.asarray(x[:n] if n is not None else x)


def digits(n: int, seed: int = 0) -> np.ndarray:
    """`n` standardized digits (N, 8, 8, 1): a random subset, or augmented copies beyond 1,797.

    Copy c ≥ 1 of the 1,797 images is shifted by a random (dy, dx) in {-1, 0, 1}²
    (np.roll, per image) and gets N(0, 0.05²) noise.
    """
    from nt_pntk._src.experiments.data import load_digits_images

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


def load_network(args: argparse.Namespace) -> Network:
    if args.function:
        return load_function(args.function)
    from nt_pntk._src.experiments import models

    options = {} if args.depth is None else {"depth": args.depth}
    checks.one_of("--model", args.model, sorted(models.MODELS))
    model = models.get_model(args.model, width=args.width, outputs=args.outputs, **options)
    depth = f", depth {args.depth}" if args.depth is not None else ""
    name = f"{args.model} (width {args.width}{depth}, {args.outputs} outputs)"
    return Network(model.apply_fn, name, init_fn=model.init_fn, zoo=True)


def load_function(spec: str) -> Network:
    """The network of ``--function module:function``: ``(init_fn, apply_fn)`` or ``(apply_fn, params)``."""
    function = load_user_function(spec, "--function")
    function_name = spec.partition(":")[2]
    try:
        inspect.signature(function).bind()
    except TypeError as e:  # a function that needs arguments (a signature-less builtin passes)
        raise UsageError(
            f"--function {spec!r} must name a function of no arguments returning (init_fn, apply_fn) or "
            "(apply_fn, params); "
            f"{function_name} needs some: {e}"
        ) from e
    except ValueError:  # no signature to inspect: call it and see
        pass
    try:
        network = function()
    except Exception as e:  # the user's builder, e.g. nt_pntk.from_nnx refusing a module in training mode
        raise user_code_error(f"--function {spec}: calling {function_name}()", e) from e
    if isinstance(network, tuple) and len(network) == 2 and callable(network[0]) and not callable(network[1]):
        return Network(network[0], spec, params=network[1])  # (apply_fn, params), e.g. from nt_pntk.from_nnx
    if not isinstance(network, tuple) or len(network) < 2 or not all(map(callable, network[:2])):
        raise UsageError(
            f"{spec}() must return (init_fn, apply_fn); got {type(network).__name__}. A network with its "
            "parameters returns (apply_fn, params), as nt_pntk.from_linen, from_nnx and from_equinox do"
        )
    return Network(network[1], spec, init_fn=network[0])
