#!/usr/bin/env bash
# Rewrite requirements/constraints.txt from the current .venv (after adding or upgrading a package).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
{
    echo "# Versions that work together on CPU (pip freeze of a working .venv, $(date +%F)). Regenerate with"
    echo "# scripts/freeze-constraints.sh after changing requirements/dev.in or a pyproject."
    "$ROOT/.venv/bin/python" -m pip freeze --exclude-editable | grep -v -E "^(m2rl|#)"
} > "$ROOT/requirements/constraints.txt"
echo "wrote $ROOT/requirements/constraints.txt"
