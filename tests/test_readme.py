"""The README's Python examples run as written (a user copies them)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# The optional model libraries the examples of "Models from flax and equinox" import, with their extras.
LIBRARIES = {"flax": "flax", "equinox": "equinox"}
# equinox 0.11 on jax 0.4.30 (the oldest supported stack) reads names that JAX deprecated, on import.
LIBRARY_WARNINGS = {
    "equinox": "import warnings\n"
    "warnings.filterwarnings('ignore', category=DeprecationWarning, module='equinox')\n"
}


def _imported_libraries(block: str) -> list[str]:
    return [name for name in LIBRARIES if re.search(rf"^(import|from) {name}\b", block, flags=re.M)]


def _example(index: int) -> object:
    """The block's index, skipped (with the reason) where it needs a model library that is not installed."""
    missing = [name for name in _imported_libraries(BLOCKS[index]) if importlib.util.find_spec(name) is None]
    reason = ", ".join(
        f"{name} is not installed (pip install 'nt-pntk[{LIBRARIES[name]}]')" for name in missing
    )
    return pytest.param(index, marks=pytest.mark.skipif(bool(missing), reason=reason))


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 2
    assert {name for block in BLOCKS for name in _imported_libraries(block)} == set(LIBRARIES)


@pytest.mark.slow
@pytest.mark.parametrize("index", [_example(i) for i in range(len(BLOCKS))])
def test_readme_example_runs(index, tmp_path):
    # A fresh interpreter, as a user's: nothing imported before the example's own imports.
    prelude = "".join(LIBRARY_WARNINGS.get(name, "") for name in _imported_libraries(BLOCKS[index]))
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", prelude + BLOCKS[index]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example prints what it shows"
