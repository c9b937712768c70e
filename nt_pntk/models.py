"""The model zoo shared by tests, validation and benchmarks.

Every model is an `nt.stax` network in NTK parameterization, so NT's
infinite-width `kernel_fn` is available beside the finite network. Inputs are
NHWC images (the digits are 8×8×1); the FC model flattens them itself.

Example:
  >>> import jax
  >>> from nt_pntk import models
  >>> model = models.get_model("fc", width=64, out=10)
  >>> _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
  >>> model.apply_fn(params, jax.numpy.ones((2, 8, 8, 1))).shape
  (2, 10)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import nt_pntk  # noqa: F401  (installs the neural-tangents adaptation)
from neural_tangents import stax

W_STD = 2.0**0.5  # He scale for ReLU in NTK parameterization
B_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Model:
    """A stax network: `init_fn(rng, input_shape)`, `apply_fn(params, x)`,
    and NT's infinite-width `kernel_fn(x1, x2, get)`."""

    name: str
    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable


def fc(width: int, out: int = 10, *, depth: int = 3) -> tuple:
    """Fully connected ReLU network with `depth` hidden layers of `width`."""
    layers = [stax.Flatten()]
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_STD, b_std=B_STD), stax.Relu()]
    layers += [stax.Dense(out, W_std=1.0, b_std=B_STD)]
    return stax.serial(*layers)


def cnn(width: int, out: int = 10, *, depth: int = 3) -> tuple:
    """`depth` 3×3 SAME conv layers of `width` channels, ReLU, global average pooling."""
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), stax.Relu()]
    layers += [stax.GlobalAvgPool(), stax.Dense(out, W_std=1.0, b_std=B_STD)]
    return stax.serial(*layers)


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


def wide_resnet(width: int, out: int = 10, *, blocks_per_group: int = 1, groups: int = 2) -> tuple:
    """A small WideResNet: `groups` groups of residual blocks, channels `width * 2**g`.

    The first block of each group after the first halves the resolution.
    """
    layers = [stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)]
    channels = width
    for g in range(groups):
        new_channels = width * 2**g
        for b in range(blocks_per_group):
            strides = (2, 2) if (g > 0 and b == 0) else (1, 1)
            layers.append(_wide_resnet_block(new_channels, strides, new_channels != channels or strides != (1, 1)))
            channels = new_channels
    layers += [stax.Relu(), stax.GlobalAvgPool(), stax.Dense(out, W_std=1.0, b_std=B_STD)]
    return stax.serial(*layers)


def resnet(width: int, out: int = 10, *, depth: int = 18) -> tuple:
    """A ResNet-`depth` layout (18, 34, 50, 101 or 152) from residual stax blocks.

    Block counts per stage follow He et al. (2016); every block here is the
    two-conv basic block, so depth 50+ has the stage layout of the bottleneck
    ResNets at the cost of basic blocks. Used for the paper's Figure 1.
    """
    stages = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    if depth not in stages:
        raise ValueError(f"`depth` must be one of {sorted(stages)}; got {depth!r}.")
    layers = [stax.Conv(width, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)]
    channels = width
    for s, count in enumerate(stages[depth]):
        new_channels = width * 2**s
        for b in range(count):
            strides = (2, 2) if (s > 0 and b == 0) else (1, 1)
            layers.append(_wide_resnet_block(new_channels, strides, new_channels != channels or strides != (1, 1)))
            channels = new_channels
    layers += [stax.Relu(), stax.GlobalAvgPool(), stax.Dense(out, W_std=1.0, b_std=B_STD)]
    return stax.serial(*layers)


MODELS: dict[str, Callable[..., tuple]] = {
    "fc": fc,
    "cnn": cnn,
    "wide_resnet": wide_resnet,
    "resnet": resnet,
}


def get_model(name: str, *, width: int, out: int = 10, **options: Any) -> Model:
    """Builds zoo model `name` (one of `MODELS`) with `width` and `out` outputs.

    Args:
      name: ``'fc'``, ``'cnn'``, ``'wide_resnet'`` or ``'resnet'``.
      width: hidden units (FC) or channels of the first stage (conv nets).
      out: number of outputs O.
      **options: the builder's keyword options (``depth``, ``blocks_per_group``...).

    Raises:
      ValueError: an unknown name, or a width or out below 1.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {sorted(MODELS)}; got {name!r}.")
    for arg, value in (("width", width), ("out", out)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{arg}` must be a positive int; got {value!r}.")
    init_fn, apply_fn, kernel_fn = MODELS[name](width, out, **options)
    return Model(name, init_fn, apply_fn, kernel_fn)
