"""What the adapters share: importing the model library, parameter names, the training-mode error."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from nt_pntk._src import checks

PyTree = Any


def require(module: str, distribution: str, minimum: str, extra: str, caller: str) -> ModuleType:
    """`module` imported, or an `ImportError` naming the release and the extra that provide it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        try:
            found = f"{distribution} {importlib.import_module(distribution).__version__} is installed"
        except (ImportError, AttributeError):
            found = f"{distribution} is not installed"
        raise ImportError(
            f"{caller} needs {distribution}>={minimum} (`import {module}` failed: {e}); {found}. "
            f"Install it with: pip install 'nt-pntk[{extra}]'"
        ) from e


def path_name(path: Sequence[Any], skip: tuple[str, ...] = ()) -> str:
    """A PyTree key path as a dotted name (``layers.0.weight``), attributes named in `skip` left out."""
    parts = []
    for key in path:
        for field in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
            if hasattr(key, field):
                part = str(getattr(key, field))
                break
        else:  # another key type: its own printed form
            part = str(key).strip(".[]'\"")
        if part not in skip:
            parts.append(part)
    return ".".join(parts)


def flat_names(paths: Sequence[Sequence[Any]], skip: tuple[str, ...] = ()) -> list[str]:
    """Unique dotted names of the leaves at `paths` (JAX's ``keystr`` where two would coincide)."""
    import jax

    names = [path_name(p, skip) or "value" for p in paths]
    if len(set(names)) < len(names):
        names = [jax.tree_util.keystr(tuple(p)) for p in paths]
    return names


def is_inexact_array(leaf: Any) -> bool:
    """A floating or complex array: what can be differentiated."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    # jnp.issubdtype knows JAX's own dtypes (a PRNG key's), which NumPy's refuses.
    return isinstance(leaf, (jax.Array, np.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def training_mode_error(where: str, what: str, fix: str) -> checks.UsageError:
    """The error for a model whose outputs couple the examples of a batch (or draw random numbers)."""
    return checks.UsageError(
        f"{where} is in training mode: {what}. Then an example's outputs depend on the other examples "
        f"of the batch (or on a random draw), and its kernel is not defined. {fix}"
    )


def named(fn: Callable, name: str) -> Callable:
    """`fn` with a readable, process-stable ``__qualname__`` (kernel records and messages show it)."""
    fn.__name__ = fn.__qualname__ = name
    return fn


# (module that defines the base class, its name, the adapter for it)
_LIBRARIES = (
    ("flax.linen", "Module", "nt_pntk.from_linen(module, variables)"),
    ("flax.nnx", "Module", "nt_pntk.from_nnx(module)"),
    ("equinox", "Module", "nt_pntk.from_equinox(module)"),
)


def hint(module: Any) -> str:
    """A sentence naming the right adapter when `module` belongs to another (imported) model library."""
    import sys

    for library, base, adapter in _LIBRARIES:
        cls = getattr(sys.modules.get(library), base, None)
        if cls is not None and isinstance(module, cls):
            return f" For a {library} module use {adapter}."
    return ""
