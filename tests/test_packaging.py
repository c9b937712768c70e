"""The sdist and the wheel hold what an installed nt-pntk needs, and declare what it imports.

Builds both with ``python -m build`` (the wheel from the sdist, as pip does from PyPI's
sdist) into a temporary folder, or takes those that ``scripts/wheel_smoke.sh`` built and
installed in this run of the test command (``NT_PNTK_DIST``, set by ``scripts/test.sh``: one
build for both), and checks them against the checkout: every module and
shipped TOML configuration, the startup ``.pth`` file and its module, the command's entry
point, and a declared dependency for every third-party import. Installing the wheel and
running it is ``scripts/wheel_smoke.sh``.
"""

from __future__ import annotations

import ast
import email
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import nt_pntk

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nt_pntk"
CONFIGS = PACKAGE / "_src" / "experiments" / "validation" / "configs"

# Imported, but not declared: neural-tangents' metadata requires TensorFlow, so it is installed
# with `pip install --no-deps` (see pyproject.toml); its own dependencies are declared instead.
NOT_DECLARED = {"neural_tangents"}
# Declared, but not imported by nt_pntk: jaxlib (jax's backend, pinned with jax) and frozendict
# (a dependency of neural-tangents, which is installed without its dependencies).
DECLARED_NOT_IMPORTED = {"jaxlib", "frozendict"}
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn"}

pytestmark = pytest.mark.slow  # builds in an isolated environment (a few seconds; hatchling from pip)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    if os.environ.get("NT_PNTK_DIST"):  # built by scripts/wheel_smoke.sh for this checkout
        return Path(os.environ["NT_PNTK_DIST"])
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


def _wheel_names(dist: Path) -> set[str]:
    with zipfile.ZipFile(_only(dist, "*.whl")) as wheel:
        return set(wheel.namelist())


def _wheel_text(dist: Path, name: str) -> str:
    with zipfile.ZipFile(_only(dist, "*.whl")) as wheel:
        return wheel.read(name).decode()


def _dist_info(dist: Path) -> str:
    return f"nt_pntk-{nt_pntk.__version__}.dist-info"


def test_names_carry_the_version(dist):
    assert _only(dist, "*.whl").name == f"nt_pntk-{nt_pntk.__version__}-py3-none-any.whl"
    assert _only(dist, "*.tar.gz").name == f"nt_pntk-{nt_pntk.__version__}.tar.gz"


def test_wheel_holds_every_module_and_shipped_config(dist):
    names = _wheel_names(dist)
    in_checkout = {
        p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts
    }
    configs = {p.relative_to(ROOT).as_posix() for p in CONFIGS.glob("*.toml")}
    assert {"ci.toml", "quick.toml", "paper.toml"} <= {Path(c).name for c in configs}
    assert not (in_checkout | configs) - names
    assert not {n for n in names if n.startswith("tests/") or n.startswith("startup/")}


def test_wheel_holds_the_startup_file_at_its_root(dist):
    # site-packages/nt_pntk_startup.pth runs `import _nt_pntk_startup` at interpreter start.
    names = _wheel_names(dist)
    assert {"nt_pntk_startup.pth", "_nt_pntk_startup.py"} <= names
    assert _wheel_text(dist, "nt_pntk_startup.pth").strip() == "import _nt_pntk_startup"
    module = _wheel_text(dist, "_nt_pntk_startup.py")
    assert module == (ROOT / "startup" / "_nt_pntk_startup.py").read_text(encoding="utf-8")
    # Run for every Python program in the environment: imports only `sys`.
    imports = [n for n in ast.walk(ast.parse(module)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    top_level = [n for n in imports if n.col_offset == 0]
    assert [alias.name for n in top_level for alias in n.names] == ["sys"]


def test_wheel_declares_the_command(dist):
    entry_points = _wheel_text(dist, f"{_dist_info(dist)}/entry_points.txt")
    assert re.search(r"^\[console_scripts\]\nnt-pntk = nt_pntk\.cli:main$", entry_points, re.M), entry_points


def _third_party_imports() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"nt_pntk"}


def test_every_import_is_a_declared_dependency(dist):
    metadata = email.message_from_string(_wheel_text(dist, f"{_dist_info(dist)}/METADATA"))
    requires = metadata.get_all("Requires-Dist")
    # Only the base dependencies (no `extra == ...` marker): what `pip install nt-pntk` brings.
    declared = {
        re.match(r"[A-Za-z0-9_.-]+", r).group().lower().replace("_", "-")
        for r in requires
        if "extra ==" not in r
    }
    imported = {DISTRIBUTION.get(m, m).replace("_", "-") for m in _third_party_imports() - NOT_DECLARED}
    assert {"jax", "numpy", "scipy", "tomli"} <= imported  # the scan sees imports in functions too
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == DECLARED_NOT_IMPORTED, "declared but not imported"
    assert "neural-tangents" not in declared
    (tomli,) = (r for r in requires if r.startswith("tomli"))
    assert re.search(r"python_version *< *[\"']3\.11[\"']", tomli), tomli  # tomllib: standard since 3.11


def test_sdist_holds_what_the_build_and_the_tests_need(dist):
    with tarfile.open(_only(dist, "*.tar.gz")) as sdist:
        names = {n.partition("/")[2] for n in sdist.getnames()}
    needed = {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "constraints.txt",
        "nt_pntk/_version.py",
        "startup/nt_pntk_startup.pth",
        "startup/_nt_pntk_startup.py",
        "tests/conftest.py",
        "tests/test_packaging.py",
        *(p.relative_to(ROOT).as_posix() for p in CONFIGS.glob("*.toml")),
        # tests/test_readme.py runs the user guide's examples and checks the README's links.
        *(
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "docs").rglob("*.*")
            if "__pycache__" not in p.parts
        ),
    }
    assert not needed - names
