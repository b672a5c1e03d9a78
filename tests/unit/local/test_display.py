"""Progress: plain lines (not a terminal) at most every interval per resource, and rich's live table."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from m2rl_operator.local.display import Display, LiveDisplay, Row, duration

RUNNING = Row("RLVRRun/expert-math", "Running", 12, 30, 0.5312, 65.0, 90.0)
EVAL = Row("EvalSuite/quickstart", "Running", 3, 12, None, 30.0, None, unit="models")


def test_plain_lines_and_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    display = Display(tmp_path / "run.log", stream=out, interval_s=3600)
    display.event("RLVRRun/expert-math: Pending -> Running")
    display.update([RUNNING, EVAL, Row("MergeJob/ties", "Waiting")])
    display.update([RUNNING])  # within the interval: nothing new
    display.close()
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "RLVRRun/expert-math: Pending -> Running",
        "RLVRRun/expert-math: Running  12/30  0.531  1m05s  1m30s",
        "EvalSuite/quickstart: Running  3/12 models  30s",
    ]
    assert (tmp_path / "run.log").read_text() == out.getvalue()


def test_the_live_table_redraws_in_place() -> None:
    out = io.StringIO()
    display = LiveDisplay(console=Console(file=out, force_terminal=True, width=120))
    display.update([RUNNING, EVAL])
    display.event("MergeJob/ties: Waiting -> Running")
    display.close()
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movements: the table is redrawn, not appended
    for cell in ("RESOURCE", "ETA", "RLVRRun/expert-math", "12/30", "0.531", "1m30s", "3/12 models"):
        assert cell in text
    assert "MergeJob/ties: Waiting -> Running" in text


def test_durations() -> None:
    assert [duration(s) for s in (None, 9.9, 60, 3725)] == ["", "9s", "1m00s", "62m05s"]
