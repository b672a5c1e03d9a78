#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup.sh), checks style (ruff), runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

phase() { printf '[test] %s: %s s\n' "$1" "$2"; }

t0=$SECONDS
bash scripts/setup.sh
phase "set-up" $((SECONDS - t0))

t0=$SECONDS
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet operator trainer-image tests bench >/dev/null || {
    echo "[test] ruff format would change files: run .venv/bin/ruff format operator trainer-image tests bench" >&2
    exit 1
}
phase "ruff" $((SECONDS - t0))

export PATH="$ROOT/.tools/bin:$ROOT/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# DeepSpeed's CPU comm op is compiled per run into the checkout: a build killed mid-way elsewhere
# leaves a lock file in ~/.cache/torch_extensions that makes every later DeepSpeed start wait forever.
export TORCH_EXTENSIONS_DIR="$ROOT/.cache/torch_extensions"
# pytest prints its own duration on its closing summary line, which must stay the last line.
exec .venv/bin/pytest "$@"
