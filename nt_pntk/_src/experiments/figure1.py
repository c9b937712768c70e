"""The paper's Figure 1: wall-clock time of the eNTK and the pNTK for a pair of inputs over ResNet depths.

Mohamadi, Bae & Sutherland (ICML 2023), Figure 1, times the full eNTK and the pNTK of
one pair of inputs on ResNets of growing depth and reports the pNTK about three orders
of magnitude faster. This reproduces it on the zoo's ``resnet`` (ResNet-18/34/50 stage
layouts; see `nt_pntk.experiments.models.resnet`):

* eNTK: ``nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)``, an (1, 1, O, O) array;
* pNTK: ``nt_pntk.empirical_pntk_fn(f, vmap_axes=0)``, an (1, 1) array;

for x1, x2 one random image each, at O = 10 and O = 200 outputs, with each NT
implementation asked for (default 1, JACOBIAN_CONTRACTION). Each kernel is jitted and
compiled ahead of time (the compile time is reported apart), called once to warm up,
then timed over ``--repeats`` calls (``block_until_ready``); the median is reported.

The default is reduced to run on two CPU cores in a few minutes (first-stage width 8,
16×16×3 images); ``--full-size`` is the standard width-64 ResNet on 32×32×3 images
(CIFAR size; ResNet-18 has about 11M parameters) for a GPU.

``nt-pntk figure1 [--full-size] [--output DIR]`` (`nt_pntk.cli.figure1`) runs it: it
writes ``figure1.csv`` and ``figure1.png`` (log-scale time against depth) to ``DIR``
(default ``out/figure1``) and prints the table. This module is the experiment alone:
`measure` and `plot`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nt_pntk._src import checks

DEFAULT_DEPTHS = (18, 34, 50)  # ResNet-N: keys of models.RESNET_STAGES
DEFAULT_OUTPUTS = (10, 200)
REDUCED = {"width": 8, "image_size": 16}
FULL_SIZE = {"width": 64, "image_size": 32}
#: The largest image side: an image of 4096×4096×3 float32 is 192 MiB, and the first layer's
#: activations `width` times more per input (ResNets here run at 16 or 32).
MAX_IMAGE_SIZE = 4096


def check_image_size(name: str, value: object) -> int:
    """The side of the square images: an int in [1, `MAX_IMAGE_SIZE`]."""
    return checks.int_between(name, value, 1, MAX_IMAGE_SIZE, "pixels per side")


def _same(name: str) -> str:
    return name


def check_arguments(
    *,
    depths: Sequence[int],
    outputs: Sequence[int],
    implementations: Sequence[int],
    width: int,
    image_size: int,
    repeats: int,
    time_budget: float,
    seed: int,
    names: Callable[[str], str] = _same,
) -> dict[str, Any]:
    """`measure`'s arguments, checked (the zoo's ResNets built, without parameters, to check their
    sizes); errors name an argument as `names` says (e.g. ``--time-budget``, the command line's).

    Raises:
      UsageError: an argument out of range (a `UsageTypeError` for one of the wrong type).
    """
    from nt_pntk._src.experiments import models

    checked = dict(
        depths=[
            checks.one_of(names("depths"), checks.integer(names("depths"), d), sorted(models.RESNET_STAGES))
            for d in depths
        ],
        outputs=[checks.positive_int(names("outputs"), o) for o in outputs],
        implementations=[checks.one_of(names("implementations"), i, (1, 2, 3)) for i in implementations],
        width=checks.positive_int(names("width"), width),
        image_size=check_image_size(names("image_size"), image_size),
        repeats=checks.positive_int(names("repeats"), repeats),
        time_budget=checks.positive(names("time_budget"), time_budget),
        seed=checks.seed(names("seed"), seed),
    )
    for depth in checked["depths"]:  # the zoo's builder checks the sizes (stax layers only: cheap)
        for o in checked["outputs"]:
            models.get_model("resnet", width=checked["width"], outputs=o, depth=depth)
    return checked


def measure(
    *,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    outputs: Sequence[int] = DEFAULT_OUTPUTS,
    implementations: Sequence[int] = (1,),
    width: int = REDUCED["width"],
    image_size: int = REDUCED["image_size"],
    repeats: int = 3,
    time_budget: float = 30.0,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
):
    """The measurements as a DataFrame: one row per (depth, O, implementation).

    Args:
      depths: ResNet depths (keys of ``models.RESNET_STAGES``).
      outputs: numbers of outputs O.
      implementations: ``nt.NtkImplementation`` values.
      width: first-stage channels.
      image_size: the side of the square RGB images.
      repeats: timed calls after the warm-up (`nt_pntk._src.measure.time_compiled`).
      time_budget: seconds of timed calls per kernel (fewer repeats when they would take longer).
      seed: seed of the parameters and the two inputs.
      log: called with one line per measured row (None: silent).

    Returns:
      A DataFrame with columns ``depth``, ``outputs`` (O), ``implementation``, ``params``, ``eNTK_s``,
      ``pNTK_s``, ``ratio``, ``eNTK_compile_s``, ``pNTK_compile_s``; ``attrs`` hold the size,
      the device and the image shape.

    Raises:
      TypeError, ValueError: an argument of the wrong type or out of range, named.
    """
    checked = check_arguments(
        depths=depths,
        outputs=outputs,
        implementations=implementations,
        width=width,
        image_size=image_size,
        repeats=repeats,
        time_budget=time_budget,
        seed=seed,
    )
    depths, outputs, implementations = checked["depths"], checked["outputs"], checked["implementations"]
    width, image_size, repeats = checked["width"], checked["image_size"], checked["repeats"]
    time_budget, seed = checked["time_budget"], checked["seed"]

    import jax
    import neural_tangents as nt
    import pandas as pd

    import nt_pntk
    from nt_pntk._src.experiments import models
    from nt_pntk._src.measure import time_compiled

    shape = (image_size, image_size, 3)
    rows = []
    for depth in depths:
        for o in outputs:
            model = models.get_model("resnet", width=width, outputs=o, depth=depth)
            k_params, k1, k2 = jax.random.split(jax.random.PRNGKey(seed), 3)
            _, params = model.init_fn(k_params, (-1, *shape))
            x1 = jax.random.normal(k1, (1, *shape))
            x2 = jax.random.normal(k2, (1, *shape))
            n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
            for implementation in implementations:
                entk_fn = nt.empirical_ntk_fn(
                    model.apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation
                )
                pntk_fn = nt_pntk.empirical_pntk_fn(
                    model.apply_fn, vmap_axes=0, implementation=implementation
                )
                entk, _ = time_compiled(entk_fn, x1, x2, params, repeats=repeats, time_budget=time_budget)
                pntk, _ = time_compiled(pntk_fn, x1, x2, params, repeats=repeats, time_budget=time_budget)
                rows.append(
                    {
                        "depth": depth,
                        "outputs": o,
                        "implementation": implementation,
                        "params": n_params,
                        "eNTK_s": entk.median_s,
                        "pNTK_s": pntk.median_s,
                        "ratio": entk.median_s / pntk.median_s,
                        "eNTK_compile_s": entk.compile_s,
                        "pNTK_compile_s": pntk.compile_s,
                    }
                )
                if log is not None:
                    log(
                        f"ResNet-{depth} O={o} impl {implementation}: eNTK {entk.median_s * 1e3:.2f} ms, "
                        f"pNTK {pntk.median_s * 1e3:.3f} ms, ratio {entk.median_s / pntk.median_s:.0f}"
                    )
    frame = pd.DataFrame(rows)
    size = {"width": width, "image_size": image_size}
    frame.attrs.update(size=size, device=str(jax.devices()[0]), image_shape=shape)
    return frame


def plot(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = {"eNTK_s": "o-", "pNTK_s": "s--"}
    for (outputs, implementation), group in frame.groupby(["outputs", "implementation"], sort=True):
        for column, style in markers.items():
            label = f"{column[:4]}, O={outputs}" + (
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
