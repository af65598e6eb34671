# Sourced by tools/serve and tools/test: create .venv if missing and install the project into it.
# EXTRAS selects optional dependencies ("" or "test"). Re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-${EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    spec="$ROOT"
    [ -n "${EXTRAS:-}" ] && spec="$ROOT[${EXTRAS}]"
    "$VENV/bin/python" -m pip install --quiet -e "$spec" >&2
    touch "$stamp"
fi
