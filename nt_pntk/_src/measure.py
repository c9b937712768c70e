"""The one home of measurement: wall time of compiled calls, peak RSS, and XLA's memory and FLOPs.

Used by the command line (``demo``, ``compare``, ``figure1``), the tiling
planner (XLA's memory analysis of the programs it will run) and the asv suite,
so that every figure the package prints is measured the same way.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds: the compilation, and the median of `runs` timed calls after one warm-up call."""

    compile_s: float
    median_s: float
    runs: int
    warmup_s: float


def time_compiled(
    fn: Callable, *args: Any, repeats: int = 3, time_budget: float = 30.0
) -> tuple[Timing, Any]:
    """Compiles ``jax.jit(fn)`` for `args`, calls it once to warm up, then times up to `repeats` calls.

    Fewer calls (at least one) when the warm-up shows they would take longer than
    `time_budget` seconds. Every call ends with ``block_until_ready``.

    Returns:
      ``(Timing, value of the last call)``.
    """
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
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


def physical_memory_bytes() -> int:
    """The machine's physical memory (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


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
