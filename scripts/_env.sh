# Sourced by the scripts here: creates .venv (once) and installs nt-pntk with the
# pinned versions of constraints.txt. neural-tangents goes in with --no-deps because
# its metadata asks for TensorFlow, which nt-pntk does not use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NT_PNTK_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.nt-pntk-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/constraints.txt" -nt "$STAMP" ]; then
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test,bench,flax,equinox]"
  "$PY" -m pip install --quiet --no-deps -c "$ROOT/constraints.txt" neural-tangents
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
