"""Memory budgets, the memory estimate of a tile, and the choice of tile size and resident rows.

The estimate of a tile's peak memory comes from XLA: the per-device programs
are compiled for a few tile sizes and ``compiled.memory_analysis()`` gives
their argument, output and temporary bytes; a line (Jacobian block) or a
quadratic (opaque tile) through those points predicts any size, and the
chosen size is compiled and checked again before it runs (`check_plan`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax

from nt_pntk._src import checks, measure
from nt_pntk._src.checks import GIB, KIB, MIB, parse_bytes  # noqa: F401 (parse_bytes: re-exported)

MARGIN = 1.10  # the estimate times this must fit the budget (allocator slack, small buffers)
STAGING_TILES = 8  # output tiles held on the host per lane: writer queue, the one in hand, transposes
SLACK_BLOCKS = 1  # Jacobian blocks of allocator slack (see FeatureCosts.peak)
MAX_TILE = 2048  # Jacobian-reuse tiles: a Gram tile this large is already at full GEMM speed
MAX_DIRECT_TILE = 4096  # opaque tiles: each recomputes its inputs' work, so larger is cheaper
# Cost model (units: one kernel entry of Gram work): one example's Jacobian costs about RHO
# entries (measured 100 to 250 for dense networks on CPU), and each tile a fixed overhead
# (dispatch, transfer, write, record).
RHO = 128
TILE_OVERHEAD = 4096
# With the route's measured costs (seconds per feature row and per kernel entry), a tile also
# costs this much beyond its entries: dispatch, transfer to the host, the write and its record.
TILE_OVERHEAD_SECONDS = 2e-3


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5KiB'``: the form `parse_bytes` reads back (rounded up, so it is enough)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{math.ceil(10 * n / size) / 10:g}{unit}"
    return f"{math.ceil(n)}B"


def default_budget(devices: Sequence[jax.Device]) -> int:
    """Half the available host memory (CPU) or 80% of a device's free memory (accelerators)."""
    free = free_bytes(devices[0])
    if devices[0].platform != "cpu":
        return 4 * GIB if free is None else int(0.8 * free)
    return free // 2


def free_bytes(device: jax.Device) -> int | None:
    """The memory free on `device`: the host's available memory for a CPU, the device's limit less
    what is in use for an accelerator; None where the backend does not say."""
    if device.platform == "cpu":
        return measure.available_memory_bytes()
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory stats
        stats = {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None


def lane_budget(budget: int, devices: Sequence[jax.Device]) -> int:
    """The budget of one device. CPU devices (e.g. forced host devices) share one memory."""
    if devices[0].platform == "cpu":
        return budget // len(devices)
    return budget


def program_bytes(jitted: Any, *args: Any) -> int:
    """Peak bytes of one run of `jitted` on `args` (arrays or ShapeDtypeStructs): XLA's memory analysis."""
    return measure.peak_bytes(jitted.lower(*args).compile())


@dataclasses.dataclass(frozen=True)
class Curve:
    """bytes(T) = a + b·T + c·T², fitted through measured points (coefficients clipped at 0)."""

    a: float
    b: float = 0.0
    c: float = 0.0

    def __call__(self, t: int) -> float:
        return self.a + self.b * t + self.c * t * t

    @classmethod
    def fit(cls, points: Sequence[tuple[int, float]], *, linear: bool = False, square: bool = False) -> Curve:
        """Through 2 points (`linear`: a + bT; `square`: a + cT²) or 3 points (a + bT + cT²)."""
        if linear or square:
            (t1, y1), (t2, y2) = points[:2]
            g1, g2 = (t1, t2) if linear else (t1 * t1, t2 * t2)
            slope = max((y2 - y1) / (g2 - g1), 0.0)
            a = max(y1 - slope * g1, y2 - slope * g2, 0.0)
            return cls(a, slope, 0.0) if linear else cls(a, 0.0, slope)
        (t1, y1), (t2, y2), (t3, y3) = points[:3]
        # Divided differences; a negative curvature is replaced by the chord (an upper bound beyond t3).
        d1, d2 = (y2 - y1) / (t2 - t1), (y3 - y2) / (t3 - t2)
        c = max((d2 - d1) / (t3 - t1), 0.0)
        b = max(d2 - c * (t3 + t2), 0.0)
        a = max(y3 - b * t3 - c * t3 * t3, y1 - b * t1 - c * t1 * t1, 0.0)
        return cls(a, b, c)


@dataclasses.dataclass(frozen=True)
class FeatureCosts:
    """Memory of the Jacobian-reuse programs on one device, as functions of the tile size T."""

    row_bytes: int  # one example's Jacobian row (all leaves)
    jac_extra: Curve  # the Jacobian program beyond its output block: parameters, inputs, temporaries
    gram_extra: Curve  # the Gram program beyond its two input blocks: the output tile, temporaries
    params_bytes: int
    out_itemsize: int
    # Seconds per feature row and per kernel entry from XLA's cost analysis (0: unknown, the
    # RHO / TILE_OVERHEAD model in entries stands).
    row_seconds: float = 0.0
    entry_seconds: float = 0.0

    def peak(self, t: int, resident: int) -> float:
        """Bytes with `resident` Jacobian blocks of `t` rows on the device (the one computed included).

        Plus `SLACK_BLOCKS` blocks: a freed block's memory is not always reused
        for the next one at once (measured on CPU with glibc's allocator).
        """
        block = t * self.row_bytes
        working = max(self.jac_extra(t), self.gram_extra(t) + self.params_bytes)
        return (resident + SLACK_BLOCKS) * block + working + staging_bytes(t, self.out_itemsize)


def staging_bytes(t: int, itemsize: int) -> int:
    return STAGING_TILES * t * t * itemsize


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a kernel is computed: `mode` 'features' (Jacobian reuse) or 'direct' (opaque tiles)."""

    mode: str
    tile: int
    n1: int
    n2: int
    symmetric: bool
    rows_resident: int  # row blocks whose Jacobians stay on each device at once ('features')
    lane_budget: int
    estimate: float  # predicted peak bytes per device

    @property
    def blocks1(self) -> int:
        return -(-self.n1 // self.tile)

    @property
    def blocks2(self) -> int:
        return self.blocks1 if self.symmetric else -(-self.n2 // self.tile)

    def tiles(self) -> list[tuple[int, int]]:
        """All tiles (row block, column block); on and above the diagonal only when symmetric."""
        if self.symmetric:
            return [(i, j) for i in range(self.blocks1) for j in range(i, self.blocks1)]
        return [(i, j) for i in range(self.blocks1) for j in range(self.blocks2)]

    def super_rows(self) -> list[range]:
        """Groups of `rows_resident` row blocks ('direct': one row block each)."""
        k = self.rows_resident if self.mode == "features" else 1
        return [range(s, min(s + k, self.blocks1)) for s in range(0, self.blocks1, k)]


class BudgetTooSmall(checks.UsageError):
    """`memory_budget` cannot hold the smallest plan: what it is, what is needed, and for which tile.

    ``budget`` and ``need`` are bytes of the budget the user gave (all the devices
    that share it); ``tile`` is the tile size the plan was held to, or None when
    the size was free (the minimum is then that of one row of tile 1). The message
    is worded here, once, from these fields.
    """

    argument = "memory_budget"

    def __init__(self, budget: int, need: float, tile: int | None):
        self.budget, self.need, self.tile = budget, need, tile
        name, fixed = self.argument, tile is not None
        what = f"a tile of tile_size={tile}" if fixed else "one row of the smallest tile (tile_size=1)"
        super().__init__(
            f"`{name}` is {format_bytes(budget)} ({budget} bytes), below the minimum of "
            f"{format_bytes(need)} ({math.ceil(need)} bytes) that {what} needs (parameters, Jacobian rows, "
            f"the output tile and XLA's temporaries). Pass {name}='{format_bytes(need)}' or more"
            + (", or a smaller tile_size." if fixed and tile > 1 else ".")
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.budget, self.need, self.tile)


def tile_candidates(n_max: int, cap: int) -> list[int]:
    """Tile sizes up to `cap`: ceil(n_max / b) for every block count b (no more padding than
    needed for b blocks) and the powers of two."""
    sizes = {-(-n_max // b) for b in range(1, n_max + 1)} | {2**e for e in range(0, 13)}
    return sorted(t for t in sizes if t <= min(cap, n_max))


def _min_resident(symmetric: bool, blocks: int) -> int:
    return 1 if symmetric and blocks == 1 else 2


def features_choice(
    costs: FeatureCosts, t: int, n1: int, n2: int, symmetric: bool, budget: int
) -> tuple[int, float, float] | None:
    """(rows_resident, estimate, cost) for tile `t`, or None if `budget` cannot hold it."""
    nb1 = -(-n1 // t)
    nb2 = nb1 if symmetric else -(-n2 // t)
    block = t * costs.row_bytes
    fixed = costs.peak(t, 0)
    most = math.floor((budget / MARGIN - fixed) / block) if block else nb1 + 1
    if most < _min_resident(symmetric, nb1):
        return None
    if symmetric and most >= nb1:
        k, resident = nb1, nb1
    else:
        k = min(nb1, most - 1)
        resident = k + 1
    n_tiles = nb1 * (nb1 + 1) // 2 if symmetric else nb1 * nb2
    jac_rows = nb1 * t
    for s in range(0, nb1, k):
        end = min(s + k, nb1)
        jac_rows += (nb2 - end if symmetric else nb2) * t
    if costs.entry_seconds > 0:
        cost = n_tiles * (t * t * costs.entry_seconds + TILE_OVERHEAD_SECONDS) + costs.row_seconds * jac_rows
    else:
        cost = n_tiles * (t * t + TILE_OVERHEAD) + RHO * jac_rows
    return k, costs.peak(t, resident), cost


def plan_features(
    costs: FeatureCosts,
    n1: int,
    n2: int,
    symmetric: bool,
    budget: int,
    tile: int | None,
    share: int = 1,
    max_tile: int = MAX_TILE,
) -> Plan:
    """The cheapest feasible tile size (or `tile`), and how many row blocks stay resident.

    `budget` is one device's; `share` devices split the budget the user gave (CPU devices).
    Raises `BudgetTooSmall` when no tile fits.
    """
    n_max = max(n1, n2)
    candidates = [tile] if tile else tile_candidates(n_max, max_tile)
    best = None
    for t in candidates:
        choice = features_choice(costs, t, n1, n2, symmetric, budget)
        if choice and (best is None or choice[2] <= best[3]):
            best = (t, *choice)
    if best is None:
        t = tile or 1
        need = MARGIN * costs.peak(t, _min_resident(symmetric, -(-n1 // t)))
        raise BudgetTooSmall(budget * share, need * share, tile)
    t, k, estimate, _ = best
    return Plan("features", t, n1, n2, symmetric, k, budget, estimate)


def plan_direct(
    peak: Callable[[int], float],
    n1: int,
    n2: int,
    symmetric: bool,
    budget: int,
    tile: int | None,
    share: int = 1,
    max_tile: int = MAX_DIRECT_TILE,
) -> Plan:
    """The largest tile (or `tile`) whose estimated peak fits `budget` (else `BudgetTooSmall`)."""
    candidates = [tile] if tile else tile_candidates(max(n1, n2), max_tile)
    feasible = [t for t in candidates if MARGIN * peak(t) <= budget]
    if not feasible:
        t = tile or 1
        raise BudgetTooSmall(budget * share, MARGIN * peak(t) * share, tile)
    t = max(feasible)
    return Plan("direct", t, n1, n2, symmetric, 1, budget, peak(t))


def fit_then_check(
    estimated: Callable[[int], Plan], measured: Callable[[int], Plan], tile: int | None, max_tile: int
) -> Plan:
    """The plan of the estimates, then checked against the compiled programs that will run.

    `estimated(max_tile)` plans a free tile size from fitted estimates, up to
    `max_tile`; `measured(t)` plans tile `t` from the programs compiled for it.
    With `tile` given only that tile is measured. Otherwise a tile that does not
    fit once compiled is replaced by the estimates' choice below it; when none
    fits by the estimates, tile 1 is measured, so that the error names the
    minimum budget the real programs need (`BudgetTooSmall`, its size free).
    """
    while True:
        t = tile
        if t is None:
            try:
                t = estimated(max_tile).tile
            except BudgetTooSmall:
                t = 1
        try:
            return measured(t)
        except BudgetTooSmall as e:
            if tile is not None:
                raise
            if t == 1:
                raise BudgetTooSmall(e.budget, e.need, None) from None
            max_tile = t - 1
