"""Feature probes of the running stack: each answers "does it need this patch?" (see `patches`).

A probe runs when an NT module that a patch rewrites loads, never before. None
triggers JAX's deprecation warnings (a name that JAX serves only through a
deprecation shim counts as gone: `has_plain`), compiles, or initializes a
backend, so ``import neural_tangents`` stays as side-effect free as without
nt_pntk. JAX, SciPy and NumPy are imported inside the probes, not here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect


def has_plain(module_name: str, *names: str) -> bool:
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


def missing_from(module_name: str, *names: str) -> bool:
    return not has_plain(module_name, *names)


def tensorflow_unavailable() -> bool:
    return any(importlib.util.find_spec(m) is None for m in ("tensorflow", "tf2jax"))


@functools.cache
def linearize_takes_flat_tree() -> bool:
    # Up to JAX 0.9: `linearize(traceable: WrappedFun, *primals)` returning
    # `(primals_out, PartialVals, jaxpr, consts)`. Newer JAX:
    # `linearize(traceable, primals_ft: FlatTree, has_aux, ...)`.
    from jax._src.interpreters import ad

    params = list(inspect.signature(ad.linearize).parameters.values())
    return len(params) < 2 or params[1].kind is not inspect.Parameter.VAR_POSITIONAL


@functools.cache
def linearize_returns_zero_flags() -> bool:
    # JAX 0.10.1 kept the old signature but returns a bool per output ("tangent is
    # zero") where NT expects a `PartialVal` with `.is_known()`. Read from the source:
    # calling `linearize` would trace, and tracing creates arrays on a backend.
    from jax._src.interpreters import ad

    try:
        return "out_tangents_zeros" in inspect.getsource(ad.linearize)
    except (OSError, TypeError):  # no source: the adapter handles both conventions
        return True


def linearize_changed() -> bool:
    return linearize_takes_flat_tree() or linearize_returns_zero_flags()


def map_primitive_removed() -> bool:
    # `Primitive.map_primitive` was removed in JAX 0.10.
    return not hasattr(importlib.import_module("jax._src.core").Primitive, "map_primitive")


def cost_analysis_may_be_dict() -> bool:
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


def scipy_eigvalsh_has_subset_by_index() -> bool:
    # `eigvalsh(eigvals=...)` warns since SciPy 1.5 and is gone since 1.14;
    # `subset_by_index` (1.5+) is the same argument under its new name.
    import scipy.linalg

    return "subset_by_index" in inspect.signature(scipy.linalg.eigvalsh).parameters


@functools.cache
def eval_context_rejects_tracers() -> bool:
    # Up to JAX 0.4.35 `core.eval_context()` made only the *new* work eager:
    # operations on tracers of an enclosing transformation still went to that
    # transformation. Since the "stackless" rewrite (0.4.36, no more
    # `cur_sublevel`) it is a bare eval trace that raises
    # `UnexpectedTracerError` on any tracer. `jax.ensure_compile_time_eval()`
    # is JAX's public replacement: eager where the inputs are concrete, staged
    # into the enclosing trace where they are not (though before JAX 0.8 it
    # stages custom-derivative functions; see `compile_time_eval`).
    return missing_from("jax._src.core", "cur_sublevel")


def write_cotangent_check_broken() -> bool:
    # `core.lattice_join` is gone since 0.6, `core.get_aval` since 0.10 and
    # `ShapedArray.strip_named_shape` after 0.4.30.
    from jax._src import core

    return missing_from("jax._src.core", "get_aval", "lattice_join") or not hasattr(
        core.ShapedArray, "strip_named_shape"
    )


def jnp_shape_warns_on_shape_structs() -> bool:
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


def wrap_init_wants_debug_info() -> bool:
    # Since JAX 0.5.1 `linear_util.wrap_init` without `debug_info` warns that
    # this is deprecated (0.5.0 took an optional `debug_info` of another type).
    import warnings

    from jax.extend import linear_util

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        linear_util.wrap_init(lambda: None)
    return any(issubclass(w.category, DeprecationWarning) for w in caught)


def arrays_warn_as_dtypes() -> bool:
    # JAX arrays implement NumPy 2.4's `__numpy_dtype__` protocol only to warn
    # that `np.dtype(array)` is deprecated (JAX 0.8.2+ or so).
    from jax._src import basearray

    return "__numpy_dtype__" in vars(basearray.Array)


def transposes_may_be_fancy_only() -> bool:
    # Since JAX 0.10 some linear primitives (`slice`, `dynamic_slice`, ...) have only a
    # "fancy" transpose rule (`ad.fancy_transposes`, accumulating into `GradAccum`s) and
    # no entry in `ad.primitive_transposes`, which NT's backward pass reads.
    from jax._src.interpreters import ad
    from jax._src.lax import slicing

    return hasattr(ad, "fancy_transposes") and slicing.slice_p not in ad.primitive_transposes


def always() -> bool:
    return True
