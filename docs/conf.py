"""Sphinx configuration of nt-pntk's API reference, built from the docstrings.

Built by ``bash scripts/docs.sh`` offline (no intersphinx, nothing downloaded),
warnings as errors; the doctest builder runs every ``>>>`` example of the
documented docstrings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The examples' programs are tiny: XLA's slow optimizations would double the build's time for nothing.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, whether or not nt-pntk is installed

import nt_pntk  # noqa: E402  (before neural_tangents: installs the import hook)

project = "nt-pntk"
author = "nt-pntk contributors"
copyright = "nt-pntk contributors"
version = release = nt_pntk.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.doctest"]
exclude_patterns = ["_build"]
# `name` in a docstring links to that object where Sphinx knows it (plain code text otherwise).
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The doctest builder also runs the plain `>>>` blocks of the docstrings (autodoc puts them in the pages).
doctest_test_doctest_blocks = "default"
doctest_global_setup = "import nt_pntk"
html_theme = "alabaster"
html_static_path: list[str] = []
html_show_sourcelink = False
