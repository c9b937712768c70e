#!/usr/bin/env bash
# The documentation: the user guide (docs/guide/), the CLI reference generated from the argument
# parsers (sphinx-argparse) and the API reference from the docstrings (autodoc, napoleon), built
# with Sphinx and the furo theme offline (no intersphinx: nothing is downloaded) and with warnings
# as errors; then every `>>>` example of the guide and of the documented docstrings runs (Sphinx's
# doctest builder; the guide's example files are run by tests/test_readme.py). The pages land in
# build/docs/html/index.html (or under $1: bash scripts/docs.sh OUTPUT_DIR). Sphinx and its
# extensions are the `docs` extra, which scripts/_env.sh installs with the rest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
OUT="${1:-$ROOT/build/docs}"
# One environment for both builders: the docstrings are read (and checked) once, by the first.
SPHINX=(python -m sphinx -W --keep-going -q -d "$OUT/doctrees")
"${SPHINX[@]}" -E -b html docs "$OUT/html"
"${SPHINX[@]}" -b doctest docs "$OUT/doctest"
echo "Documentation: $OUT/html/index.html (examples run: $OUT/doctest/output.txt)"
