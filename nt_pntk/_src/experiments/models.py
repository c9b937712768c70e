"""The model zoo shared by tests, validation and benchmarks.

Every model is an `nt.stax` network in NTK parameterization, so NT's
infinite-width `kernel_fn` is available beside the finite network. Inputs are
NHWC images (the digits are 8×8×1); the FC model flattens them itself.

Example:
  >>> import jax
  >>> from nt_pntk.experiments import models
  >>> model = models.get_model("fc", width=64, outputs=10)
  >>> _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
  >>> model.apply_fn(params, jax.numpy.ones((2, 8, 8, 1))).shape
  (2, 10)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

from neural_tangents import stax

from nt_pntk._src import checks, deprecations

W_STD = 2.0**0.5  # He scale for ReLU in NTK parameterization
B_STD = 0.1
#: The most hidden layers (or residual blocks) a zoo network may have: NT builds about 4,000
#: layers a second and XLA compiles a 1,000-layer network's kernel in one to two minutes on
#: two CPU cores, so a deeper one would not finish (depth 100,000 takes a minute to build alone).
MAX_LAYERS = 1000
#: The widest layer (units or channels) a zoo network may have: one such layer's weights take
#: 8 GiB per unit of its input already, and wider shapes overflow the integer sizes of XLA's arrays.
MAX_WIDTH = 2**31 - 1


def _check_widths(width: Any, outputs: Any, readout_width: Any = None) -> None:
    """`width`, `outputs` and `readout_width` (None: no such layer): ints in [1, `MAX_WIDTH`]."""
    checks.int_between("width", width, 1, MAX_WIDTH, "hidden units or channels")
    checks.int_between("outputs", outputs, 1, MAX_WIDTH, "the network's outputs O")
    if readout_width is not None:
        checks.int_between("readout_width", readout_width, 1, MAX_WIDTH, "the readout's input units")


def _check_widest(name: str, value: int, widest: int, why: str) -> None:
    """A `ValueError` naming option `name` when it makes a layer of `widest` > `MAX_WIDTH` units."""
    if widest > MAX_WIDTH:
        raise checks.UsageError(
            f"`{name}`={value} makes a layer {widest:,} channels wide ({why}), more than the "
            f"{MAX_WIDTH:,} a layer may have; use a smaller "
            + ("`width`." if name == "width" else f"`{name}` or `width`.")
        )


@dataclasses.dataclass(frozen=True)
class Model:
    """A stax network: `init_fn(rng, input_shape)`, `apply_fn(params, x)`,
    and NT's infinite-width `kernel_fn(x1, x2, get)`."""

    name: str
    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable


def _readout(outputs: int, readout_width: int | None) -> list:
    """The last layer, after an optional ReLU layer of `readout_width` units (the readout's input)."""
    hidden = (
        [] if readout_width is None else [stax.Dense(readout_width, W_std=W_STD, b_std=B_STD), stax.Relu()]
    )
    return [*hidden, stax.Dense(outputs, W_std=1.0, b_std=B_STD)]


def fc(width: int, outputs: int = 10, *, depth: int = 3, readout_width: int | None = None) -> tuple:
    """Fully connected ReLU network with `depth` hidden layers of `width`.

    ``readout_width`` adds one more hidden layer of that width before the last
    layer, so the readout's input width can differ from the body's `width`.

    Raises:
      TypeError, ValueError: a size that is not an int in its range (`MAX_WIDTH`, `MAX_LAYERS`).
    """
    _check_widths(width, outputs, readout_width)
    checks.int_between("depth", depth, 1, MAX_LAYERS, "hidden layers")
    layers = [stax.Flatten()]
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_STD, b_std=B_STD), stax.Relu()]
    return stax.serial(*layers, *_readout(outputs, readout_width))


def cnn(width: int, outputs: int = 10, *, depth: int = 3, readout_width: int | None = None) -> tuple:
    """`depth` 3×3 SAME conv layers of `width` channels, ReLU, global average pooling.

    ``readout_width`` adds a dense ReLU layer of that width after the pooling, before
    the last layer: a body of `width` channels with a readout of another width.

    Raises:
      TypeError, ValueError: a size that is not an int in its range (`MAX_WIDTH`, `MAX_LAYERS`).
    """
    _check_widths(width, outputs, readout_width)
    checks.int_between("depth", depth, 1, MAX_LAYERS, "convolution layers")
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), stax.Relu()]
    return stax.serial(*layers, stax.GlobalAvgPool(), *_readout(outputs, readout_width))


def _wide_resnet_block(channels: int, strides: tuple[int, int], channel_mismatch: bool) -> Any:
    main = stax.serial(
        stax.Relu(),
        stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_STD, b_std=B_STD),
        stax.Relu(),
        stax.Conv(channels, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD),
    )
    shortcut = (
        stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_STD, b_std=B_STD)
        if channel_mismatch
        else stax.Identity()
    )
    return stax.serial(stax.FanOut(2), stax.parallel(main, shortcut), stax.FanInSum())


def _bottleneck_block(channels: int, strides: tuple[int, int], projection: bool) -> Any:
    """1×1 reduce to `channels`, 3×3, 1×1 expand to `4 * channels` (ResNet-50 and deeper)."""
    main = stax.serial(
        stax.Relu(),
        stax.Conv(channels, (1, 1), W_std=W_STD, b_std=B_STD),
        stax.Relu(),
        stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_STD, b_std=B_STD),
        stax.Relu(),
        stax.Conv(4 * channels, (1, 1), W_std=W_STD, b_std=B_STD),
    )
    shortcut = (
        stax.Conv(4 * channels, (1, 1), strides, W_std=W_STD, b_std=B_STD) if projection else stax.Identity()
    )
    return stax.serial(stax.FanOut(2), stax.parallel(main, shortcut), stax.FanInSum())


def _residual_net(
    width: int, outputs: int, blocks_per_stage: tuple[int, ...], bottleneck: bool = False
) -> tuple:
    """A stem conv, residual stages of `width * 2**stage` channels, pooling and a readout.

    The first block of every stage after the first halves the resolution.
    """
    block_fn, expansion = (_bottleneck_block, 4) if bottleneck else (_wide_resnet_block, 1)
    layers = [stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)]
    channels = width
    for stage, count in enumerate(blocks_per_stage):
        stage_channels = width * 2**stage
        for block in range(count):
            strides = (2, 2) if (stage > 0 and block == 0) else (1, 1)
            projection = stage_channels * expansion != channels or strides != (1, 1)
            layers.append(block_fn(stage_channels, strides, projection))
            channels = stage_channels * expansion
    layers += [stax.Relu(), stax.GlobalAvgPool(), stax.Dense(outputs, W_std=1.0, b_std=B_STD)]
    return stax.serial(*layers)


def wide_resnet(width: int, outputs: int = 10, *, blocks_per_group: int = 1, groups: int = 2) -> tuple:
    """A small WideResNet: `groups` groups of `blocks_per_group` residual blocks.

    The channels double from one group to the next: the last group's are ``width * 2**(groups - 1)``.

    Raises:
      TypeError, ValueError: a size that is not an int in its range (`MAX_WIDTH`, `MAX_LAYERS`).
    """
    _check_widths(width, outputs)
    checks.int_between("blocks_per_group", blocks_per_group, 1, MAX_LAYERS, "residual blocks per group")
    checks.int_between("groups", groups, 1, MAX_LAYERS, "groups of residual blocks")
    if blocks_per_group * groups > MAX_LAYERS:
        raise checks.UsageError(
            f"`blocks_per_group` * `groups` must be at most {MAX_LAYERS:,} residual blocks; got "
            f"{blocks_per_group} * {groups} = {blocks_per_group * groups:,}."
        )
    _check_widest("groups", groups, width * 2 ** (groups - 1), "width * 2**(groups - 1)")
    return _residual_net(width, outputs, (blocks_per_group,) * groups)


RESNET_STAGES = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def resnet(width: int, outputs: int = 10, *, depth: int = 18) -> tuple:
    """ResNet-`depth` (10, 18, 34, 50, 101 or 152) of He et al. (2016) from stax blocks.

    10 (one block per stage, the smallest of the family), 18 and 34 use
    two-conv basic blocks, 50 and deeper 1×1-3×3-1×1 bottleneck blocks with 4×
    expansion; the stage widths are `width * 2**stage`. Used for the paper's
    Figure 1 at reduced width and image size.
    """
    _check_widths(width, outputs)
    checks.one_of("depth", depth, sorted(RESNET_STAGES))
    stages, expansion = len(RESNET_STAGES[depth]), 4 if depth >= 50 else 1
    _check_widest("width", width, width * 2 ** (stages - 1) * expansion, "the last stage's channels")
    return _residual_net(width, outputs, RESNET_STAGES[depth], bottleneck=depth >= 50)


MODELS: dict[str, Callable[..., tuple]] = {
    "fc": fc,
    "cnn": cnn,
    "wide_resnet": wide_resnet,
    "resnet": resnet,
}


def get_model(
    name: str, *, width: int, outputs: int | None = None, out: int | None = None, **options: Any
) -> Model:
    """Builds zoo model `name` (one of `MODELS`) with `width` and `outputs` outputs.

    Args:
      name: ``'fc'``, ``'cnn'``, ``'wide_resnet'`` or ``'resnet'``.
      width: hidden units (FC) or channels of the first stage (conv nets).
      outputs: the number of outputs O (default 10).
      out: deprecated name of ``outputs``.
      **options: the builder's keyword options (``depth``, ``blocks_per_group``...).

    Raises:
      ValueError: an unknown name, or a size out of its range (each builder's ``Raises``).
      TypeError: a size that is not an int; an option the builder does not take.
    """
    outputs = deprecations.renamed("get_model", "out", out, "outputs", outputs, default=10)
    checks.one_of("name", name, sorted(MODELS))
    known = builder_options(name)
    for option in options:
        if option not in known:
            raise checks.UsageTypeError(
                f"`{option}` is not an option of the {name!r} builder (nt_pntk.experiments.models."
                f"{MODELS[name].__name__}); it takes {known or 'none'}."
            )
    init_fn, apply_fn, kernel_fn = MODELS[name](width, outputs, **options)
    return Model(name, init_fn, apply_fn, kernel_fn)


def builder_options(name: str) -> list[str]:
    """The keyword options of zoo builder `name` (those after `width` and `outputs`)."""
    parameters = inspect.signature(MODELS[name]).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def parameter_bytes(init_fn: Callable, input_shape: tuple[int, ...]) -> int:
    """Bytes of the parameters `init_fn` makes for inputs of `input_shape`, from their shapes alone.

    Nothing is allocated or computed (``jax.eval_shape``): a network too large to initialize
    can be refused before it is.
    """
    import jax
    import numpy as np

    shapes = jax.eval_shape(lambda key: init_fn(key, input_shape)[1], jax.random.PRNGKey(0))
    return sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in jax.tree_util.tree_leaves(shapes))
