"""Strict JAX settings for the whole suite, JAX's persistent compilation cache, and the `float64`
fixture.

Warnings are errors (``filterwarnings`` in pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import pytest

#: XLA_FLAGS as this process found it, before nt_pntk adds its workaround (`nt_pntk.compat`).
XLA_FLAGS = os.environ.get("XLA_FLAGS", "")

import nt_pntk  # noqa: E402, F401  (first of all: makes neural_tangents importable for every test module)

# The shared test helpers (`reference.py`) are importable from every test module
# whatever pytest's import mode (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).parent))

# As in equinox's test suite: implicit broadcasting of arrays of different rank
# is a bug, not a convenience.
jax.config.update("jax_numpy_rank_promotion", "raise")

#: The folder of JAX's persistent compilation cache for this run (scripts/test.sh sets it; otherwise
#: a temporary folder made for the session, shared with pytest-xdist's workers through the
#: environment, and removed at its end). Many tests compile the same program from other closures
#: (every network × route × implementation is rebuilt per test): such a program is then loaded, not
#: compiled again. Only this process's compiles: child processes start without it.
CACHE_VARIABLE = "NT_PNTK_TEST_JAX_CACHE"


def pytest_configure(config):
    if not os.environ.get(CACHE_VARIABLE) and not hasattr(config, "workerinput"):
        os.environ[CACHE_VARIABLE] = config._nt_pntk_cache = tempfile.mkdtemp(prefix="nt-pntk-jax-cache-")
    os.makedirs(os.environ[CACHE_VARIABLE], exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_VARIABLE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    """pytest-xdist's workers start with XLA_FLAGS as this process found it: each imports nt_pntk
    first, which then applies its workaround itself (tests/test_xla_cpu.py checks that)."""
    for spec in specs:
        spec.env["XLA_FLAGS"] = XLA_FLAGS


def pytest_unconfigure(config):
    made = getattr(config, "_nt_pntk_cache", None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop(CACHE_VARIABLE, None)


@pytest.fixture
def float64():
    """Enables `jax_enable_x64` for one test and restores the previous value afterwards.

    Build the parameters and inputs inside the test, after the switch.
    """
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def count_tiles(monkeypatch):
    """Counts the tiles `kernel_matrix` records (computed and written) from now on."""
    from nt_pntk._src.tiled import storage

    counter = {"tiles": 0}
    mark = storage.Record.mark

    def counting(self, *args, **kwargs):
        counter["tiles"] += 1
        return mark(self, *args, **kwargs)

    monkeypatch.setattr(storage.Record, "mark", counting)
    return counter


def pytest_addoption(parser):
    parser.addoption(
        "--sweep",
        action="store_true",
        help="also run the differential test matrix's full sweep (about 1,200 cases; `nox -s differential`)",
    )


def pytest_collection_modifyitems(config, items):
    """The sweep runs only with --sweep, whatever -m says (so `-m "not slow"` stays quick)."""
    if config.getoption("--sweep"):
        return
    sweep = [item for item in items if item.get_closest_marker("sweep")]
    if sweep:
        config.hook.pytest_deselected(items=sweep)
        items[:] = [item for item in items if not item.get_closest_marker("sweep")]
