#!/usr/bin/env bash
# Keeps the asv suite alive in CI, in about 2 minutes on 2 cores: `asv check` (every
# benchmark imports and has a valid signature), then every benchmark once on tiny grids
# (NT_PNTK_BENCH_QUICK=1, `--quick`), in the project's .venv, saving nothing (`--dry-run`).
# asv exits 2 when a benchmark fails. Then the report code on what a quick run produces
# is covered by tests/test_bench_report.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/_env.sh"
cd "$ROOT/asv_bench"
PY="$(command -v python)"
asv machine --yes >/dev/null
asv check -E "existing:$PY"
NT_PNTK_BENCH_QUICK=1 asv run -E "existing:$PY" --quick --dry-run --show-stderr "$@"
