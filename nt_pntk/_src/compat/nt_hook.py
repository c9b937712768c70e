"""Make neural-tangents 0.6.5 import and run on JAX 0.4.30 – 0.10.x, without TensorFlow.

neural-tangents (NT) 0.6.5 is the last release. It imports TensorFlow at import
time (through ``neural_tangents.experimental``) and uses JAX internals that
later JAX releases deprecated, moved or removed. This module installs an import
hook that rewrites a handful of lines in NT's own modules *as they are loaded*:
nothing on disk changes, JAX itself is not touched, and each patch applies only
when the running JAX (or SciPy, or environment) actually needs it. On a stack
where NT works unmodified, every patch is skipped.

The probes run when NT's modules load, never trigger JAX's deprecation warnings
(a name that JAX serves only through a deprecation shim counts as gone), never
compile and never initialize a backend, so ``import neural_tangents`` stays as
side-effect free as without nt_pntk.

Each patch is listed in ``PATCHES`` with the reason it exists. The patched files
are pinned by their sha256 in NT 0.6.5 (``NT_SOURCE_SHA256``): another NT
version, or a modified file, is an `ImportError` that names the file, both
digests and the fix, instead of half-patched code. Patched code reaches the
helpers below as ``_nt_pntk_compat`` (set in the module's namespace by the
loader). The patched text is registered with `linecache` and served by the
loader's ``get_source``: tracebacks, `inspect` and debuggers show what runs.

``install()`` is called by ``import nt_pntk`` and, through the startup ``.pth``
file installed with nt_pntk, when ``neural_tangents`` is imported first.
``applied_patches()`` lists what was applied in this process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import linecache
import logging
import sys
from collections.abc import Callable
from typing import Any, Literal

SUPPORTED_NT_VERSION = "0.6.5"

# --- Feature probes: each answers "does the running stack need this patch?" ---


def _has_plain(module_name: str, *names: str) -> bool:
    """Whether `module_name` defines all `names` as ordinary attributes.

    A name JAX still serves through its deprecation shim (a module
    ``__getattr__`` that warns) counts as absent: NT's use of it would raise a
    `DeprecationWarning` now and an error in a later JAX. Looking into the
    module's ``__dict__`` does not trigger the shim.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return all(name in vars(module) for name in names)


def _missing_from(module_name: str, *names: str) -> bool:
    return not _has_plain(module_name, *names)


def _tensorflow_unavailable() -> bool:
    return any(importlib.util.find_spec(m) is None for m in ("tensorflow", "tf2jax"))


@functools.cache
def _linearize_takes_flat_tree() -> bool:
    # Up to JAX 0.9: `linearize(traceable: WrappedFun, *primals)` returning
    # `(primals_out, PartialVals, jaxpr, consts)`. Newer JAX:
    # `linearize(traceable, primals_ft: FlatTree, has_aux, ...)`.
    from jax._src.interpreters import ad

    params = list(inspect.signature(ad.linearize).parameters.values())
    return len(params) < 2 or params[1].kind is not inspect.Parameter.VAR_POSITIONAL


@functools.cache
def _linearize_returns_zero_flags() -> bool:
    # JAX 0.10.1 kept the old signature but returns a bool per output ("tangent is
    # zero") where NT expects a `PartialVal` with `.is_known()`. Read from the source:
    # calling `linearize` would trace, and tracing creates arrays on a backend.
    from jax._src.interpreters import ad

    try:
        return "out_tangents_zeros" in inspect.getsource(ad.linearize)
    except (OSError, TypeError):  # no source: the adapter handles both conventions
        return True


def _linearize_changed() -> bool:
    return _linearize_takes_flat_tree() or _linearize_returns_zero_flags()


def _cost_analysis_may_be_dict() -> bool:
    # Up to JAX 0.4.3x `Compiled.cost_analysis()` wrapped XLA's dict in a
    # one-element list (annotated so on `XlaExecutable`); since 0.5 it is the dict.
    # Decided from the annotation: probing would need a compile, which would
    # initialize a backend at import time.
    from jax._src import stages

    executable = getattr(stages, "XlaExecutable", None)
    if executable is None or not hasattr(executable, "cost_analysis"):
        return True
    annotation = inspect.signature(executable.cost_analysis).return_annotation
    return not str(annotation).startswith("list")


def _scipy_eigvalsh_has_subset_by_index() -> bool:
    # `eigvalsh(eigvals=...)` warns since SciPy 1.5 and is gone since 1.14;
    # `subset_by_index` (1.5+) is the same argument under its new name.
    import scipy.linalg

    return "subset_by_index" in inspect.signature(scipy.linalg.eigvalsh).parameters


@functools.cache
def _eval_context_rejects_tracers() -> bool:
    # Up to JAX 0.4.35 `core.eval_context()` made only the *new* work eager:
    # operations on tracers of an enclosing transformation still went to that
    # transformation. Since the "stackless" rewrite (0.4.36, no more
    # `cur_sublevel`) it is a bare eval trace that raises
    # `UnexpectedTracerError` on any tracer. `jax.ensure_compile_time_eval()`
    # is JAX's public replacement: eager where the inputs are concrete, staged
    # into the enclosing trace where they are not (though before JAX 0.8 it
    # stages custom-derivative functions; see `compile_time_eval`).
    return _missing_from("jax._src.core", "cur_sublevel")


def _write_cotangent_check_broken() -> bool:
    # `core.lattice_join` is gone since 0.6, `core.get_aval` since 0.10 and
    # `ShapedArray.strip_named_shape` after 0.4.30.
    from jax._src import core

    return _missing_from("jax._src.core", "get_aval", "lattice_join") or not hasattr(
        core.ShapedArray, "strip_named_shape"
    )


def _jnp_shape_warns_on_shape_structs() -> bool:
    # Since JAX 0.5 `jnp.size`/`jnp.shape` of a `jax.ShapeDtypeStruct` warn that
    # this will become an error (not in every release: 0.6 did not); NT calls
    # them on the `eval_shape` of the network's output.
    import warnings

    import jax
    import jax.numpy as jnp

    struct = jax.ShapeDtypeStruct((1,), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            jnp.size(struct)
            jnp.shape(struct)
        except Exception:
            return True
    return bool(caught)


def _wrap_init_wants_debug_info() -> bool:
    # Since JAX 0.5.1 `linear_util.wrap_init` without `debug_info` warns that
    # this is deprecated (0.5.0 took an optional `debug_info` of another type).
    import warnings

    from jax.extend import linear_util

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        linear_util.wrap_init(lambda: None)
    return any(issubclass(w.category, DeprecationWarning) for w in caught)


def _arrays_warn_as_dtypes() -> bool:
    # JAX arrays implement NumPy 2.4's `__numpy_dtype__` protocol only to warn
    # that `np.dtype(array)` is deprecated (JAX 0.8.2+ or so).
    from jax._src import basearray

    return "__numpy_dtype__" in vars(basearray.Array)


def _transposes_may_be_fancy_only() -> bool:
    # Since JAX 0.10 some linear primitives (`slice`, `dynamic_slice`, ...) have only a
    # "fancy" transpose rule (`ad.fancy_transposes`, accumulating into `GradAccum`s) and
    # no entry in `ad.primitive_transposes`, which NT's backward pass reads.
    from jax._src.interpreters import ad
    from jax._src.lax import slicing

    return hasattr(ad, "fancy_transposes") and slicing.slice_p not in ad.primitive_transposes


def _always() -> bool:
    return True


# --- Replacement implementations referenced by patched NT code ---------------


def require_tensorflow() -> None:
    """Raises a helpful `ImportError` for `neural_tangents.experimental` without TF."""
    missing = [m for m in ("tensorflow", "tf2jax") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            "`neural_tangents.experimental` is NT's TensorFlow bridge (`empirical_ntk_fn_tf`) and "
            f"needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed. The rest of neural_tangents (and nt_pntk) works without TensorFlow; "
            "install `tensorflow` and `tf2jax` only if you need the bridge."
        )


class _OutputPval:
    """Stands in for the old `PartialVal` of one linearized output."""

    def __init__(self, tangent_is_zero: bool):
        self._tangent_is_zero = tangent_is_zero

    def is_known(self) -> bool:
        return self._tangent_is_zero


def linearize(fn_flat, *primals_in_flat, has_aux: bool = False):
    """`ad.linearize` with the calling convention and results of JAX <= 0.10.0.

    NT calls ``ad.linearize(wrapped_fun, *primals)`` and reads back
    ``(primals_out, pvals, jaxpr, consts)`` where ``pvals[i].is_known()`` means
    "output i has a zero tangent and no outvar in ``jaxpr``". JAX 0.10.1 returns
    a bool for that instead of a `PartialVal`; JAX 0.10.2 also takes the primals
    as one ``FlatTree``.
    """
    from jax._src import tree_util
    from jax._src.interpreters import ad

    assert not has_aux
    if not _linearize_takes_flat_tree():
        primals_out, pvals, jaxpr, consts = ad.linearize(fn_flat, *primals_in_flat, has_aux=False)
        return primals_out, [_OutputPval(p) if isinstance(p, bool) else p for p in pvals], jaxpr, consts
    primals_ft = tree_util.FlatTree.flatten(tuple(primals_in_flat))
    out_primals_ft, out_zeros, jaxpr, consts = ad.linearize(
        lambda *args: fn_flat.call_wrapped(*args), primals_ft, has_aux=False
    )
    primals_out = list(out_primals_ft.vals)
    return primals_out, [_OutputPval(z) for z in out_zeros], jaxpr, consts


def primitive_transpose(primitive: Any) -> Callable:
    """The transpose rule of `primitive` in the old calling convention that NT uses.

    ``rule(cotangent, *invals, **params)`` returns one cotangent per input (None for
    inputs that are not `UndefinedPrimal`). For a primitive that has only a "fancy"
    rule (JAX 0.10+), the undefined inputs become `ValAccum`s that the rule
    accumulates into, and their values are returned.
    """
    from jax._src.interpreters import ad

    if primitive in ad.primitive_transposes or primitive not in getattr(ad, "fancy_transposes", {}):
        return ad.get_primitive_transpose(primitive)
    fancy = ad.fancy_transposes[primitive]

    def rule(cotangent, *invals, **params):
        accums = [ad.ValAccum(x.aval) if ad.is_undefined_primal(x) else x for x in invals]
        fancy(cotangent, *accums, **params)
        return [a.freeze() if isinstance(a, ad.ValAccum) else None for a in accums]

    return rule


def cost_analysis_dict(analysis: Any) -> dict[str, Any]:
    """`Compiled.cost_analysis()` as a dict, whether JAX returned a dict or a list of one dict."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return analysis


def compile_time_eval(fn: Callable) -> Callable:
    """Runs `fn` eagerly where its inputs are concrete, even under `jit`; staged where they are not.

    This is what `core.eval_context()` meant up to JAX 0.4.35. On later JAX,
    `core.eval_context()` is eager but raises on tracers, and
    `jax.ensure_compile_time_eval()` stages custom-derivative functions (NT's
    kernels use them) until JAX 0.8. So: eager first; if `fn` meets a tracer of
    an enclosing transformation, again under `ensure_compile_time_eval()`.
    """
    import jax
    from jax._src import core

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _eval_context_rejects_tracers():
            try:
                with core.eval_context():
                    return fn(*args, **kwargs)
            except jax.errors.UnexpectedTracerError:
                pass  # `fn` reads tracers of an enclosing transformation
        with jax.ensure_compile_time_eval():
            return fn(*args, **kwargs)

    return wrapper


def check_cotangent(prim: Any, v: Any, ct: Any) -> None:
    """NT's `jax_enable_checks` assertion in `_write_cotangent`, without removed JAX APIs.

    The original asserted ``lattice_join(v.aval, aval(ct)) == v.aval`` up to
    weak types, which for arrays means: same shape and same dtype.
    """
    import numpy as np

    shape, dtype = tuple(np.shape(ct)), np.dtype(ct.dtype)
    assert (shape, dtype) == (tuple(v.aval.shape), np.dtype(v.aval.dtype)), (prim, v.aval, shape, dtype)


def debug_info(fn: Callable, args: tuple) -> Any:
    """The `DebugInfo` that `linear_util.wrap_init` wants for NT's linearization of `fn(*args)`."""
    from jax._src import api_util

    return api_util.debug_info("neural_tangents STRUCTURED_DERIVATIVES", fn, args, {})


def dtype_of(x: Any) -> Any:
    """`np.dtype(x)` without JAX's deprecated implicit array-to-dtype conversion."""
    import numpy as np

    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.dtype(x)


def log_auto_choice(implementation: Any, flops: float) -> None:
    """NT's AUTO implementation's estimate for one implementation, as a debug log record.

    NT 0.6.5 printed it on stdout (a leftover debug line), mixing it into every AUTO user's
    output; ``logging.getLogger("nt_pntk.compat")`` at DEBUG level shows it.
    """
    _log.debug("NT AUTO implementation: impl=%d, flops=%s", int(implementation), flops)


_log = logging.getLogger("nt_pntk.compat")


def zeros_like_p() -> Any:
    """JAX's `zeros_like_p` primitive where it still exists (unused by JAX since 0.4.24)."""
    from jax._src import ad_util

    return vars(ad_util).get("zeros_like_p")


# --- The patch list -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Patch:
    module: str
    old: str
    new: str
    needed: Callable[[], bool]
    why: str
    count: int = 1  # occurrences of `old` expected; -1 means "at least one"
    #: Fixes a bug of NT itself rather than adapting NT to JAX; NT without it
    #: still works, so importing NT before nt_pntk is no error on its account.
    nt_bug: bool = False


_C = "_nt_pntk_compat"  # the name patched modules see this module by
_EMPIRICAL = "neural_tangents._src.empirical"
_RULES = "neural_tangents._src.utils.rules"
_PREDICT = "neural_tangents._src.predict"
_EMPIRICAL_CORE_NAMES = ("Jaxpr", "JaxprEqn", "Literal", "ShapedArray", "Value", "Var")
_RULES_CORE_NAMES = ("AbstractValue", "Jaxpr", "JaxprEqn", "Literal", "Primitive", "ShapedArray", "Var")
# Every `ad.X` that `empirical.py` reads.
_EMPIRICAL_AD_NAMES = (
    "add_tangents",
    "backward_pass",
    "get_primitive_transpose",
    "is_undefined_primal",
    "linearize",
    "primitive_jvps",
    "reducing_transposes",
    "source_info_util",
)
_EVAL_CONTEXT_WHY = (
    "Since JAX 0.4.36 `jax.core.eval_context()` raises `UnexpectedTracerError` on tracers of an "
    "enclosing transformation (`gradient_descent_mse` of a kernel traced by `jit`/`vmap`); "
    "`jax.ensure_compile_time_eval()` keeps the old meaning for the factorizations computed there "
    "(eager where concrete, staged where traced), so NT's `lru_cache` stays valid and computes "
    "them once."
)


# The NT-bug patches below add a decorator in place of a line, so that NT's line numbers (in
# tracebacks, `inspect`) stay right: every patch keeps the number of lines.
_DICT, _DICT_EAGER = "  k_dd_cache = {}\n\n", f"  k_dd_cache = {{}}\n  @{_C}.compile_time_eval\n"
_CACHE, _CACHE_EAGER = "  @lru_cache(2)\n", f"  @lambda fn: lru_cache(2)({_C}.compile_time_eval(fn))\n"


def _import_line_patches(module: str, names: tuple[str, ...]) -> list[Patch]:
    return [
        Patch(
            module,
            f"from jax.core import {name}\n",
            f"from jax._src.core import {name}\n",
            lambda name=name: _missing_from("jax.core", name),
            f"`jax.core.{name}` left the public `jax.core` (deprecated in JAX 0.4.38, removed in 0.6).",
        )
        for name in names
    ]


PATCHES: tuple[Patch, ...] = (
    # -- TensorFlow ------------------------------------------------------------
    Patch(
        "neural_tangents",
        "from . import experimental\n",
        "\n",
        _tensorflow_unavailable,
        "`neural_tangents.experimental` is the TensorFlow bridge; importing it "
        "eagerly makes TensorFlow a hard dependency.",
    ),
    Patch(
        "neural_tangents.experimental",
        "from .empirical_tf.empirical import empirical_ntk_fn_tf\n",
        f"{_C}.require_tensorflow(); from .empirical_tf.empirical import empirical_ntk_fn_tf\n",
        _tensorflow_unavailable,
        "Importing the TensorFlow bridge without TensorFlow raises an ImportError that says so.",
    ),
    # -- Names moved out of the public JAX modules ------------------------------
    *_import_line_patches(_EMPIRICAL, _EMPIRICAL_CORE_NAMES),
    *_import_line_patches(_RULES, _RULES_CORE_NAMES),
    Patch(
        _EMPIRICAL,
        "from jax import core\n",
        "from jax._src import core\n",
        lambda: _missing_from("jax.core", "Primitive", "ShapedArray", "Var"),
        "NT reads `core.Primitive`/`core.Var`, which left `jax.core` (deprecated 0.4.38, removed 0.6).",
    ),
    Patch(
        _EMPIRICAL,
        "from jax.util import safe_map as map\nfrom jax.util import safe_zip as zip\n",
        "from jax._src.util import safe_map as map\nfrom jax._src.util import safe_zip as zip\n",
        lambda: _missing_from("jax.util", "safe_map", "safe_zip"),
        "`jax.util` is deprecated (JAX 0.6) and gone (0.7, module removed 0.8); the helpers live "
        "in `jax._src.util`.",
    ),
    Patch(
        _EMPIRICAL,
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: _missing_from("jax.interpreters.ad", *_EMPIRICAL_AD_NAMES),
        "The public `jax.interpreters.ad` does not re-export `source_info_util` (nor, since 0.9, "
        "`reducing_transposes`), which STRUCTURED_DERIVATIVES uses.",
    ),
    Patch(
        _RULES,
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: _missing_from("jax.interpreters.ad", "add_jaxvals_p"),
        "The public `jax.interpreters.ad` no longer re-exports `add_jaxvals_p`.",
    ),
    Patch(
        _RULES,
        "STRUCTURE_RULES[jax.interpreters.ad.zeros_like_p] = _eye_s\n"
        "JACOBIAN_RULES[jax.interpreters.ad.zeros_like_p] = _zeros_like_j\n",
        f"if {_C}.zeros_like_p(): STRUCTURE_RULES[{_C}.zeros_like_p()] = _eye_s\n"
        f"if {_C}.zeros_like_p(): JACOBIAN_RULES[{_C}.zeros_like_p()] = _zeros_like_j\n",
        lambda: _missing_from("jax.interpreters.ad", "zeros_like_p"),
        "`jax.interpreters.ad.zeros_like_p` is deprecated (JAX 0.7.1) and removed (0.9); the rule "
        "is kept for the primitive (unused by JAX since 0.4.24) while `jax._src.ad_util` has it.",
    ),
    # -- STRUCTURED_DERIVATIVES on changed JAX internals ------------------------
    Patch(
        _EMPIRICAL,
        "    outs = ad.linearize(fn_flat, *primals_in_flat, has_aux=False)\n",
        f"    outs = {_C}.linearize(fn_flat, *primals_in_flat)\n",
        _linearize_changed,
        "`ad.linearize` returns flags instead of `PartialVal`s (JAX 0.10.1) and takes the primals "
        "as a `FlatTree` (0.10.2).",
    ),
    Patch(
        _EMPIRICAL,
        "eqn.primitive.call_primitive or eqn.primitive.map_primitive",
        "eqn.primitive.call_primitive or getattr(eqn.primitive, 'map_primitive', False)",
        lambda: not hasattr(importlib.import_module("jax._src.core").Primitive, "map_primitive"),
        "`Primitive.map_primitive` was removed (JAX 0.10).",
    ),
    Patch(
        _EMPIRICAL,
        "      lu.wrap_init(fn), in_tree)\n",
        f"      lu.wrap_init(fn, debug_info={_C}.debug_info(fn, primals_in)), in_tree)\n",
        _wrap_init_wants_debug_info,
        "`linear_util.wrap_init` without `debug_info` is deprecated (JAX 0.5.1+).",
    ),
    Patch(
        _EMPIRICAL,
        "  if type(a) is core.DShapedArray:\n",
        "  if type(a) is getattr(core, 'DShapedArray', None):\n",
        lambda: _missing_from("jax._src.core", "DShapedArray"),
        "Dynamic shapes (`core.DShapedArray`) were removed from JAX (0.8).",
    ),
    Patch(
        _EMPIRICAL,
        "  if ad.config.jax_enable_checks:\n",
        "  if jax.config.jax_enable_checks:\n",
        lambda: _missing_from("jax.interpreters.ad", "config"),
        "`ad.config` left `jax.interpreters.ad` (and `jax._src.interpreters.ad.config` is the "
        "config module, not the flag holder); `jax.config` is the public flag.",
    ),
    Patch(
        _EMPIRICAL,
        "    ct_aval = core.get_aval(ct_env[v])\n"
        "    joined_aval = core.lattice_join(\n"
        "        v.aval, ct_aval).strip_weak_type().strip_named_shape()\n"
        "    assert v.aval.strip_weak_type().strip_named_shape() == joined_aval, (\n"
        "        prim, v.aval, ct_aval)\n",
        f"    {_C}.check_cotangent(prim, v, ct_env[v])\n" + "\n" * 4,
        _write_cotangent_check_broken,
        "With `jax_enable_checks`, NT's cotangent check used `ShapedArray.strip_named_shape` "
        "(gone after 0.4.30), `core.lattice_join` (0.6) and `core.get_aval` (0.10).",
    ),
    Patch(
        _EMPIRICAL,
        "      cts_out = ad.get_primitive_transpose(eqn.primitive)(cts_in, *invals,\n",
        f"      cts_out = {_C}.primitive_transpose(eqn.primitive)(cts_in, *invals,\n",
        _transposes_may_be_fancy_only,
        "Since JAX 0.10 `slice`, `dynamic_slice` and other linear primitives have only a "
        "`fancy_transposes` rule; STRUCTURED_DERIVATIVES raised `NotImplementedError: Transpose rule "
        "... for 'slice'` (e.g. the single-logit kernel, any network that slices).",
    ),
    Patch(
        _EMPIRICAL,
        "    analysis = e.compile().cost_analysis()[0]\n",
        f"    analysis = {_C}.cost_analysis_dict(e.compile().cost_analysis())\n",
        _cost_analysis_may_be_dict,
        "`Compiled.cost_analysis()` returns a dict, not a list of one dict (JAX 0.5); "
        "`[0]` raised `KeyError: 0` in AUTO implementation selection.",
    ),
    *(
        Patch(
            _EMPIRICAL,
            old,
            new,
            _jnp_shape_warns_on_shape_structs,
            f"`jnp.{name}` of a `jax.ShapeDtypeStruct` is deprecated (JAX 0.5+); NT applies it to "
            f"`eval_shape` results. `np.{name}` reads the same static shape.",
            count=count,
        )
        for name, old, new, count in (
            ("size", "jnp.size", "np.size", 2),
            ("shape", "+ jnp.shape(l) +", "+ np.shape(l) +", 1),
        )
    ),
    Patch(
        _EMPIRICAL,
        "tree_map(jnp.dtype, params)",
        f"tree_map({_C}.dtype_of, params)",
        _arrays_warn_as_dtypes,
        "`jnp.dtype(array)` (NumPy's `np.dtype`) of a JAX array is deprecated (JAX 0.8+ with "
        "NumPy 2.4+); NT used it for the dtype of the parameters (STRUCTURED_DERIVATIVES).",
    ),
    # -- predict / stax ---------------------------------------------------------
    Patch(
        _PREDICT,
        "eigvals=(ntk_train_train.shape[0] - 1,",
        "subset_by_index=(ntk_train_train.shape[0] - 1,",
        _scipy_eigvalsh_has_subset_by_index,
        "`max_learning_rate` used SciPy's `eigvalsh(eigvals=...)`, deprecated since SciPy 1.5 and "
        "removed in 1.14; `subset_by_index` is the same argument.",
    ),
    Patch(
        _PREDICT,
        "    with jax.core.eval_context():\n",
        "    with jax.ensure_compile_time_eval():\n",
        _eval_context_rejects_tracers,
        _EVAL_CONTEXT_WHY,
        count=2,
    ),
    # -- NT bugs on every JAX version ---------------------------------------------
    Patch(
        _EMPIRICAL,
        "          print(f'impl={implementation}, flops={flops}')\n",
        f"          {_C}.log_auto_choice(implementation, flops)\n",
        _always,
        "`empirical_ntk_fn(implementation=AUTO)` printed `impl=1, flops=...` on stdout for every "
        "implementation it compared (a debug line left in NT 0.6.5); it is a DEBUG record of the "
        "`nt_pntk.compat` logger now.",
        nt_bug=True,
    ),
    *(
        Patch(
            _PREDICT,
            f"{before}  def {name}(",
            f"{after}  def {name}(",
            _always,
            f"`{owner}` computes and caches {what} on first use; when that first use was under "
            "`jit` it cached tracers, and every later call raised `UnexpectedTracerError` (NT bug, "
            "every JAX). It now runs eagerly where its inputs are concrete (`compile_time_eval`), "
            "so the cache holds arrays.",
            nt_bug=True,
        )
        for owner, before, after, name, what in (
            ("gradient_descent_mse_ensemble", _DICT, _DICT_EAGER, "get_k_train_train", "the kernels"),
            ("gradient_descent_mse_ensemble", _CACHE, _CACHE_EAGER, "eigenspace", "the eigendecomposition"),
            ("gp_inference", _CACHE, _CACHE_EAGER, "solve", "the Cholesky factor"),
            ("gp_inference", _CACHE, _CACHE_EAGER, "k_inv_y", "K⁻¹y"),
        )
    ),
)


# --- Pinned sources ----------------------------------------------------------------

#: sha256 of each file the hook patches, as neural-tangents 0.6.5 ships it (the digests of
#: the wheel's RECORD, in hex). The patches replace exact text: on any other text they would
#: run half-patched code, or silently none of it, so another file is an ImportError.
NT_SOURCE_SHA256: dict[str, str] = {
    "neural_tangents": "9c9a658e6676131d4ff38c2d541fbfbd60ee06f08526e61977b2b93136d9b97f",
    "neural_tangents.experimental": "bfade8d80f63badfe7ee2fda0e8fe8ba4c1ebdb84167db8bf3f09171086c596e",
    _EMPIRICAL: "bf310806bbaa3bf3c4a56da02591974193e1f5681cb77150df53c65c29a681fa",
    _RULES: "d714dc556b2b8373c8e9df7c4005312c76a174315ebe3139abda298c2a6a6adf",
    _PREDICT: "4450af4c4dce29338c42938a7c2977ab8bb30700d941351e5792fadf4f0d6098",
}
INSTALL_NT = f"pip install --no-deps neural-tangents=={SUPPORTED_NT_VERSION}"


def _check_nt_version() -> None:
    try:
        version = importlib.metadata.version("neural-tangents")
    except importlib.metadata.PackageNotFoundError:
        return  # NT on sys.path without metadata (a source checkout): the digests decide
    if version != SUPPORTED_NT_VERSION:
        raise ImportError(
            f"neural-tangents {version} is installed, but nt_pntk (installed in this environment, it "
            f"adapts neural_tangents on import) supports only neural-tangents=={SUPPORTED_NT_VERSION}, "
            f"whose source its patches rewrite. Fix: `{INSTALL_NT}`."
        )


def _verified_source(module: str, origin: str, data: bytes) -> str:
    """`data` (the bytes of `module`'s file) as text, if it is NT 0.6.5's file; else ImportError."""
    expected, found = NT_SOURCE_SHA256[module], hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ImportError(
            f"nt_pntk cannot adapt `{module}`: {origin} is not the file neural-tangents=="
            f"{SUPPORTED_NT_VERSION} ships (sha256 expected {expected}, found {found}), so another "
            f"NT version or a modified file. nt_pntk's patches rewrite lines of that exact file. "
            f"Fix: `{INSTALL_NT} --force-reinstall`."
        )
    return importlib.util.decode_source(data)


# --- Applying the patches ---------------------------------------------------------

PatchKind = Literal["adaptation", "nt-bug", "xla"]
_KIND_ORDER: tuple[PatchKind, ...] = ("adaptation", "nt-bug", "xla")


@dataclasses.dataclass(frozen=True)
class AppliedPatch:
    """One change nt_pntk made in this process (`print` shows one line)."""

    #: "adaptation": NT adapted to the running JAX, SciPy or environment (absent TensorFlow);
    #: "nt-bug": a fix of a bug of NT itself, applied on every JAX;
    #: "xla": the ``XLA_FLAGS`` workaround for jaxlib's CPU miscompile.
    kind: PatchKind
    #: The module changed: an NT module, or "jaxlib" for the XLA workaround.
    module: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.module}: {self.reason}"


_applied: list[AppliedPatch] = []


def _patch_source(module: str, source: str) -> tuple[str, list[AppliedPatch]]:
    applied = []
    for patch in PATCHES:
        if patch.module != module or not patch.needed():
            continue
        found = source.count(patch.old)
        if found == 0 or (patch.count > 0 and found != patch.count):  # the digests rule this out
            raise ImportError(
                f"nt_pntk cannot adapt `{module}` for this JAX: expected "
                f"{patch.count if patch.count > 0 else 'some'} occurrence(s) of "
                f"{patch.old!r}, found {found}. Fix: `{INSTALL_NT}`."
            )
        source = source.replace(patch.old, patch.new)
        applied.append(AppliedPatch("nt-bug" if patch.nt_bug else "adaptation", module, patch.why))
    return source, applied


class _PatchingLoader(importlib.abc.InspectLoader):
    """Loads an NT module from its verified source with `PATCHES` applied (no .pyc).

    The patched text is what `get_source` returns and what `linecache` holds for the
    file, so tracebacks, `inspect.getsource` and debuggers show the code that runs.
    Anything else (`get_data`, `get_resource_reader`, ...) is the original loader's.
    """

    def __init__(self, fullname: str, origin: str, original: Any):
        self._fullname = fullname
        self._origin = origin
        self._original = original
        self._patched: tuple[str, list[AppliedPatch]] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._original, name)

    def _source(self) -> tuple[str, list[AppliedPatch]]:
        if self._patched is None:
            if self._fullname == "neural_tangents":
                _check_nt_version()
            get_data = getattr(self._original, "get_data", None)
            if get_data is not None:
                data = get_data(self._origin)
            else:
                with open(self._origin, "rb") as f:
                    data = f.read()
            source = _verified_source(self._fullname, self._origin, data)
            self._patched = _patch_source(self._fullname, source)
        return self._patched

    def get_source(self, fullname: str) -> str:
        return self._source()[0]

    def is_package(self, fullname: str) -> bool:
        return self._original.is_package(fullname)

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        source, applied = self._source()
        # mtime None: `linecache.checkcache` keeps the entry (the file on disk is the unpatched text).
        linecache.cache[self._origin] = (len(source), None, source.splitlines(keepends=True), self._origin)
        module.__dict__[_C] = sys.modules[__name__]
        _applied.extend(p for p in applied if p not in _applied)
        exec(compile(source, self._origin, "exec", dont_inherit=True), module.__dict__)


def _asked_by_an_import() -> bool:
    """Whether the finder runs for an import (which fails if it finds nothing), not a probe.

    `importlib.util.find_spec` probes expect None for a module that is not installed;
    an import statement (or `importlib.import_module`) gets a `ModuleNotFoundError`
    anyway, and ours says how to install NT.
    """
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return False
        name = frame.f_globals.get("__name__")
        if name == "importlib.util":
            return False
        if name == "importlib._bootstrap" and frame.f_code.co_name == "_find_and_load_unlocked":
            return True
        frame = frame.f_back
    return False


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """First on `sys.meta_path`: gives the patched NT modules a `_PatchingLoader`."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHED_MODULES:
            return None
        if fullname == "neural_tangents":
            from nt_pntk._src.compat import xla_cpu as _xla_cpu

            _xla_cpu.apply()  # NT imported on its own (before nt_pntk's kernels) gets it too
        spec = _find_elsewhere(fullname, path, target)
        if spec is None:
            if fullname == "neural_tangents" and _asked_by_an_import():
                raise ModuleNotFoundError(
                    "No module named 'neural_tangents': nt_pntk's kernels need neural-tangents=="
                    f"{SUPPORTED_NT_VERSION}, installed without its dependencies (its metadata "
                    f"requires TensorFlow, which nt_pntk does not use): `{INSTALL_NT}`.",
                    name=fullname,
                )
            return None
        if spec.origin is None or not spec.has_location:
            raise ImportError(f"nt_pntk cannot adapt `{fullname}`: no source file. Fix: `{INSTALL_NT}`.")
        spec.loader = _PatchingLoader(fullname, spec.origin, spec.loader)
        return spec


def _find_elsewhere(fullname: str, path, target) -> importlib.machinery.ModuleSpec | None:
    """The spec that the other finders (the path finder, an editable install's, ...) give."""
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if finder is _finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


_PATCHED_MODULES = frozenset(p.module for p in PATCHES)
_finder = _PatchingFinder()


def _needed_adaptations(module: str) -> list[Patch]:
    return [p for p in PATCHES if p.module == module and not p.nt_bug and p.needed()]


def _loaded_unpatched(module: str) -> bool:
    loader = getattr(getattr(sys.modules.get(module), "__spec__", None), "loader", None)
    return module in sys.modules and not isinstance(loader, _PatchingLoader)


def install() -> None:
    """Install the import hook for NT (idempotent; cheap: nothing is imported).

    NT's version and files are checked when it is imported: another version, or a
    modified file, is an `ImportError` that names the fix; so is NT not installed.

    Raises:
      ImportError: NT was imported *before* nt_pntk, unpatched, on a stack that
        needs patches (Python started with ``-S``, or nt_pntk used from
        ``PYTHONPATH`` without its ``.pth`` file); the message names the fix.
    """
    if _finder in sys.meta_path:
        return
    stale = [m for m in sorted(_PATCHED_MODULES) if _loaded_unpatched(m) and _needed_adaptations(m)]
    if stale:
        reasons = "; ".join(p.why for m in stale for p in _needed_adaptations(m))
        raise ImportError(
            f"neural_tangents was imported before nt_pntk, so {', '.join(stale)} run(s) without the "
            f"adaptation this JAX/SciPy needs ({reasons}). Import nt_pntk before neural_tangents "
            "(restart the interpreter if needed), or install nt_pntk (`pip install nt-pntk`), whose "
            "startup file adapts neural_tangents whenever it is imported first."
        )
    sys.meta_path.insert(0, _finder)


def applied_patches() -> tuple[AppliedPatch, ...]:
    """What nt_pntk changed in this process: adaptations, then NT bug fixes, then XLA's flag.

    ``print(*applied_patches(), sep="\\n")`` shows one line each.
    """
    from nt_pntk._src.compat import xla_cpu as _xla_cpu

    xla = _xla_cpu.describe()
    patches = [*_applied, *([AppliedPatch("xla", "jaxlib", xla)] if xla else [])]
    return tuple(sorted(patches, key=lambda p: _KIND_ORDER.index(p.kind)))  # stable: load order kept
