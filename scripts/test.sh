#!/usr/bin/env bash
# The test command: sets up .venv if needed, checks lint and format, runs the tests.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
