#!/usr/bin/env bash
# Runs nt-pntk's asv suite. Sets up .venv first (scripts/_env.sh), then in asv_bench/:
#
#   asv_bench/run.sh [ASV-RUN-OPTIONS]          the working tree, in the project's own .venv
#                                               (asv's "existing" environment: no build), saved
#                                               under the hash of HEAD (`--set-commit-hash`;
#                                               without it asv saves nothing)
#   asv_bench/run.sh range A..B [OPTIONS]       every commit in the git range A..B, each built
#                                               into asv's own virtualenv (asv_bench/env/) from
#                                               the package registry, neural-tangents --no-deps
#   asv_bench/run.sh publish                    the HTML site, asv_bench/html/ (`asv preview`
#                                               serves it)
#   asv_bench/run.sh report [BENCH-REPORT-OPTIONS]
#                                               `nt-pntk bench-report`: fitted exponents, plots,
#                                               `--compare A B`
#
# ASV-RUN-OPTIONS go to `asv run`, e.g. `-b FCTime` (a regular expression on benchmark
# names) or `--show-stderr`. NT_PNTK_BENCH_QUICK=1 shrinks every grid to two points (CI).
# The full suite takes about 15 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/_env.sh"
cd "$ROOT/asv_bench"
# The machine description asv records with the results; --yes takes the defaults, no prompt.
asv machine --yes >/dev/null

case "${1:-}" in
  range)
    shift
    [ $# -ge 1 ] || { echo "usage: $0 range A..B [asv run options]" >&2; exit 2; }
    asv run "$@"
    ;;
  publish)
    shift
    asv publish "$@"
    ;;
  report)
    shift
    exec nt-pntk bench-report --results "$ROOT/asv_bench/results" "$@"
    ;;
  *)
    asv run -E "existing:$(command -v python)" --set-commit-hash "$(git rev-parse HEAD)" "$@"
    ;;
esac
