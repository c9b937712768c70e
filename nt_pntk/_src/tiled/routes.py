"""How `kernel_matrix` computes the tiles of a kernel: the routes, and the choice among them.

Every route computes the same kernel exactly (to float rounding):

* ``rows``: per-example Jacobian rows F, computed once per input and kept
  (see ``compute.FeaturePrograms``); each tile is the Gram product F_r F_cᵀ.
  NT's JACOBIAN_CONTRACTION with the Jacobians reused across tiles.
* ``structured``: the same, with each dense layer's rows replaced by two small
  factors, the activations entering it and the cotangents leaving it; a tile is
  Σ (A_r A_cᵀ) ⊙ (D_r D_cᵀ) + F_r F_cᵀ (see `nt_pntk._src.kernels.structured`).
  NT's STRUCTURED_DERIVATIVES for dense layers, with the factors reused.
* ``direct(k)``: the kernel function itself on each tile, with NT implementation k
  (the inputs' work recomputed per tile).

A kernel function of an approximation (`EmpiricalKernelFn`) chooses its route
by its ``implementation``: JACOBIAN_CONTRACTION (1) → ``rows``,
NTK_VECTOR_PRODUCTS (2) → ``direct(2)``, STRUCTURED_DERIVATIVES (3) →
``structured``, and AUTO (0) → the cheaper of ``rows`` and ``structured`` by
XLA's cost analysis: each candidate's programs are lowered (not compiled) at a
small probe size, and their FLOPs and bytes, extrapolated to the whole kernel,
are turned into seconds with this machine's measured matmul rate and memory
bandwidth (`measure.machine_rates`). AUTO leaves out the direct routes: they redo in every tile each input's
work that the features routes do once per input (forward and backward passes),
and on every zoo model they were slower (3 to 30 times, measured when AUTO was made).
A kernel without Gram features (an output axis kept) and any other function are
tiled ``direct``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nt_pntk._src.kernels.approximations import EmpiricalKernelFn
from nt_pntk._src.kernels.features import NotAGramKernel
from nt_pntk._src.kernels.sketch import Sketch
from nt_pntk._src.tiled import compute, sharding

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A route's predicted seconds for the whole kernel's programs (XLA's FLOPs at this machine's
    matmul rate plus its bytes at the copy bandwidth): the features of every input once, and the
    Gram products of every entry."""

    features_seconds: float
    gram_seconds: float

    @property
    def seconds(self) -> float:
        return self.features_seconds + self.gram_seconds

    def __str__(self) -> str:
        parts = f"features {self.features_seconds:.3g} s, Gram {self.gram_seconds:.3g} s"
        return f"{self.seconds:.3g} s ({parts})"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The route taken, why (`reason`), and the estimates of the candidates that were compared."""

    route: str
    reason: str
    estimates: dict[str, Estimate]

    def describe(self) -> str:
        lines = [f"route: {self.route} ({self.reason})"]
        for name, estimate in sorted(self.estimates.items(), key=lambda kv: kv[1].seconds):
            marker = "*" if name == self.route else " "
            lines.append(f"  {marker} {name:<13} {estimate}")
        return "\n".join(lines)


def _implementation(fn: EmpiricalKernelFn) -> int:
    return int(fn.implementation.value)


@dataclasses.dataclass(frozen=True)
class Sides:
    """A call's keyword arguments: as given, and x1's and x2's, split once from the whole inputs
    (`keyword_args.split`; x2's are x1's for a symmetric kernel)."""

    given: dict[str, Any]
    kwargs1: dict[str, Any]
    kwargs2: dict[str, Any]


def tile_function(fn: Callable, sides: Sides) -> Callable[[PyTree, PyTree, PyTree], Any]:
    """``tile(x_rows, x_cols, params)``: ``fn`` on rows of x1 and columns of x2 (or x1), with the
    keyword arguments of the whole x1 and x2 (a tile must not split them anew: NT derives x2's
    ``rng`` from whether x2 equals x1, which differs tile by tile)."""
    if isinstance(fn, EmpiricalKernelFn):
        return lambda xr, xc, params: fn.call_split(xr, xc, params, sides.kwargs1, sides.kwargs2)
    # A function of its own follows NT's convention (`kernel_matrix` refuses its `rng`): each pair as
    # (x1's, x2's), which in a symmetric kernel are both x1's.
    kwargs = {
        k: (sides.kwargs1[k], sides.kwargs2[k]) if isinstance(v, tuple) and len(v) == 2 else v
        for k, v in sides.given.items()
    }
    return lambda xr, xc, params: fn(xr, xc, params, **kwargs)


def programs_for(route: str, fn: Callable, sides: Sides, lanes: sharding.Lanes) -> Any:
    """The per-device programs of a route (``rows``, ``structured``, ``direct``, ``direct(k)``)."""
    if route in ("rows", "structured"):
        features = fn.features_fn(structured=route == "structured")
        return compute.FeaturePrograms(features, sides.kwargs1, sides.kwargs2, lanes, route)
    if route.startswith("direct(") and isinstance(fn, EmpiricalKernelFn):
        k = int(route[len("direct(") : -1])
        fn = fn if _implementation(fn) == k else fn.with_implementation(k)
    return compute.DirectPrograms(tile_function(fn, sides), lanes, route)


def choose(
    fn: Callable,
    kwargs: Sides,
    lanes: sharding.Lanes,
    params: PyTree,
    x1: PyTree,
    entries: int,
    rows: int,
) -> tuple[Any, Choice]:
    """The programs of the route `fn` takes for a kernel of `entries` entries over `rows` inputs.

    Raises:
      NotAGramKernel: never; a features route that does not apply falls back to ``direct``.
    """
    if not isinstance(fn, EmpiricalKernelFn):
        return programs_for("direct", fn, kwargs, lanes), Choice("direct", "a function of its own", {})
    rows_programs = programs_for("rows", fn, kwargs, lanes)
    if isinstance(fn.approximation, Sketch):
        # Its features are k numbers per row whatever the implementation: a direct tile would only
        # compute them again for every tile. Its estimate is shown beside the exact routes' (`--plan`).
        row_seconds, entry_seconds = rows_programs.lowered_seconds(params, x1, compute.PROBE_ROWS)
        estimate = Estimate(row_seconds * rows, entry_seconds * entries)
        return rows_programs, Choice(
            "rows", "the sketched features, computed once per input", {"rows": estimate}
        )
    try:
        rows_programs.out_struct(params, x1)  # traced once; the programs keep it
    except NotAGramKernel:
        route = f"direct({_implementation(fn)})"
        reason = "its kernel is not a Gram matrix of per-example features (an output axis is kept)"
        return programs_for(route, fn, kwargs, lanes), Choice(route, reason, {})
    implementation = _implementation(fn)
    if implementation != 0:
        route = {1: "rows", 2: "direct(2)", 3: "structured"}[implementation]
        reason = f"implementation={fn.implementation.name}"
        taken = rows_programs if route == "rows" else programs_for(route, fn, kwargs, lanes)
        return taken, Choice(route, reason, {})
    # AUTO compares the features routes. The direct ones redo, in every tile, each input's work that
    # these do once per input: on every zoo model they took 3 to 30 times longer (measured).
    # Lowered programs are enough for the comparison (their cost analysis needs no compile); only
    # the route taken is compiled, by the plan.
    estimates, programs = {}, {}
    for route in ("rows", "structured"):
        candidate = rows_programs if route == "rows" else programs_for(route, fn, kwargs, lanes)
        if route == "structured" and not candidate.has_factors(params, x1):
            continue  # no dense layer to factor: the same programs as rows
        row_seconds, entry_seconds = candidate.lowered_seconds(params, x1, compute.PROBE_ROWS)
        estimates[route] = Estimate(row_seconds * rows, entry_seconds * entries)
        programs[route] = candidate
    best = min(estimates, key=lambda r: estimates[r].seconds)
    return programs[best], Choice(best, "AUTO: the cheapest by XLA's cost analysis", estimates)
