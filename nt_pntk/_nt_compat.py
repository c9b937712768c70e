"""Make neural-tangents 0.6.5 import and run on current JAX, without TensorFlow.

neural-tangents (NT) 0.6.5 is the last release. It imports TensorFlow at import
time (through ``neural_tangents.experimental``) and uses JAX internals that
later JAX releases moved or removed. This module installs an import hook that
rewrites a handful of lines in NT's own modules *as they are loaded*: nothing
on disk changes, JAX itself is not touched, and each patch applies only when
the running JAX (or SciPy, or environment) actually needs it. On a JAX where
NT works unmodified, every patch is skipped.

Each patch is listed in ``PATCHES`` with the reason it exists. If NT's source
does not contain the text a needed patch expects (another NT version), import
fails with an error saying so, instead of running half-patched code.

``install()`` is called by ``import nt_pntk``; importing ``neural_tangents``
afterwards works. ``applied_patches()`` lists what was applied in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from typing import Any

import jax

SUPPORTED_NT_VERSION = "0.6.5"
#: Oldest JAX this adaptation is tested on (`noxfile.py` runs the suite there).
OLDEST_TESTED_JAX = "0.4.30"

_applied: list[str] = []


# --- Feature probes: each answers "does the running stack need this patch?" ---


def _missing_from(module_name: str, *names: str) -> bool:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return True
    return not all(hasattr(module, name) for name in names)


def _tensorflow_unavailable() -> bool:
    return any(importlib.util.find_spec(m) is None for m in ("tensorflow", "tf2jax"))


def _linearize_takes_flat_tree() -> bool:
    # JAX <= 0.6: `linearize(traceable: WrappedFun, *primals)` returning
    # PartialVals. Newer JAX: `linearize(traceable, primals_ft, has_aux, ...)`.
    from jax._src.interpreters import ad

    params = list(inspect.signature(ad.linearize).parameters.values())
    return len(params) < 2 or params[1].kind is not inspect.Parameter.VAR_POSITIONAL


def _cost_analysis_is_dict() -> bool:
    # `Compiled.cost_analysis()` returned a list of dicts up to JAX 0.4.x and a
    # dict since. Probing it needs a compile, so decide from the return type
    # annotation-free way: compile a trivial function once.
    analysis = jax.jit(lambda x: x + 1).lower(1.0).compile().cost_analysis()
    return isinstance(analysis, dict)


def _scipy_eigvalsh_lacks_eigvals() -> bool:
    import scipy.linalg

    return "eigvals" not in inspect.signature(scipy.linalg.eigvalsh).parameters


def _eval_context_leaks_tracers() -> bool:
    # Since JAX 0.4.36 (the "stackless" tracing rewrite) `core.eval_context()`
    # no longer lifts values out of an enclosing `vmap`/`jit`; computing on a
    # tracer inside it and caching the result leaks the tracer.
    from jax._src import core

    return not hasattr(core, "cur_sublevel")


def _always() -> bool:
    return True


# --- Replacement implementations referenced by patched NT code ---------------


class _OutputPval:
    """Stands in for the old `PartialVal` of one linearized output."""

    def __init__(self, tangent_is_zero: bool):
        self._tangent_is_zero = tangent_is_zero

    def is_known(self) -> bool:
        return self._tangent_is_zero


def linearize(fn_flat, *primals_in_flat, has_aux: bool = False):
    """`ad.linearize` with the pre-0.7 calling convention, on the new JAX API.

    NT calls ``ad.linearize(wrapped_fun, *primals)`` and reads back
    ``(primals_out, pvals, jaxpr, consts)`` where ``pvals[i].is_known()`` means
    "output i has a zero tangent and no outvar in ``jaxpr``".
    """
    from jax._src import tree_util
    from jax._src.interpreters import ad

    assert not has_aux
    primals_ft = tree_util.FlatTree.flatten(tuple(primals_in_flat))
    out_primals_ft, out_zeros, jaxpr, consts = ad.linearize(
        lambda *args: fn_flat.call_wrapped(*args), primals_ft, has_aux=False
    )
    primals_out = list(out_primals_ft.vals)
    return primals_out, [_OutputPval(z) for z in out_zeros], jaxpr, consts


def flops_from_cost_analysis(analysis: Any) -> float:
    """FLOPs from `cost_analysis()`, which is a list of dicts or a dict."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return analysis["flops"]


def eval_context():
    """Context for NT's cached host-side precomputations.

    Old JAX's `core.eval_context()` made values computed inside it concrete
    even under an enclosing trace. Current JAX cannot do that, so NT's
    `lru_cache`d closures would cache tracers. We keep the computation where it
    is (it then traces with the surrounding transformation) and rely on
    `uncached` below to drop the cache.
    """
    return contextlib.nullcontext()


def uncached(maxsize=None):
    """Replaces NT's `functools.lru_cache(1)` on closures that may see tracers."""
    del maxsize

    def decorator(fn):
        return fn

    return decorator


# --- The patch list -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Patch:
    module: str
    old: str
    new: str
    needed: Callable[[], bool]
    why: str
    count: int = 1  # occurrences of `old` expected; -1 means "at least one"


_C = "nt_pntk._nt_compat"
_JAX_CORE_NAMES = ("Jaxpr", "JaxprEqn", "Literal", "ShapedArray", "Value", "Var")
_RULES_CORE_NAMES = ("AbstractValue", "Primitive", *_JAX_CORE_NAMES[:4], "Var")


def _import_line_patches(module: str, names: tuple[str, ...]) -> list[Patch]:
    return [
        Patch(
            module,
            f"from jax.core import {name}\n",
            f"from jax._src.core import {name}\n",
            lambda name=name: _missing_from("jax.core", name),
            f"`jax.core.{name}` was removed from the public `jax.core` (JAX 0.7+).",
        )
        for name in names
    ]


PATCHES: tuple[Patch, ...] = (
    Patch(
        "neural_tangents",
        "from . import experimental\n",
        "",
        _tensorflow_unavailable,
        "`neural_tangents.experimental` is the TensorFlow bridge; importing it "
        "eagerly makes TensorFlow a hard dependency. It stays importable by name "
        "where TensorFlow and tf2jax are installed.",
    ),
    *_import_line_patches("neural_tangents._src.empirical", _JAX_CORE_NAMES),
    *_import_line_patches("neural_tangents._src.utils.rules", _RULES_CORE_NAMES),
    Patch(
        "neural_tangents._src.empirical",
        "from jax import core\n",
        "from jax._src import core\n",
        lambda: _missing_from("jax.core", "Var", "Literal"),
        "NT reads `core.Var`/`core.Literal`, gone from the public `jax.core`.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "from jax.util import safe_map as map\nfrom jax.util import safe_zip as zip\n",
        "from jax._src.util import safe_map as map\nfrom jax._src.util import safe_zip as zip\n",
        lambda: _missing_from("jax.util", "safe_map", "safe_zip"),
        "`jax.util` was removed (JAX 0.7+); the helpers live in `jax._src.util`.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: _missing_from(
            "jax.interpreters.ad", "reducing_transposes", "source_info_util", "config"
        ),
        "The public `jax.interpreters.ad` no longer re-exports "
        "`reducing_transposes`, `source_info_util` and `config`.",
    ),
    Patch(
        "neural_tangents._src.utils.rules",
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: _missing_from("jax.interpreters.ad", "add_jaxvals_p"),
        "The public `jax.interpreters.ad` no longer re-exports `add_jaxvals_p`.",
    ),
    Patch(
        "neural_tangents._src.utils.rules",
        "STRUCTURE_RULES[jax.interpreters.ad.zeros_like_p] = _eye_s\n"
        "JACOBIAN_RULES[jax.interpreters.ad.zeros_like_p] = _zeros_like_j\n",
        "if hasattr(jax.interpreters.ad, 'zeros_like_p'):\n"
        "  STRUCTURE_RULES[jax.interpreters.ad.zeros_like_p] = _eye_s\n"
        "  JACOBIAN_RULES[jax.interpreters.ad.zeros_like_p] = _zeros_like_j\n",
        lambda: _missing_from("jax.interpreters.ad", "zeros_like_p"),
        "`ad.zeros_like_p` was removed (JAX 0.4.36+): no rule is needed for a "
        "primitive that no longer exists.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "    outs = ad.linearize(fn_flat, *primals_in_flat, has_aux=False)\n",
        f"    import {_C}\n    outs = {_C}.linearize(fn_flat, *primals_in_flat)\n",
        _linearize_takes_flat_tree,
        "`ad.linearize` changed its signature and return value (JAX 0.7+).",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "eqn.primitive.call_primitive or eqn.primitive.map_primitive",
        "eqn.primitive.call_primitive or getattr(eqn.primitive, 'map_primitive', False)",
        lambda: not hasattr(importlib.import_module("jax._src.core").Primitive, "map_primitive"),
        "`Primitive.map_primitive` was removed with `xla_pmap_p`'s special casing.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "  if type(a) is core.DShapedArray:\n",
        "  if type(a) is getattr(core, 'DShapedArray', None):\n",
        lambda: _missing_from("jax._src.core", "DShapedArray"),
        "Dynamic shapes (`DShapedArray`) were removed from JAX.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "  if ad.config.jax_enable_checks:\n",
        "  if jax.config.jax_enable_checks:\n",
        _always,
        "`ad.config` is an implementation detail; `jax.config` is the public flag.",
    ),
    Patch(
        "neural_tangents._src.empirical",
        "    analysis = e.compile().cost_analysis()[0]\n",
        f"    import {_C}\n"
        f"    return {_C}.flops_from_cost_analysis(e.compile().cost_analysis())\n",
        _cost_analysis_is_dict,
        "`Compiled.cost_analysis()` returns a dict, not a list of dicts; "
        "`[0]` raised `KeyError: 0` in AUTO implementation selection.",
    ),
    Patch(
        "neural_tangents._src.predict",
        "    max_eva = sp.linalg.eigvalsh(ntk_train_train,\n"
        "                                 eigvals=(",
        "    max_eva = sp.linalg.eigvalsh(ntk_train_train,\n"
        "                                 subset_by_index=(",
        _scipy_eigvalsh_lacks_eigvals,
        "SciPy 1.14 removed `eigvalsh(eigvals=...)`; `subset_by_index` replaces it.",
    ),
    Patch(
        "neural_tangents._src.predict",
        "    with jax.core.eval_context():\n",
        f"    import {_C}\n    with {_C}.eval_context():\n",
        _eval_context_leaks_tracers,
        "`core.eval_context()` inside `vmap` leaks a tracer into NT's cache "
        "(`UnexpectedTracerError` in `gradient_descent_mse_ensemble`).",
        count=-1,
    ),
    Patch(
        "neural_tangents._src.predict",
        "  @lru_cache(1)\n",
        f"  @__import__('{_C}', fromlist=['x']).uncached(1)\n",
        _eval_context_leaks_tracers,
        "The cached closures would hold tracers of the first caller's trace.",
        count=-1,
    ),
)


def _patch_source(module: str, source: str) -> str:
    for patch in PATCHES:
        if patch.module != module or not patch.needed():
            continue
        found = source.count(patch.old)
        if found == 0 or (patch.count > 0 and found != patch.count):
            raise ImportError(
                f"nt_pntk cannot adapt `{module}` for this JAX: expected "
                f"{patch.count if patch.count > 0 else 'some'} occurrence(s) of "
                f"{patch.old!r}, found {found}. nt_pntk supports neural-tangents=="
                f"{SUPPORTED_NT_VERSION}; install that version "
                f"(`pip install --no-deps neural-tangents=={SUPPORTED_NT_VERSION}`)."
            )
        source = source.replace(patch.old, patch.new)
        _applied.append(f"{module}: {patch.why}")
    return source


class _PatchingLoader(importlib.abc.Loader):
    """Loads an NT module from its source with `PATCHES` applied (no .pyc)."""

    def __init__(self, fullname: str, origin: str):
        self._fullname = fullname
        self._origin = origin

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        with open(self._origin, encoding="utf-8") as f:
            source = _patch_source(self._fullname, f.read())
        exec(compile(source, self._origin, "exec"), module.__dict__)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHED_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchingLoader(fullname, spec.origin)
        return spec


_PATCHED_MODULES = frozenset(p.module for p in PATCHES)
_finder = _PatchingFinder()


def install() -> None:
    """Install the import hook for NT (idempotent).

    Does nothing if NT is not installed or not version 0.6.5, or if NT was
    already imported (then it evidently works without us).

    Raises:
      ImportError: if NT was already imported *before* nt_pntk and the hook is
        needed; the message says to import nt_pntk first.
    """
    if _finder in sys.meta_path:
        return
    try:
        version = importlib.metadata.version("neural-tangents")
    except importlib.metadata.PackageNotFoundError:
        return
    if version != SUPPORTED_NT_VERSION:
        return
    sys.meta_path.insert(0, _finder)


def applied_patches() -> tuple[str, ...]:
    """The patches applied so far in this process, each with its reason."""
    return tuple(_applied)
