#!/usr/bin/env bash
# The API reference, built from the docstrings with Sphinx (autodoc, napoleon, mathjax, doctest)
# offline (no intersphinx: nothing is downloaded) and with warnings as errors; then every `>>>`
# example of the documented docstrings runs (Sphinx's doctest builder). The pages land in
# build/docs/html/index.html (or under $1: bash scripts/docs.sh OUTPUT_DIR). Sphinx is the `docs`
# extra, which scripts/_env.sh installs with the rest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
OUT="${1:-$ROOT/build/docs}"
# One environment for both builders: the docstrings are read (and checked) once, by the first.
SPHINX=(python -m sphinx -W --keep-going -q -d "$OUT/doctrees")
"${SPHINX[@]}" -E -b html docs "$OUT/html"
"${SPHINX[@]}" -b doctest docs "$OUT/doctest"
echo "API reference: $OUT/html/index.html (examples run: $OUT/doctest/output.txt)"
