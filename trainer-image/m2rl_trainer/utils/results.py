"""A Job's result for the operator: a compact JSON in the container's termination message.

Kubernetes copies the file at `terminationMessagePath` (default `/dev/termination-log`, at most
4096 bytes) into the pod's status when the container ends; the operator reads it from there. This
way the merge and eval pods report their summary without any access to the Kubernetes API.
Full reports go next to the outputs on the volume; the message carries only what the custom
resource's status shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TERMINATION_LOG = "/dev/termination-log"
RESULT_PATH_ENV = "M2RL_RESULT_PATH"
MAX_MESSAGE_BYTES = 4096  # the kubelet truncates longer messages


def encode_result(result: dict[str, Any]) -> str:
    """Compact JSON of `result`; a ValueError when it exceeds the 4096-byte limit."""
    text = json.dumps(result, separators=(",", ":"), sort_keys=True, allow_nan=False)
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"result summary is {len(text.encode())} bytes; a termination message holds {MAX_MESSAGE_BYTES}"
        )
    return text


def write_result(result: dict[str, Any], path: str | Path | None = None) -> Path | None:
    """Write `result` where the kubelet will pick it up.

    `path` defaults to $M2RL_RESULT_PATH, else /dev/termination-log when it is writable (in a pod);
    outside a pod nothing is written and None is returned.
    """
    text = encode_result(result)
    target = Path(path or os.environ.get(RESULT_PATH_ENV) or TERMINATION_LOG)
    if path is None and RESULT_PATH_ENV not in os.environ and not os.access(target, os.W_OK):
        return None
    target.write_text(text)
    return target
