"""The trainer image's result message (termination log) and its size limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2rl_trainer.utils.results import MAX_MESSAGE_BYTES, RESULT_PATH_ENV, encode_result, write_result


def test_result_is_compact_json_written_where_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv(RESULT_PATH_ENV, str(target))
    assert write_result({"b": 1, "a": [0.5]}) == target
    assert target.read_text() == '{"a":[0.5],"b":1}'
    assert json.loads(target.read_text()) == {"a": [0.5], "b": 1}


def test_outside_a_pod_nothing_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULT_PATH_ENV, raising=False)
    if Path("/dev/termination-log").exists():
        pytest.fail("this machine has a /dev/termination-log: the test assumes it runs outside a pod")
    assert write_result({"a": 1}) is None


def test_a_result_over_the_kubelets_limit_is_refused_not_truncated() -> None:
    with pytest.raises(ValueError, match="4096"):
        encode_result({"x": "y" * MAX_MESSAGE_BYTES})
    with pytest.raises(ValueError):
        encode_result({"x": float("nan")})
