"""Strict JAX settings for the whole suite, and the `float64` fixture.

Warnings are errors (``filterwarnings = ["error"]`` in pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

import nt_pntk  # noqa: F401  (first of all: makes neural_tangents importable for every test module)

# The shared test helpers (`reference.py`) are importable from every test module
# whatever pytest's import mode (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).parent))

# As in equinox's test suite: implicit broadcasting of arrays of different rank
# is a bug, not a convenience.
jax.config.update("jax_numpy_rank_promotion", "raise")


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
