#!/usr/bin/env bash
# The package as a user gets it: builds the sdist, and the wheel from it (as `python -m build`
# does), installs the wheel (not editable) into a fresh virtual environment outside the
# repository with the pins of constraints.txt, and runs every subcommand on tiny problems from
# a folder outside the repository, so nothing can come from the checkout. About 1.5 minutes on
# 2 cores with pip's cache warm. Usage: bash scripts/wheel_smoke.sh
# With NT_PNTK_DIST=DIR (an empty or new folder) the sdist and the wheel are built into DIR and
# kept, and with NT_PNTK_VALIDATE_CI=DIR `nt-pntk validate --config ci` writes its results into
# DIR: scripts/test.sh sets both, so that tests/test_packaging.py inspects these sdist and wheel
# and tests/test_validation.py reads these results instead of making their own.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
unset PYTHONPATH  # the installed wheel, not the checkout

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nt-pntk-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in "$ROOT"/*) echo "wheel_smoke: $WORK is inside the repository; set TMPDIR" >&2; exit 1 ;; esac
LOGS="$WORK/logs" RUN="$WORK/run" OUTPUT="$WORK/output" DIST="${NT_PNTK_DIST:-$WORK/dist}"
mkdir -p "$LOGS" "$RUN" "$OUTPUT" "$DIST"
if [ -n "$(ls -A "$DIST")" ]; then echo "wheel_smoke: NT_PNTK_DIST=$DIST is not empty" >&2; exit 1; fi
START=$SECONDS
touch "$LOGS/failed"

# step NAME COMMAND...: runs COMMAND in $RUN, its output in $LOGS/NAME.log; one summary line.
# A failed step's name is added to $LOGS/failed (also from a step run in the background).
step() {
  local name=$1 t0=$SECONDS
  shift
  if (cd "$RUN" && "$@") >"$LOGS/$name.log" 2>&1; then
    printf '  ok    %-34s %4ds\n' "$name" $((SECONDS - t0))
  else
    printf '  FAIL  %-34s %4ds\n' "$name" $((SECONDS - t0))
    sed 's/^/        | /' "$LOGS/$name.log" | tail -n 30
    echo "$name" >>"$LOGS/failed"
  fi
}
failed() { paste -sd, "$LOGS/failed" | sed "s/,/, /g"; }

echo "wheel_smoke: building, installing and running nt-pntk in $WORK"
python -m build --version >/dev/null 2>&1 || python -m pip install --quiet -c constraints.txt build
# The isolated build environment gets hatchling at its pinned version.
step build env PIP_CONSTRAINT="$ROOT/constraints.txt" python -m build --outdir "$DIST" "$ROOT"
step venv python -m venv "$WORK/venv"
V="$WORK/venv/bin"
step install-wheel "$V/python" -m pip install -c "$ROOT/constraints.txt" "$DIST"/*.whl
# --no-deps: NT's metadata requires TensorFlow, which nt-pntk does not use (see _env.sh).
step install-neural-tangents "$V/python" -m pip install --no-deps -c "$ROOT/constraints.txt" neural-tangents
if [ -s "$LOGS/failed" ]; then
  echo "wheel_smoke: FAILED to build or install: $(failed)" >&2
  exit 1
fi
export PATH="$V:$PATH" JAX_PLATFORMS=cpu

# The startup .pth file is active and imports nothing heavy at interpreter start.
step startup-is-cheap bash -c '
  python -X importtime -c pass 2>&1 | grep -q " _nt_pntk_startup$" || { echo "the .pth file did not run"; exit 1; }
  ! python -X importtime -c pass 2>&1 | grep -E "\| +(jax|numpy|nt_pntk)(\.|$)"'
# NT first, without nt_pntk: the startup file adapts it; nt_pntk and the shipped files come from the wheel.
step import-order-free python -W error -c "
import neural_tangents, nt_pntk, pathlib, sys
from nt_pntk._src.experiments.validation import configs
assert pathlib.Path(nt_pntk.__file__).is_relative_to(sys.prefix), nt_pntk.__file__
assert {'ci.toml', 'quick.toml', 'paper.toml'} <= {p.name for p in pathlib.Path(configs.__file__).parent.iterdir()}
print(*nt_pntk.compat.applied_patches(), sep='\n')"

step version nt-pntk --version
step help nt-pntk --help
for command in $("$V/python" -c "from nt_pntk.cli import SUBCOMMANDS; print(*SUBCOMMANDS)"); do
  step "$command --help" nt-pntk "$command" --help
done

# Under the test suite's strict settings (warnings are errors, no rank promotion; tests/conftest.py):
# tests/test_validation.py checks these results when NT_PNTK_VALIDATE_CI is set. The longest step:
# it runs beside the ones below (on the second core), its summary line printed after theirs.
step "validate --config ci" env PYTHONWARNINGS=error JAX_NUMPY_RANK_PROMOTION=raise \
  nt-pntk validate --config ci --output "${NT_PNTK_VALIDATE_CI:-$OUTPUT/validate}" --no-progress \
  >"$LOGS/validate-summary.txt" &
VALIDATE=$!
step kernel nt-pntk kernel --model fc --width 8 --n 40 --output "$OUTPUT/k.npy" --no-progress
step kernel-is-a-gram-matrix python -c "
import numpy as np
k = np.load('$OUTPUT/k.npy').astype(np.float64)
assert k.shape == (40, 40), k.shape
np.testing.assert_allclose(k, k.T, rtol=0, atol=1e-5 * np.abs(k).max())
assert np.linalg.eigvalsh(k).min() > -1e-4 * np.abs(k).max()"
step compare nt-pntk compare --width 8 --outputs 2 --n-train 16 --n-test 8 --repeats 1 --csv "$OUTPUT/compare.csv"
step demo nt-pntk demo --n 8 --outputs 2 --width 2 --implementations 1 --repeats 1 --csv "$OUTPUT/demo.csv"
step figure1 nt-pntk figure1 --depths 10 --outputs 2 --width 2 --image-size 8 --repeats 1 --output "$OUTPUT/figure1"
# No asv results beside an installed package: one line on stderr and exit code 1 (a failure, not a usage error).
step bench-report-without-results bash -c '
  nt-pntk bench-report --plots "" 2>stderr.txt && { echo "exit code 0"; exit 1; }
  code=$?; cat stderr.txt
  [ "$code" = 1 ] || { echo "exit code $code, expected 1"; exit 1; }
  [ "$(wc -l <stderr.txt)" = 1 ] && grep -q "^nt-pntk bench-report: error: no asv results" stderr.txt'
wait "$VALIDATE"
cat "$LOGS/validate-summary.txt"

if [ -s "$LOGS/failed" ]; then
  echo "wheel_smoke: $((SECONDS - START)) s, $(wc -l <"$LOGS/failed") failed: $(failed)"
  exit 1
fi
echo "wheel_smoke: $((SECONDS - START)) s, 0 failed"
