#!/usr/bin/env bash
# The test command: sets up .venv if needed, checks lint and format, builds and installs the
# wheel in a fresh environment and runs every subcommand from outside the repository
# (scripts/wheel_smoke.sh), runs the tests, runs the micro-benchmarks once without timing
# (so they keep working), and keeps the asv suite alive (asv check + one quick pass over tiny
# grids, saving nothing).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check .
ruff format --check .
bash scripts/wheel_smoke.sh
python -m pytest tests/benchmarks --benchmark-disable -q
bash asv_bench/ci.sh
bash scripts/docs.sh  # the API reference (warnings are errors) and its docstrings' examples
python asv_bench/xla_gate.py check  # XLA's FLOPs/bytes of the kernels vs asv_bench/xla_baseline.json
python -m pytest "$@"
