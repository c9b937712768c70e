"""The one home of argument checks: each says which argument, what it got, and what would work.

One convention throughout the package: a value of the wrong *type* (a float
where an int is needed, a string for an axis) is a `TypeError`; a value of the
right type that is out of range or not among the choices is a `ValueError`.
Both are a `UsageError` (`UsageTypeError` for the former), the one type the
command line reports as a usage error (exit code 2).
Messages read "`name` must be ...; got ...", plus the fix where there is one.

This module imports neither JAX nor NT at import time (the command line checks
its arguments before it loads them).
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Sequence
from typing import Any


class UsageError(ValueError):
    """An argument or configuration the package refuses: the caller's to fix, not a failure.

    Every check here raises it (or `UsageTypeError`, for a value of the wrong type), and so do the
    package's refusals of an argument elsewhere (a budget too small, an output file holding
    another kernel, a bad configuration). It is a `ValueError`; the command line prints its
    message in one line and exits with `exit_code` 2, as argparse does for its own errors. A
    `ValueError` raised by JAX, NumPy or NT is not one: a failure (exit code 1).
    """

    exit_code = 2


class UsageTypeError(UsageError, TypeError):
    """A `UsageError` for a value of the wrong type: a `TypeError` too."""


@contextlib.contextmanager
def computed_values() -> Any:
    """Inside it, the package is called on values it computed (a network's kernels), not on the
    caller's arguments: a refusal there (NaN entries, say) is a failure, so its `UsageError` becomes
    a plain `ValueError` with the same message (exit code 1 on the command line, not 2)."""
    try:
        yield
    except UsageError as e:
        raise ValueError(str(e)) from e


def is_int(value: Any) -> bool:
    """An int-like value (``operator.index`` works) that is not a bool."""
    try:
        operator.index(value)
    except TypeError:
        return False
    return not isinstance(value, bool)


def integer(name: str, value: Any) -> int:
    """`value` as an int; a `TypeError` for anything else (bools and floats included)."""
    if not is_int(value):
        raise UsageTypeError(f"`{name}` must be an int; got {value!r} of type {type(value).__name__}.")
    return operator.index(value)


def boolean(name: str, value: Any) -> bool:
    """`value` as a bool: True, False or a NumPy bool; a `TypeError` for anything else (0, "no", None)."""
    if not isinstance(value, (bool, _numpy_bool())):
        raise TypeError(f"`{name}` must be True or False; got {value!r} of type {type(value).__name__}.")
    return bool(value)


def _numpy_bool() -> type:
    import numpy as np  # not at import time (see the module docstring)

    return np.bool_


def positive_int(name: str, value: Any) -> int:
    """An int >= 1."""
    return _int_at_least(name, value, 1)


def _int_at_least(name: str, value: Any, least: int) -> int:
    value = integer(name, value)
    if value < least:
        raise UsageError(f"`{name}` must be an int >= {least}; got {name}={value}.")
    return value


def int_between(name: str, value: Any, least: int, most: int, what: str = "") -> int:
    """An int in ``[least, most]``; `what` (e.g. "hidden layers") says what it counts."""
    value = integer(name, value)
    if not least <= value <= most:
        counts = f" ({what})" if what else ""
        raise UsageError(f"`{name}` must be an int in [{least}, {most:,}]{counts}; got {name}={value}.")
    return value


#: Seeds are ints in [0, 2**32): NumPy's generators refuse negative seeds, and JAX without x64
#: keeps only the low 32 bits of ``PRNGKey(seed)`` (2**32 + 1 would give seed 1's parameters).
SEED_LIMIT = 2**32


def seed(name: str, value: Any) -> int:
    """A seed of JAX's and NumPy's generators: an int in ``[0, 2**32)`` (`SEED_LIMIT`)."""
    value = integer(name, value)
    if not 0 <= value < SEED_LIMIT:
        raise UsageError(
            f"`{name}` must be an int in [0, 2**32) (a seed of JAX's and NumPy's random generators, "
            f"which ignore higher bits or refuse negative seeds); got {name}={value}."
        )
    return value


def count(name: str, value: Any, size: int | None, what: str) -> int:
    """An int in ``[1, size]`` (at least 1 when `size` is None), `size` being the number of `what`
    (e.g. "eigenvalues"): how many of them to take."""
    value = integer(name, value)
    upper = "" if size is None else f" and at most {size} (the number of {what})"
    if value < 1 or (size is not None and value > size):
        raise UsageError(f"`{name}` must be at least 1{upper}; got {name}={value}.")
    return value


def real(name: str, value: Any) -> float:
    """A real number (int or float, not a bool), finite or not, as a float."""
    if isinstance(value, bool) or (not isinstance(value, (int, float)) and not _is_real_scalar(value)):
        raise UsageTypeError(f"`{name}` must be a real number; got {value!r} of type {type(value).__name__}.")
    return float(value)


def _is_real_scalar(value: Any) -> bool:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    # NumPy scalars and 0-d arrays (NumPy's or concrete JAX ones: `t=jnp.array(1.0)`) of a real,
    # non-bool dtype.
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "shape", None) != ():
        return False
    return np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)


def finite(name: str, value: Any) -> float:
    """A finite real number."""
    value = real(name, value)
    if not math.isfinite(value):
        raise UsageError(f"`{name}` must be finite; got {name}={value!r}.")
    return value


def non_negative(name: str, value: Any) -> float:
    """A finite real number >= 0."""
    value = finite(name, value)
    if value < 0:
        raise UsageError(f"`{name}` must be >= 0; got {name}={value!r}.")
    return value


def positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    value = finite(name, value)
    if not value > 0:
        raise UsageError(f"`{name}` must be > 0; got {name}={value!r}.")
    return value


def real_array(name: str, value: Any, *, finite: bool = True) -> Any:
    """`value` as a float64 NumPy array of real numbers (bools and ints included), finite unless
    ``finite=False``; a `TypeError` for strings, objects and complex numbers (whose imaginary
    part a cast would drop with a mere warning), a `ValueError` for NaN or infinite entries."""
    import numpy as np

    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested sequences
        raise UsageTypeError(
            f"`{name}` must be an array of real numbers; got {_brief(value)} ({e})."
        ) from None
    real_dtype(name, array.dtype)
    array = array.astype(np.float64, copy=False)
    if finite:
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise UsageError(
                f"`{name}` must be finite; it has {int(bad.sum())} NaN or infinite entries of "
                f"{array.size}, the first {array[first]} at index {first}."
            )
    return array


def real_dtype(name: str, dtype: Any) -> None:
    """A `TypeError` unless `dtype` (of the array `name`, checked before its values are read, e.g. of a
    memmap or Zarr array) is real: bool, int or floating (bfloat16 and float8 included)."""
    if not _is_real_dtype(dtype):
        hint = (
            f" (complex values are not supported; pass np.real({name}) if the imaginary part is round-off)"
            if dtype.kind == "c"
            else "; pass numbers, e.g. a float array"
        )
        raise UsageTypeError(f"`{name}` must be an array of real numbers; got dtype {dtype}{hint}.")


def _is_real_dtype(dtype: Any) -> bool:
    if dtype.kind in "biuf":
        return True
    if dtype.kind != "V":
        return False
    try:  # bfloat16, float8_*: JAX's floating types, registered with NumPy by ml_dtypes
        import ml_dtypes

        ml_dtypes.finfo(dtype)
    except (ImportError, TypeError, ValueError):
        return False
    return True


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


KIB, MIB, GIB = 1024, 1024**2, 1024**3
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": KIB,
    "mib": MIB,
    "gib": GIB,
    "tib": 1024**4,
}


def parse_bytes(name: str, value: Any) -> int | None:
    """`value` (None, an int of bytes, or a string such as ``"2GiB"``, ``"512 MB"``) in bytes."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageTypeError(
            f"`{name}` must be an int number of bytes or a string such as '2GiB'; got {value!r} of type "
            f"{type(value).__name__}."
        )
    if is_int(value):  # NumPy ints too (e.g. a size computed with NumPy)
        if value < 1:
            raise UsageError(f"`{name}` must be a positive number of bytes; got {value!r}.")
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            number = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if not math.isfinite(number):  # e.g. "1e400GiB": float() reads it as infinity
                raise UsageError(
                    f"`{name}` must be a finite number of bytes; got {value!r}, which reads as infinity. "
                    "Pass a size such as '2GiB', or leave it out for the default."
                )
            if number >= 1:
                return int(number)
        raise UsageError(
            f"`{name}` must be a number of bytes or a string such as '2GiB', '512MiB' or '1.5GB' "
            f"(units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB); got {value!r}."
        )
    raise UsageTypeError(
        f"`{name}` must be an int number of bytes or a string such as '2GiB'; got {value!r} of type "
        f"{type(value).__name__}."
    )


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` if it is one of `choices`, of the same type (so True is not 1, nor 1.0 the int 1)."""
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return value
    raise UsageError(f"`{name}` must be one of {list(choices)}; got {value!r}.")


def implementation(value: Any) -> Any:
    """Returns `value` as an `nt.NtkImplementation`, or raises a clear error."""
    import neural_tangents as nt

    if isinstance(value, nt.NtkImplementation):
        return value
    if is_int(value):
        try:
            return nt.NtkImplementation(operator.index(value))
        except ValueError:
            pass
    choices = ", ".join(f"NtkImplementation.{m.name} ({m.value})" for m in nt.NtkImplementation)
    error = UsageError if is_int(value) or isinstance(value, str) else UsageTypeError
    raise error(
        f"`implementation` must be one of {choices}; got {value!r}. "
        "JACOBIAN_CONTRACTION (1) is the default and works for every model."
    )


def axes_tuple(name: str, axes: Any) -> tuple[int, ...]:
    """`axes` (an int or a sequence of ints) as a tuple, or a `TypeError`."""
    if is_int(axes):
        return (int(axes),)
    if isinstance(axes, Sequence) and not isinstance(axes, str) and all(map(is_int, axes)):
        return tuple(int(a) for a in axes)
    raise UsageTypeError(f"`{name}` must be an int or a tuple of ints, such as (-1,) or (); got {axes!r}.")


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
                raise UsageError(
                    f"`{name}` has axis {a}, out of range for the network output "
                    f"of rank {ndim}; use axes in [{-ndim}, {ndim}), e.g. (-1,) "
                    "for the logit axis."
                )
        normalized = tuple(sorted(a % ndim for a in axes))
        if len(set(normalized)) != len(normalized):
            raise UsageError(
                f"`{name}` names an axis twice: got {axes!r}, which is {normalized} for an "
                f"output of rank {ndim}. List each axis once."
            )
        out.append(normalized)
    overlap = set(out[0]) & set(out[1])
    if overlap:
        raise UsageError(
            f"`trace_axes` {trace_axes!r} and `diagonal_axes` {diagonal_axes!r} overlap on "
            f"output axis {sorted(overlap)}; an axis is either traced (summed) or kept "
            "diagonal, not both."
        )
    return out[0], out[1]


def matching_inputs(x1: Any, x2: Any, batch_axes: Any) -> bool:
    """Raises a `ValueError` if `x1` and `x2` differ other than in batch size.

    Returns:
      Whether `x1` and `x2` differ in batch size (False when `x2` is None).
    """
    if x2 is None:
        return False
    import jax

    leaves1, tree1 = jax.tree_util.tree_flatten(x1)
    leaves2, tree2 = jax.tree_util.tree_flatten(x2)
    if tree1 != tree2:
        raise UsageError(
            f"`x1` and `x2` must have the same structure; got {tree1} and {tree2}. "
            "Pass inputs of the same kind, or `x2=None` for x2 = x1."
        )
    if batch_axes is None or isinstance(batch_axes, int):
        batch_axes = [0 if batch_axes is None else batch_axes] * len(leaves1)
    else:
        batch_axes = jax.tree_util.tree_leaves(batch_axes)
    batch_sizes_differ = False
    for a, b, axis in zip(leaves1, leaves2, batch_axes, strict=False):
        s1, s2 = _shape_without(a, axis), _shape_without(b, axis)
        if s1 != s2:
            raise UsageError(
                f"`x1` and `x2` must agree in every axis but the batch axis {axis}; got "
                f"x1.shape={tuple(a.shape)} and x2.shape={tuple(b.shape)}. Give x2 the "
                f"per-example shape {s1}."
            )
        batch_sizes_differ |= tuple(getattr(a, "shape", ())) != tuple(getattr(b, "shape", ()))
    return batch_sizes_differ


def has_parameters(params: Any) -> None:
    """A `ValueError` when `params` holds no leaf: the NTK sums over parameters, so it needs some."""
    import jax

    if not jax.tree_util.tree_leaves(params):
        raise UsageError(
            f"`params` must hold at least one array; got {params!r}, which holds none. The kernel is a "
            "sum over the network's parameters: pass the parameters the network is applied with "
            "(those its init_fn returns), or a network that has some."
        )


def matching_output_axes(
    fx1: Any, fx2: Any, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...]
) -> None:
    """Raises a `ValueError` if `f(x1)` and `f(x2)` differ in size on a traced or diagonal axis.

    The kernel pairs these axes of the two outputs element by element, so their
    sizes must match; this matters when they include the batch axis (e.g.
    `diagonal_axes=(0,)`) and `x1`, `x2` have different batch sizes.
    """
    import jax

    for a, b in zip(jax.tree_util.tree_leaves(fx1), jax.tree_util.tree_leaves(fx2), strict=True):
        traced, diagonal = normalize_output_axes(trace_axes, diagonal_axes, len(a.shape))
        for name, axes in (("trace_axes", traced), ("diagonal_axes", diagonal)):
            for axis in axes:
                if a.shape[axis] != b.shape[axis]:
                    raise UsageError(
                        f"`{name}` has output axis {axis}, where f(x1) and f(x2) differ in size: "
                        f"f(x1).shape={tuple(a.shape)}, f(x2).shape={tuple(b.shape)}. An axis in "
                        f"`{name}` pairs the outputs of x1 and x2 element by element; pass x1 and "
                        "x2 of the same batch size (or x2=None), or leave that axis out."
                    )


def _shape_without(x: Any, axis: int | None) -> tuple[int, ...]:
    shape = tuple(getattr(x, "shape", ()))
    if axis is None or not shape:
        return shape
    if not is_int(axis):
        raise UsageTypeError(f"`vmap_axes` must be {VMAP_AXES_FORMS}; got the input batch axis {axis!r}.")
    if not -len(shape) <= axis < len(shape):
        # NT would take it modulo the rank: axis 5 of a rank-2 input would silently mean axis 1.
        raise UsageError(
            f"`vmap_axes` puts the batch axis of an input of shape {shape} at {axis}, out of range; use an "
            f"axis in [{-len(shape)}, {len(shape)}) (e.g. vmap_axes=0 when examples are along axis 0)."
        )
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


VMAP_AXES_FORMS = (
    "None, an int (e.g. 0: examples along axis 0 of the inputs and the output), or a triple "
    "(in_axes, out_axes, kwargs_axes) of ints or PyTrees of ints, as in nt.empirical_ntk_fn"
)


def vmap_axes(value: Any) -> Any:
    """`value` unchanged if NT can use it as ``vmap_axes`` (every leaf an int; None: no axis), else a
    `TypeError`."""
    import jax

    parts = value if isinstance(value, tuple) and len(value) == 3 else (value,)
    for part in parts:
        for leaf in jax.tree_util.tree_leaves(part):
            if not is_int(leaf):
                raise UsageTypeError(f"`vmap_axes` must be {VMAP_AXES_FORMS}; got {value!r}.")
    return value


def kernel_names(get: Any, choices: tuple[str, ...]) -> tuple[str, ...]:
    """`get` of a `kernel_fn` (None, a name or a tuple of names) as a tuple."""
    if get is None:
        return ("nngp", "ntk")
    names = (get,) if isinstance(get, str) else get
    if (
        not isinstance(names, (tuple, list))
        or not names
        or not all(isinstance(n, str) and n in choices for n in names)
        or len(set(names)) != len(names)
    ):
        raise UsageError(
            f"`get` must be one of {choices}, a tuple of distinct ones, or None for ('nngp', 'ntk'); "
            f"got {get!r}."
        )
    return tuple(names)
