"""The README's and the user guide's Python examples run as written (a user copies them).

The README's ```python blocks and the guide's example files (``docs/examples/*.py``, shown in
the guide with ``literalinclude``) each run in a fresh interpreter; the guide's short ``>>>``
examples are doctests of the docs build (``scripts/docs.sh``).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
EXAMPLE_FILES = sorted((DOCS / "examples").glob("*.py"))
# name -> code: what a user copies from the README and from the guide.
EXAMPLES = {
    **{f"README.md[{i}]": block for i, block in enumerate(README_BLOCKS)},
    **{path.relative_to(ROOT).as_posix(): path.read_text() for path in EXAMPLE_FILES},
}
# The optional model libraries the guide's "Models from flax and equinox" imports, with their extras.
LIBRARIES = {"flax": "flax", "equinox": "equinox"}
# equinox 0.11 on jax 0.4.30 (the oldest supported stack) reads names that JAX deprecated, on import.
LIBRARY_WARNINGS = {
    "equinox": "import warnings\n"
    "warnings.filterwarnings('ignore', category=DeprecationWarning, module='equinox')\n"
}
README_MAX_LINES = 200


def _imported_libraries(code: str) -> list[str]:
    return [name for name in LIBRARIES if re.search(rf"^(import|from) {name}\b", code, flags=re.M)]


def _example(name: str) -> object:
    """The example's name, skipped (with the reason) where it needs a model library that is not installed."""
    missing = [lib for lib in _imported_libraries(EXAMPLES[name]) if importlib.util.find_spec(lib) is None]
    reason = ", ".join(f"{lib} is not installed (pip install 'nt-pntk[{LIBRARIES[lib]}]')" for lib in missing)
    return pytest.param(name, marks=pytest.mark.skipif(bool(missing), reason=reason), id=name)


def test_the_readme_is_short_and_has_its_example():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; the rest belongs in docs/guide/"
    )
    assert len(README_BLOCKS) >= 1
    assert len(EXAMPLE_FILES) >= 4
    assert {name for code in EXAMPLES.values() for name in _imported_libraries(code)} == set(LIBRARIES)


def test_the_readme_links_to_files_that_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert any(t.startswith("docs/guide/") for t in local)
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_every_guide_example_is_shown_in_the_guide():
    # An example file no page includes would be tested but never read; a missing one fails the docs build.
    included = {
        (page.parent / target).resolve()
        for page in DOCS.rglob("*.rst")
        for target in re.findall(r"^\.\. literalinclude:: (\S+\.py)$", page.read_text(), flags=re.M)
    }
    assert [p.name for p in EXAMPLE_FILES if p.resolve() not in included] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", [_example(name) for name in EXAMPLES])
def test_example_runs(name, tmp_path):
    # A fresh interpreter, as a user's: nothing imported before the example's own imports.
    code = EXAMPLES[name]
    prelude = "".join(LIBRARY_WARNINGS.get(lib, "") for lib in _imported_libraries(code))
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example prints what it shows"
