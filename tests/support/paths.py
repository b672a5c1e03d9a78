"""Where the project's tools live; a missing tool fails loudly with the fix."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"


def tool(name: str) -> Path:
    """Path of a project tool (helm, kubectl, prometheus, promtool, bwrap) installed by scripts/setup.sh."""
    path = TOOLS_BIN / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `bash scripts/setup.sh` to install the project's tools"
        )
    return path
