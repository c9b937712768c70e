"""What NT's patched code calls in place of the JAX (and SciPy) internals that moved or changed.

The loader (`nt_hook`) puts this module into the namespace of every NT module it
patches, as ``_nt_pntk_compat`` (`patches.COMPAT_NAME`); the new text of a patch
calls these functions by that name (e.g. ``_nt_pntk_compat.linearize(...)``).
Each keeps the calling convention NT 0.6.5 was written for, on every JAX the
adaptation supports; the patch that calls it says why it is needed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from nt_pntk._src.compat import probes


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
    if not probes.linearize_takes_flat_tree():
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
        if probes.eval_context_rejects_tracers():
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
