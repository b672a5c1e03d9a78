"""Progress in the terminal: one line per resource, updated in place (rich), or plain lines.

On a terminal, rich's Live redraws a table (resource, phase, step/total, reward, elapsed, ETA)
twice a second, with events (phase changes, restarts, failures) printed above it. When stdout is
not a terminal (CI, a pipe, a log file), the same information comes as plain lines: every event,
and a progress line per running resource at most every `interval_s` seconds. Every line also goes
to WORKDIR/run.log.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True)
class Row:
    """What the display shows of one resource."""

    key: str  # Kind/name
    phase: str
    done: int | None = None  # steps, or models evaluated
    total: int | None = None
    reward: float | None = None  # the latest step's mean reward (runs)
    elapsed: float | None = None  # seconds since it started in this invocation
    eta: float | None = None  # seconds left, from the pace so far
    unit: str = "steps"

    def cells(self) -> list[str]:
        progress = f"{self.done if self.done is not None else '-'}/{self.total}" if self.total else ""
        if progress and self.unit != "steps":
            progress += f" {self.unit}"
        return [
            self.key,
            self.phase,
            progress,
            "" if self.reward is None else f"{self.reward:.3f}",
            duration(self.elapsed),
            duration(self.eta) if self.eta is not None and self.phase in ("Running", "Starting") else "",
        ]


HEADERS = ["RESOURCE", "PHASE", "PROGRESS", "REWARD", "ELAPSED", "ETA"]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Display:
    """Plain lines (the fallback, and the base of the live display)."""

    def __init__(self, log_path: Path | None = None, stream: TextIO | None = None, interval_s: float = 30.0):
        self.stream = stream or sys.stdout
        self.log = log_path.open("a") if log_path is not None else None
        self.interval_s = interval_s
        self.last_line: dict[str, tuple[float, str]] = {}

    def _emit(self, line: str) -> None:
        stamped = f"[m2rl {time.strftime('%H:%M:%S')}] {line}"
        print(stamped, file=self.stream, flush=True)
        if self.log is not None:
            self.log.write(stamped + "\n")
            self.log.flush()

    def event(self, message: str) -> None:
        self._emit(message)

    def update(self, rows: list[Row]) -> None:
        now = time.monotonic()
        for row in rows:
            if row.phase not in ("Running", "Starting"):
                continue
            text = "  ".join(c for c in row.cells()[1:] if c)
            last = self.last_line.get(row.key)
            if last is None or (now - last[0] >= self.interval_s and last[1] != text):
                self.last_line[row.key] = (now, text)
                self._emit(f"{row.key}: {text}")

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


class LiveDisplay(Display):
    """rich's Live table, redrawn in place; events scroll above it."""

    def __init__(self, log_path: Path | None = None, console: Any = None) -> None:
        super().__init__(log_path)
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def _emit(self, line: str) -> None:
        stamped = f"[m2rl {time.strftime('%H:%M:%S')}] {line}"
        self.console.print(stamped, markup=False, highlight=False)
        if self.log is not None:
            self.log.write(stamped + "\n")
            self.log.flush()

    def update(self, rows: list[Row]) -> None:
        self.live.update(self._table(rows))

    def _table(self, rows: list[Row]) -> Any:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for header in HEADERS:
            table.add_column(header, no_wrap=True)
        styles = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Starting": "cyan"}
        for row in rows:
            table.add_row(*row.cells(), style=styles.get(row.phase))
        return table

    def close(self) -> None:
        self.live.stop()
        super().close()


def make_display(log_path: Path | None, plain: bool = False) -> Display:
    """The live table on a terminal (when rich is installed), plain lines otherwise."""
    if not plain and sys.stdout.isatty():
        try:
            return LiveDisplay(log_path)
        except ImportError:
            pass
    return Display(log_path)
