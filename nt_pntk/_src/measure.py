"""The one home of measurement: wall time of compiled calls, peak RSS, XLA's memory and FLOPs, and the
machine's memory and installed versions.

Used by the command line (``demo``, ``compare``, ``figure1``), the tiling
planner (XLA's memory analysis of the programs it will run) and the asv suite,
so that every figure the package prints is measured the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from nt_pntk._src import checks


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds: the compilation (NaN where not measured), the median of `runs` timed calls, the warm-up."""

    compile_s: float
    median_s: float
    runs: int
    warmup_s: float


def compile_timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    """``jax.jit(fn).lower(*args).compile()`` and the seconds it took (trace, lower and compile)."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_calls(
    compiled: Callable, *args: Any, repeats: int = 3, time_budget: float = 30.0, compile_s: float = math.nan
) -> tuple[Timing, Any]:
    """Calls `compiled` once to warm up, then times up to `repeats` calls (``block_until_ready``).

    Fewer calls (at least one) when the warm-up shows they would take longer than
    `time_budget` seconds.

    Returns:
      ``(Timing, value of the last call)``; `compile_s` is passed through to the `Timing`.

    Raises:
      TypeError, ValueError: `repeats` not an int >= 1, `time_budget` not a number > 0.
    """
    import jax

    repeats = checks.positive_int("repeats", repeats)
    time_budget = checks.positive("time_budget", time_budget)
    start = time.perf_counter()
    value = jax.block_until_ready(compiled(*args))
    warmup_s = time.perf_counter() - start
    runs = max(1, min(repeats, int(time_budget // max(warmup_s, 1e-9))))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        value = jax.block_until_ready(compiled(*args))
        samples.append(time.perf_counter() - start)
    return Timing(compile_s, statistics.median(samples), runs, warmup_s), value


def time_compiled(
    fn: Callable, *args: Any, repeats: int = 3, time_budget: float = 30.0
) -> tuple[Timing, Any]:
    """Compiles ``jax.jit(fn)`` for `args` (`compile_timed`), then times its calls (`time_calls`).

    Returns:
      ``(Timing, value of the last call)``.
    """
    compiled, compile_s = compile_timed(fn, *args)
    return time_calls(compiled, *args, repeats=repeats, time_budget=time_budget, compile_s=compile_s)


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux, ``getrusage``'s ``ru_maxrss`` survives ``fork`` + ``execve``: a
    worker would report its parent's peak if that were higher. ``VmHWM`` in
    ``/proc/self/status`` is the peak of this process's own address space, so it
    is used when present.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


#: What the memory readings assume where the system does not say: a modest machine, so that budgets
#: and refusals err on the small side.
FALLBACK_MEMORY_BYTES = 8 * 2**30


def physical_memory_bytes() -> int:
    """The machine's physical memory (`FALLBACK_MEMORY_BYTES` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY_BYTES


def available_memory_bytes() -> int:
    """The memory a new allocation can take without swapping: ``MemAvailable`` of ``/proc/meminfo``,
    else (not Linux) `physical_memory_bytes`."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return physical_memory_bytes()


#: The distributions whose versions decide what runs (and what XLA compiles): the command line's
#: ``--version``, demo's header and the XLA gate's baselines report them.
VERSIONED_DEPENDENCIES = ("jax", "jaxlib", "neural-tangents")


def installed_version(distribution: str) -> str:
    """The installed version of `distribution` from its metadata (no import: importing JAX to ask
    would take seconds), or ``'not installed'``."""
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def memory_analysis(compiled: Any) -> Any | None:
    """XLA's memory analysis of a compiled program (per device), or None where unavailable."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend or JAX version implements it
        return None
    if isinstance(analysis, (list, tuple)):  # one per device on some JAX versions
        analysis = analysis[0] if analysis else None
    return analysis


def temp_bytes(compiled: Any) -> int | None:
    """XLA's temporary bytes of a compiled program, or None where unavailable."""
    return getattr(memory_analysis(compiled), "temp_size_in_bytes", None)


def peak_bytes(compiled: Any) -> int:
    """Arguments + output + temporaries − aliased bytes of one run (per device).

    Raises:
      NotImplementedError: a backend without the analysis.
    """
    stats = memory_analysis(compiled)
    if stats is None:
        raise NotImplementedError("no memory analysis")
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def cost_analysis(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of a compiled program as a dict (``'flops'``, ``'bytes accessed'``, ...).

    JAX up to 0.4.3x wraps it in a one-element list; later releases return the dict.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return dict(analysis or {})


@dataclasses.dataclass(frozen=True)
class MachineRates:
    """This machine's float32 matmul rate and memory bandwidth, as measured by `machine_rates`."""

    flops_per_s: float
    bytes_per_s: float


@functools.cache
def machine_rates() -> MachineRates:
    """The default device's dense float32 matmul rate (a 1024² product) and copy bandwidth (64 MiB),
    each the best of 3 warm runs; measured once per process (about 0.2 s)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((1024, 1024), jnp.float32)
    big = jnp.ones((16 * 2**20,), jnp.float32)
    matmul = jax.jit(lambda m: m @ m).lower(a).compile()
    copy = jax.jit(lambda v: v * 2.0).lower(big).compile()
    matmul_s = min(_seconds(matmul, a) for _ in range(3))
    copy_s = min(_seconds(copy, big) for _ in range(3))
    return MachineRates(2 * 1024**3 / matmul_s, 2 * big.nbytes / copy_s)


def _seconds(compiled: Any, *args: Any) -> float:
    import jax

    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start


def estimated_seconds(program: Any) -> float:
    """A program's run time predicted from XLA's cost analysis and `machine_rates`: FLOPs at the
    matmul rate plus bytes at the copy bandwidth (`program`: compiled, or lowered only)."""
    analysis = cost_analysis(program)
    rates = machine_rates()
    flops, moved = analysis.get("flops", 0.0), analysis.get("bytes accessed", 0.0)
    return flops / rates.flops_per_s + moved / rates.bytes_per_s
