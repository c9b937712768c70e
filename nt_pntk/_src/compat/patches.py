"""The patch table: each rewrite of NT 0.6.5's source, when it applies, and why; the pinned sources.

`PATCHES` lists every patch: the NT module, the exact old and new text, the
probe that says whether the running stack needs it (`probes`), and the reason.
Patches that fix a bug of NT itself (``nt_bug``) apply on every JAX. A patch
keeps the number of lines, so NT's line numbers stay right. Its new text
reaches `shims` as ``_nt_pntk_compat`` (`COMPAT_NAME`).

The patched files are pinned by their sha256 in NT 0.6.5 (`NT_SOURCE_SHA256`):
the loader (`nt_hook`) refuses another text before any patch is applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nt_pntk._src.compat import probes

SUPPORTED_NT_VERSION = "0.6.5"


@dataclasses.dataclass(frozen=True)
class Patch:
    """One rewrite of an NT module: `old` text becomes `new` where `needed()` says so, for `why`."""

    module: str
    old: str
    new: str
    needed: Callable[[], bool]
    why: str
    count: int = 1  # occurrences of `old` expected; -1 means "at least one"
    #: Fixes a bug of NT itself rather than adapting NT to JAX; NT without it
    #: still works, so importing NT before nt_pntk is no error on its account.
    nt_bug: bool = False


COMPAT_NAME = "_nt_pntk_compat"  # the name patched modules see `shims` by (set by the loader)
_C = COMPAT_NAME
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
            lambda name=name: probes.missing_from("jax.core", name),
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
        probes.tensorflow_unavailable,
        "`neural_tangents.experimental` is the TensorFlow bridge; importing it "
        "eagerly makes TensorFlow a hard dependency.",
    ),
    Patch(
        "neural_tangents.experimental",
        "from .empirical_tf.empirical import empirical_ntk_fn_tf\n",
        f"{_C}.require_tensorflow(); from .empirical_tf.empirical import empirical_ntk_fn_tf\n",
        probes.tensorflow_unavailable,
        "Importing the TensorFlow bridge without TensorFlow raises an ImportError that says so.",
    ),
    # -- Names moved out of the public JAX modules ------------------------------
    *_import_line_patches(_EMPIRICAL, _EMPIRICAL_CORE_NAMES),
    *_import_line_patches(_RULES, _RULES_CORE_NAMES),
    Patch(
        _EMPIRICAL,
        "from jax import core\n",
        "from jax._src import core\n",
        lambda: probes.missing_from("jax.core", "Primitive", "ShapedArray", "Var"),
        "NT reads `core.Primitive`/`core.Var`, which left `jax.core` (deprecated 0.4.38, removed 0.6).",
    ),
    Patch(
        _EMPIRICAL,
        "from jax.util import safe_map as map\nfrom jax.util import safe_zip as zip\n",
        "from jax._src.util import safe_map as map\nfrom jax._src.util import safe_zip as zip\n",
        lambda: probes.missing_from("jax.util", "safe_map", "safe_zip"),
        "`jax.util` is deprecated (JAX 0.6) and gone (0.7, module removed 0.8); the helpers live "
        "in `jax._src.util`.",
    ),
    Patch(
        _EMPIRICAL,
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: probes.missing_from("jax.interpreters.ad", *_EMPIRICAL_AD_NAMES),
        "The public `jax.interpreters.ad` does not re-export `source_info_util` (nor, since 0.9, "
        "`reducing_transposes`), which STRUCTURED_DERIVATIVES uses.",
    ),
    Patch(
        _RULES,
        "from jax.interpreters import ad\n",
        "from jax._src.interpreters import ad\n",
        lambda: probes.missing_from("jax.interpreters.ad", "add_jaxvals_p"),
        "The public `jax.interpreters.ad` no longer re-exports `add_jaxvals_p`.",
    ),
    Patch(
        _RULES,
        "STRUCTURE_RULES[jax.interpreters.ad.zeros_like_p] = _eye_s\n"
        "JACOBIAN_RULES[jax.interpreters.ad.zeros_like_p] = _zeros_like_j\n",
        f"if {_C}.zeros_like_p(): STRUCTURE_RULES[{_C}.zeros_like_p()] = _eye_s\n"
        f"if {_C}.zeros_like_p(): JACOBIAN_RULES[{_C}.zeros_like_p()] = _zeros_like_j\n",
        lambda: probes.missing_from("jax.interpreters.ad", "zeros_like_p"),
        "`jax.interpreters.ad.zeros_like_p` is deprecated (JAX 0.7.1) and removed (0.9); the rule "
        "is kept for the primitive (unused by JAX since 0.4.24) while `jax._src.ad_util` has it.",
    ),
    # -- STRUCTURED_DERIVATIVES on changed JAX internals ------------------------
    Patch(
        _EMPIRICAL,
        "    outs = ad.linearize(fn_flat, *primals_in_flat, has_aux=False)\n",
        f"    outs = {_C}.linearize(fn_flat, *primals_in_flat)\n",
        probes.linearize_changed,
        "`ad.linearize` returns flags instead of `PartialVal`s (JAX 0.10.1) and takes the primals "
        "as a `FlatTree` (0.10.2).",
    ),
    Patch(
        _EMPIRICAL,
        "eqn.primitive.call_primitive or eqn.primitive.map_primitive",
        "eqn.primitive.call_primitive or getattr(eqn.primitive, 'map_primitive', False)",
        probes.map_primitive_removed,
        "`Primitive.map_primitive` was removed (JAX 0.10).",
    ),
    Patch(
        _EMPIRICAL,
        "      lu.wrap_init(fn), in_tree)\n",
        f"      lu.wrap_init(fn, debug_info={_C}.debug_info(fn, primals_in)), in_tree)\n",
        probes.wrap_init_wants_debug_info,
        "`linear_util.wrap_init` without `debug_info` is deprecated (JAX 0.5.1+).",
    ),
    Patch(
        _EMPIRICAL,
        "  if type(a) is core.DShapedArray:\n",
        "  if type(a) is getattr(core, 'DShapedArray', None):\n",
        lambda: probes.missing_from("jax._src.core", "DShapedArray"),
        "Dynamic shapes (`core.DShapedArray`) were removed from JAX (0.8).",
    ),
    Patch(
        _EMPIRICAL,
        "  if ad.config.jax_enable_checks:\n",
        "  if jax.config.jax_enable_checks:\n",
        lambda: probes.missing_from("jax.interpreters.ad", "config"),
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
        probes.write_cotangent_check_broken,
        "With `jax_enable_checks`, NT's cotangent check used `ShapedArray.strip_named_shape` "
        "(gone after 0.4.30), `core.lattice_join` (0.6) and `core.get_aval` (0.10).",
    ),
    Patch(
        _EMPIRICAL,
        "      cts_out = ad.get_primitive_transpose(eqn.primitive)(cts_in, *invals,\n",
        f"      cts_out = {_C}.primitive_transpose(eqn.primitive)(cts_in, *invals,\n",
        probes.transposes_may_be_fancy_only,
        "Since JAX 0.10 `slice`, `dynamic_slice` and other linear primitives have only a "
        "`fancy_transposes` rule; STRUCTURED_DERIVATIVES raised `NotImplementedError: Transpose rule "
        "... for 'slice'` (e.g. the single-logit kernel, any network that slices).",
    ),
    Patch(
        _EMPIRICAL,
        "    analysis = e.compile().cost_analysis()[0]\n",
        f"    analysis = {_C}.cost_analysis_dict(e.compile().cost_analysis())\n",
        probes.cost_analysis_may_be_dict,
        "`Compiled.cost_analysis()` returns a dict, not a list of one dict (JAX 0.5); "
        "`[0]` raised `KeyError: 0` in AUTO implementation selection.",
    ),
    *(
        Patch(
            _EMPIRICAL,
            old,
            new,
            probes.jnp_shape_warns_on_shape_structs,
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
        probes.arrays_warn_as_dtypes,
        "`jnp.dtype(array)` (NumPy's `np.dtype`) of a JAX array is deprecated (JAX 0.8+ with "
        "NumPy 2.4+); NT used it for the dtype of the parameters (STRUCTURED_DERIVATIVES).",
    ),
    # -- predict / stax ---------------------------------------------------------
    Patch(
        _PREDICT,
        "eigvals=(ntk_train_train.shape[0] - 1,",
        "subset_by_index=(ntk_train_train.shape[0] - 1,",
        probes.scipy_eigvalsh_has_subset_by_index,
        "`max_learning_rate` used SciPy's `eigvalsh(eigvals=...)`, deprecated since SciPy 1.5 and "
        "removed in 1.14; `subset_by_index` is the same argument.",
    ),
    Patch(
        _PREDICT,
        "    with jax.core.eval_context():\n",
        "    with jax.ensure_compile_time_eval():\n",
        probes.eval_context_rejects_tracers,
        _EVAL_CONTEXT_WHY,
        count=2,
    ),
    # -- NT bugs on every JAX version ---------------------------------------------
    Patch(
        _EMPIRICAL,
        "          print(f'impl={implementation}, flops={flops}')\n",
        f"          {_C}.log_auto_choice(implementation, flops)\n",
        probes.always,
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
            probes.always,
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


PATCHED_MODULES = frozenset(p.module for p in PATCHES)


def needed_adaptations(module: str) -> list[Patch]:
    """The patches of `module` that adapt NT to the running stack (not NT's bug fixes)."""
    return [p for p in PATCHES if p.module == module and not p.nt_bug and p.needed()]
