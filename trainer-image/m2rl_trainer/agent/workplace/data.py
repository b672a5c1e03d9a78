"""The workplace's tables: read from CSV files in NeMo Gym's layout, copied per session, compared.

NeMo Gym's `workplace_assistant` resource server (NVIDIA-NeMo/Gym, also vendored in Mosi-AI/M2RL
under `M2RL/Gym/resources_servers/workplace_assistant`) keeps its state in pandas DataFrames read
with `pd.read_csv(path, dtype=str)` from `csv_data/`:

  processed/emails.csv                              email_id, inbox/outbox, sender/recipient, ...
  processed/calendar_events.csv                     event_id, event_name, participant_email, ...
  processed/analytics_data.csv                      date_of_visit, visitor_id, page_views, ...
  processed/customer_relationship_manager_data.csv  customer_id, assigned_to_email, ...
  processed/project_tasks.csv                       task_id, task_name, assigned_to_email, ...
  raw/email_addresses.csv                           one address per line, no header

A directory in that layout loads here unchanged (point `data_dir` at NeMo Gym's `csv_data`, and the
blend's `workbench` rows, whose ground-truth calls name those rows' ids, train against the same
workplace). Rows are plain dicts of strings; an empty CSV cell is None (pandas' NaN). Nothing is
shared between sessions: each one starts from a fresh copy of the initial tables.

Verification compares what NeMo Gym's `utils.is_correct` compares: the calendar, emails, plots
(analytics' only mutable table), project tasks and CRM tables, strings lower-cased except in the
`status`, `list_name` and `board` columns. Two deviations, both toward strictness or simplicity:
tables are compared as ordered lists of rows (pandas' `DataFrame.equals` also compares the index and
dtypes, which the same sequence of tool calls always leaves equal), and a non-string value a tool
stored (e.g. an integer `duration`) stays a distinct value instead of becoming NaN, as
`Series.str.lower()` would make it.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = dict[str, Any]

# table name -> (file in the CSV layout, its header)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "emails": (
        "processed/emails.csv",
        ("email_id", "inbox/outbox", "sender/recipient", "subject", "sent_datetime", "body"),
    ),
    "calendar_events": (
        "processed/calendar_events.csv",
        ("event_id", "event_name", "participant_email", "event_start", "duration"),
    ),
    "analytics": (
        "processed/analytics_data.csv",
        (
            "date_of_visit",
            "visitor_id",
            "page_views",
            "session_duration_seconds",
            "traffic_source",
            "user_engaged",
        ),
    ),
    "crm": (
        "processed/customer_relationship_manager_data.csv",
        (
            "customer_id",
            "assigned_to_email",
            "customer_name",
            "customer_email",
            "customer_phone",
            "last_contact_date",
            "product_interest",
            "status",
            "follow_up_by",
            "notes",
        ),
    ),
    "project_tasks": (
        "processed/project_tasks.csv",
        ("task_id", "task_name", "assigned_to_email", "list_name", "due_date", "board"),
    ),
}
DIRECTORY_FILE = "raw/email_addresses.csv"
PLOT_COLUMNS = ("file_path",)
# The tables a task can change and verification compares (NeMo Gym utils.is_correct).
COMPARED = ("calendar_events", "emails", "plots", "project_tasks", "crm")
CASE_SENSITIVE_COLUMNS = frozenset({"status", "list_name", "board"})


class WorkplaceDataError(ValueError):
    """A workplace data directory that cannot be used; the message names the file and line."""


def _read_table(path: Path, header: tuple[str, ...]) -> tuple[Row, ...]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise WorkplaceDataError(f"{where}: cannot read ({error.strerror or error})") from error
    reader = csv.reader(io.StringIO(text))
    try:
        found = tuple(next(reader))
    except StopIteration:
        raise WorkplaceDataError(f"{where}: empty file; expected the header {','.join(header)}") from None
    if found != header:
        raise WorkplaceDataError(f"{where} line 1: header {','.join(found)!r}; expected {','.join(header)!r}")
    rows = []
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):
            raise WorkplaceDataError(
                f"{where} line {reader.line_num}: {len(cells)} cells; the header has {len(header)}"
            )
        rows.append({name: (cell if cell != "" else None) for name, cell in zip(header, cells, strict=True)})
    return tuple(rows)


@dataclass(frozen=True)
class WorkplaceData:
    """The initial workplace: read-only tables that every session copies."""

    tables: Mapping[str, tuple[Row, ...]]
    directory: tuple[str, ...]  # the company directory's email addresses

    @classmethod
    def load(cls, data_dir: str | Path) -> WorkplaceData:
        """Read a directory in NeMo Gym's `csv_data` layout (see the module docstring)."""
        root = Path(data_dir)
        if not root.is_dir():
            raise WorkplaceDataError(f"{root}: workplace data directory does not exist")
        tables = {name: _read_table(root / file, header) for name, (file, header) in TABLES.items()}
        directory_path = root / DIRECTORY_FILE
        try:
            lines = directory_path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise WorkplaceDataError(f"{directory_path}: cannot read ({error.strerror or error})") from error
        return cls(tables=tables, directory=tuple(line.strip() for line in lines if line.strip()))

    @classmethod
    def from_rows(
        cls, tables: Mapping[str, Sequence[Mapping[str, Any]]], directory: Sequence[str]
    ) -> WorkplaceData:
        """Build from Python rows (the built-in tiny workplace, tests); a table left out is empty."""
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise WorkplaceDataError(f"unknown tables {unknown}; known: {sorted(TABLES)}")
        built = {}
        for name, (_file, header) in TABLES.items():
            rows = []
            for i, row in enumerate(tables.get(name, ())):
                if set(row) != set(header):
                    raise WorkplaceDataError(
                        f"table {name} row {i}: columns {sorted(row)}; expected {list(header)}"
                    )
                rows.append({column: row[column] for column in header})
            built[name] = tuple(rows)
        return cls(tables=built, directory=tuple(directory))

    def write(self, data_dir: str | Path) -> Path:
        """Write the CSV layout (so a service can load it with `--data`)."""
        root = Path(data_dir)
        for name, (file, header) in TABLES.items():
            path = root / file
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                for row in self.tables[name]:
                    writer.writerow(["" if row[c] is None else row[c] for c in header])
        (root / DIRECTORY_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / DIRECTORY_FILE).write_text("".join(a + "\n" for a in self.directory), encoding="utf-8")
        return root

    def fresh_state(self) -> WorkplaceState:
        return WorkplaceState(
            emails=[dict(r) for r in self.tables["emails"]],
            calendar_events=[dict(r) for r in self.tables["calendar_events"]],
            analytics=self.tables["analytics"],  # read-only: no tool changes it
            crm=[dict(r) for r in self.tables["crm"]],
            project_tasks=[dict(r) for r in self.tables["project_tasks"]],
            plots=[],
            directory=self.directory,
        )


@dataclass
class WorkplaceState:
    """One session's workplace; the tools (tools.py) read and change it."""

    emails: list[Row]
    calendar_events: list[Row]
    analytics: tuple[Row, ...]
    crm: list[Row]
    project_tasks: list[Row]
    plots: list[Row] = field(default_factory=list)
    directory: tuple[str, ...] = ()

    def copy(self) -> WorkplaceState:
        return copy.deepcopy(self)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """The compared tables as ordered row tuples, normalised as NeMo Gym compares them."""
        result = {}
        for name in COMPARED:
            header = PLOT_COLUMNS if name == "plots" else TABLES[name][1]
            result[name] = [
                tuple(_normalise(column, row.get(column)) for column in header) for row in getattr(self, name)
            ]
        return result


def _normalise(column: str, value: Any) -> Any:
    if isinstance(value, str) and column not in CASE_SENSITIVE_COLUMNS:
        return value.lower()
    return value


def differences(expected: WorkplaceState, actual: WorkplaceState, limit: int = 3) -> list[str]:
    """Human-readable differences of the compared tables (empty: equal), for rewards' details."""
    found: list[str] = []
    want, got = expected.snapshot(), actual.snapshot()
    for name in COMPARED:
        if want[name] == got[name]:
            continue
        missing = [r for r in want[name] if r not in got[name]]
        extra = [r for r in got[name] if r not in want[name]]
        if not missing and not extra:
            found.append(f"{name}: same rows in another order")
        for row in missing[:limit]:
            found.append(f"{name}: expected row {row} is missing")
        for row in extra[:limit]:
            found.append(f"{name}: unexpected row {row}")
    return found
