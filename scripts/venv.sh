# Sourced by scripts/dashboard and scripts/test: create .venv in the repo root and install the
# given requirements file (once per content of the requirements files), plus this repo itself.
# usage: . scripts/venv.sh requirements.txt|requirements-dev.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="${1:-requirements.txt}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "qCBR Studio needs Python 3.11 or newer as '$PY' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "== creating $ROOT/.venv" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.installed-$(cat "$ROOT/requirements.txt" "$ROOT/$REQ" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$(basename "$REQ")"
if [ ! -f "$STAMP" ]; then
  echo "== installing $REQ into .venv (first run takes a few minutes)" >&2
  "$ROOT/.venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >&2
  "$ROOT/.venv/bin/python" -m pip install --disable-pip-version-check -q -r "$ROOT/$REQ" >&2
  "$ROOT/.venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e "$ROOT" >&2
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
