"""Sphinx configuration of nt-pntk's documentation: the user guide, the CLI reference and the API reference.

Built by ``bash scripts/docs.sh`` offline (no intersphinx, nothing downloaded; furo's
styles and scripts ship in its wheel), warnings as errors; the doctest builder runs
every ``>>>`` example of the guide and of the documented docstrings. The guide's
longer examples are files in ``docs/examples/`` that tests/test_readme.py runs.
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
sys.path.insert(0, str(ROOT / "docs"))  # cli_parsers, for the CLI reference

import nt_pntk  # noqa: E402  (before neural_tangents: installs the import hook)

project = "nt-pntk"
author = "nt-pntk contributors"
copyright = "nt-pntk contributors"
version = release = nt_pntk.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinxarg.ext",  # the CLI reference, from the argument parsers
    "sphinx_copybutton",
]
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
# Quotes and ellipses only: `--option` must not become an en dash.
smartquotes_action = "qe"
html_theme = "furo"
html_title = f"nt-pntk {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
# The copy button leaves out prompts (`$ `, `>>> `, `... `) and the output lines after them.
copybutton_prompt_text = r"\$ |>>> |\.\.\. "
copybutton_prompt_is_regexp = True
