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
# The editable install copies the startup module into site-packages: reinstall when it changes.
NEWER=("$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/startup/_nt_pntk_startup.py")
needs_install=0
[ -f "$STAMP" ] || needs_install=1
for file in "${NEWER[@]}"; do if [ "$file" -nt "$STAMP" ]; then needs_install=1; fi; done
if [ "$needs_install" = 1 ]; then
  "$PY" -m pip install --quiet --upgrade pip
  # PIP_CONSTRAINT also pins the build backend in pip's isolated build environment.
  PIP_CONSTRAINT="$ROOT/constraints.txt" \
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test,bench,flax,equinox,docs]"
  "$PY" -m pip install --quiet --no-deps -c "$ROOT/constraints.txt" neural-tangents
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
