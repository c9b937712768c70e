#!/usr/bin/env bash
# The test command: sets up .venv if needed, checks lint and format, builds and installs the
# wheel in a fresh environment and runs every subcommand from outside the repository
# (scripts/wheel_smoke.sh), runs the micro-benchmarks once without timing (so they keep
# working), checks XLA's figures of the benchmarked kernels against the baseline (the FLOP
# gate), keeps the asv suite alive (asv check + one quick pass over tiny grids, saving
# nothing), builds the documentation and runs the tests, on two pytest-xdist workers (one file
# per worker at a time; NT_PNTK_TEST_WORKERS=N for another number). Arguments go to pytest.
#
# Each thing is made once: the sdist and the wheel of wheel_smoke.sh are the ones that
# tests/test_packaging.py inspects (NT_PNTK_DIST), the `validate --config ci` results of
# wheel_smoke.sh are the ones tests/test_validation.py checks (NT_PNTK_VALIDATE_CI), and the
# asv pass loads the programs the gate compiled from JAX's persistent cache (--jax-cache,
# NT_PNTK_BENCH_JAX_CACHE). The tests share one persistent compilation cache of their own
# (NT_PNTK_TEST_JAX_CACHE, tests/conftest.py): a program that a test compiled, another test or
# worker loads. The time of each stage is printed at the end, also when a stage fails (which
# fails the command).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
SHARED="$(mktemp -d "${TMPDIR:-/tmp}/nt-pntk-test.XXXXXX")"
export NT_PNTK_DIST="$SHARED/dist" NT_PNTK_VALIDATE_CI="$SHARED/validate-ci"
export NT_PNTK_TEST_JAX_CACHE="$SHARED/test-jax-cache"
TIMES=() STAGE="" STAGE_START=0 START=$SECONDS

# stage NAME COMMAND...: runs COMMAND, its time recorded under NAME.
stage() {
  STAGE=$1 STAGE_START=$SECONDS
  shift
  echo "=== $STAGE"
  "$@"
  TIMES+=("$(printf '  %-16s %5d s' "$STAGE" $((SECONDS - STAGE_START)))")
  STAGE=""
}

summary() {
  local code=$?
  rm -rf "$SHARED"
  echo "=== stage times"
  if [ ${#TIMES[@]} -gt 0 ]; then printf '%s\n' "${TIMES[@]}"; fi
  if [ -n "$STAGE" ]; then printf '  %-16s %5d s  FAILED\n' "$STAGE" $((SECONDS - STAGE_START)); fi
  printf '  %-16s %5d s\n' total $((SECONDS - START))
  exit "$code"
}
trap summary EXIT

stage ruff bash -c 'ruff check . && ruff format --check .'
stage wheel-smoke bash scripts/wheel_smoke.sh
stage micro-bench python -m pytest tests/benchmarks --benchmark-disable -q
# XLA's FLOPs/bytes of the kernels vs asv_bench/xla_baseline.json; its compiled programs are
# kept for the asv pass.
stage xla-gate python asv_bench/xla_gate.py check --jax-cache "$SHARED/jax-cache"
stage asv env NT_PNTK_BENCH_JAX_CACHE="$SHARED/jax-cache" bash asv_bench/ci.sh
stage docs bash scripts/docs.sh  # the user guide and API reference (warnings are errors), examples run
# The slowest tests listed: their cost stays visible.
stage pytest python -m pytest -n "${NT_PNTK_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
