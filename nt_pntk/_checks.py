"""Up-front validation of user arguments, with messages that say how to fix them."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import neural_tangents as nt

_IMPLEMENTATION_CHOICES = ", ".join(f"NtkImplementation.{m.name} ({m.value})" for m in nt.NtkImplementation)


def implementation(value: Any) -> nt.NtkImplementation:
    """Returns `value` as an `nt.NtkImplementation`, or raises a clear error."""
    if isinstance(value, nt.NtkImplementation):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return nt.NtkImplementation(value)
        except ValueError:
            pass
    raise ValueError(
        f"`implementation` must be one of {_IMPLEMENTATION_CHOICES}; got {value!r}. "
        "JACOBIAN_CONTRACTION (1) is the default and works for every model."
    )


def axes_tuple(name: str, axes: Any) -> tuple[int, ...]:
    """`axes` (an int or a sequence of ints) as a tuple, or a `TypeError`."""
    if _is_int(axes):
        return (int(axes),)
    if isinstance(axes, Sequence) and not isinstance(axes, str) and all(map(_is_int, axes)):
        return tuple(int(a) for a in axes)
    raise TypeError(f"`{name}` must be an int or a tuple of ints, such as (-1,) or (); got {axes!r}.")


def _is_int(value: Any) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return not isinstance(value, bool)


def normalize_output_axes(
    trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...], ndim: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Non-negative, sorted `trace_axes` and `diagonal_axes` for an `ndim` output.

    Raises:
      ValueError: an axis outside `[-ndim, ndim)`, an axis given twice, or an
        axis in both tuples.
    """
    out = []
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"`{name}` has axis {a}, out of range for the network output "
                    f"of rank {ndim}; use axes in [{-ndim}, {ndim}), e.g. (-1,) "
                    "for the logit axis."
                )
        normalized = tuple(sorted(a % ndim for a in axes))
        if len(set(normalized)) != len(normalized):
            raise ValueError(
                f"`{name}` names an axis twice: got {axes!r}, which is {normalized} for an "
                f"output of rank {ndim}. List each axis once."
            )
        out.append(normalized)
    overlap = set(out[0]) & set(out[1])
    if overlap:
        raise ValueError(
            f"`trace_axes` {trace_axes!r} and `diagonal_axes` {diagonal_axes!r} overlap on "
            f"output axis {sorted(overlap)}; an axis is either traced (summed) or kept "
            "diagonal, not both."
        )
    return out[0], out[1]


def matching_inputs(x1: Any, x2: Any, batch_axes: Any) -> None:
    """Raises a `ValueError` if `x1` and `x2` differ other than in batch size."""
    if x2 is None:
        return
    leaves1, tree1 = jax.tree_util.tree_flatten(x1)
    leaves2, tree2 = jax.tree_util.tree_flatten(x2)
    if tree1 != tree2:
        raise ValueError(
            f"`x1` and `x2` must have the same structure; got {tree1} and {tree2}. "
            "Pass inputs of the same kind, or `x2=None` for x2 = x1."
        )
    if batch_axes is None or isinstance(batch_axes, int):
        batch_axes = [0 if batch_axes is None else batch_axes] * len(leaves1)
    else:
        batch_axes = jax.tree_util.tree_leaves(batch_axes)
    for a, b, axis in zip(leaves1, leaves2, batch_axes, strict=False):
        s1, s2 = _shape_without(a, axis), _shape_without(b, axis)
        if s1 != s2:
            raise ValueError(
                f"`x1` and `x2` must agree in every axis but the batch axis {axis}; got "
                f"x1.shape={tuple(a.shape)} and x2.shape={tuple(b.shape)}. Give x2 the "
                f"per-example shape {s1}."
            )


def _shape_without(x: Any, axis: int | None) -> tuple[int, ...]:
    shape = tuple(getattr(x, "shape", ()))
    if axis is None or not shape:
        return shape
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


def kernel_names(get: Any, choices: tuple[str, ...]) -> tuple[str, ...]:
    """`get` of a `kernel_fn` (None, a name or a tuple of names) as a tuple."""
    if get is None:
        return ("nngp", "ntk")
    names = (get,) if isinstance(get, str) else get
    if not isinstance(names, (tuple, list)) or not names or any(n not in choices for n in names):
        raise ValueError(
            f"`get` must be one of {choices}, a tuple of them, or None for ('nngp', 'ntk'); got {get!r}."
        )
    return tuple(names)
