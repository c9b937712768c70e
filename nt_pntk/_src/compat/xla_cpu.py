"""Switch off XLA:CPU's YNNPACK fusions on the jaxlib releases where they compute wrong numbers.

jaxlib 0.10.2's XLA:CPU hands some fused groups of operations to YNNPACK
("ynn fusions"). Such a fusion that multiplies a dot of two broadcast
constants by a dot of a reduction, e.g.

    (ones((n, 10)) @ ones((10, n))) * (x.sum(axis=(1, 2)) @ b)     # n >= 64

returns a wrong result under ``jax.jit`` (here 1/10 of the right one), with no
error; the same program is right op by op, and right with the fusions off. The
pNTK of a network hits it through NT's STRUCTURED_DERIVATIVES: the cotangent of
the summed logits is the constant 1/√O, so the readout layer's contribution is
exactly such a product (found as a 63% relative error of a CNN's pNTK at 64 inputs).
Measured on jaxlib 0.8.3, 0.9.0-0.9.2, 0.10.0 and 0.10.1: right; 0.10.2: wrong.

XLA reads ``XLA_FLAGS`` once, when JAX starts its CPU backend, so `apply` (run
by ``import nt_pntk`` and when ``neural_tangents`` is imported) adds
``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions) to
``XLA_FLAGS`` if that has not happened yet. XLA's own CPU emitters then compile
those operations; they were as fast on the kernels timed when this workaround was made.

* jaxlib releases outside `AFFECTED` are left alone (older ones do not know the
  flag and would abort on it).
* A ``XLA_FLAGS`` that already sets the flag is respected.
* ``NT_PNTK_KEEP_XLA_FLAGS=1`` skips the workaround (to measure or reproduce).
* If the backend already runs (JAX computed something before nt_pntk or NT was
  imported), the flag can no longer take effect: a `XlaMiscompileWarning` says
  so and how to fix it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
#: jaxlib releases (major, minor, patch), first and last, whose CPU compiler miscompiles.
AFFECTED = ((0, 10, 2), (0, 10, 2))
OPT_OUT = "NT_PNTK_KEEP_XLA_FLAGS"

_status: str | None = None


class XlaMiscompileWarning(RuntimeWarning):
    """This jaxlib's CPU compiler can return wrong kernels, and nt_pntk could not switch that off."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def affected(jaxlib_version: str) -> bool:
    """Whether this jaxlib release is one whose YNNPACK fusions miscompile."""
    first, last = AFFECTED
    return first <= _version(jaxlib_version) <= last


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return started() if started is not None else bool(getattr(xla_bridge, "_backends", {}))


def apply() -> str:
    """Adds the flag to ``XLA_FLAGS`` where needed and still possible; returns `status`."""
    global _status
    if _status is not None:
        return _status
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    flags = os.environ.get("XLA_FLAGS", "")
    if not affected(version):
        _status = "not needed"
    elif FLAG in flags:
        _status = "set by the user"
    elif os.environ.get(OPT_OUT) == "1":
        _status = f"skipped ({OPT_OUT}=1)"
    elif _backend_started():
        _status = "too late"
        warnings.warn(
            f"jaxlib {version}'s CPU compiler computes some kernels wrongly under jax.jit (YNNPACK "
            "fusions; see nt_pntk.compat). nt_pntk switches these fusions off by setting XLA_FLAGS, "
            "but JAX had already started its CPU backend when nt_pntk (or neural_tangents) was "
            "imported. Import nt_pntk before running any JAX computation, or start Python with "
            f"XLA_FLAGS='{FLAG}='.",
            XlaMiscompileWarning,
            stacklevel=3,
        )
    else:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=".strip()
        _status = "applied"
    return _status


def status() -> str:
    """'applied', 'not needed', 'set by the user', 'skipped (...)', 'too late', or 'not checked'."""
    return _status or "not checked"


def describe() -> str | None:
    """The reason line of `nt_pntk.compat.applied_patches` for the flag, or None when it was not set."""
    if _status == "applied":
        return (
            f"`{FLAG}=` added to XLA_FLAGS: jaxlib 0.10.2's YNNPACK fusions return wrong numbers "
            "under jit (e.g. the pNTK with STRUCTURED_DERIVATIVES)."
        )
    return None
