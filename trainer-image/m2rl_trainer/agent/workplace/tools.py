"""The workplace's tools: NeMo Gym `workplace_assistant`'s 27 functions over a `WorkplaceState`.

Names, parameters, return values and error strings follow NeMo Gym's `workplace_assistant_tools/`
(company_directory.py, email.py, calendar.py, analytics.py, project_management.py,
customer_relationship_manager.py), re-implemented over plain rows instead of pandas DataFrames:

- `str.contains(x, case=False)` filters are regular expressions there, and are here (`re.search`
  with IGNORECASE); a cell that is None never matches.
- Dates parse with `datetime.fromisoformat` where NeMo Gym uses `pd.Timestamp` (both accept
  "YYYY-MM-DD" and "YYYY-MM-DD HH:MM:SS", the formats the schemas ask for).
- New ids: the largest existing id (string order, as pandas' `max` of a string column) plus one;
  zero-padded to 8 digits except emails (NeMo Gym's email ids are not padded).
- Ties in date-sorted search results keep table order (a stable sort; pandas' default is not).

`call_tool` is the one entry point (the service, the in-process environment and verification's
replay all use it): it drops None arguments (as NeMo Gym's route does), checks the call against the
tool's schema with the messages of the M2RL study's agent (`trainable_agents._validate_tool_action`)
and turns any exception into NeMo Gym's "Error executing tool '<name>': ..." observation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from m2rl_trainer.agent.workplace.data import TABLES, Row, WorkplaceState

CURRENT_TIME = "2023-11-30 23:59:00"  # NeMo Gym's HARDCODED_CURRENT_TIME (email.py)
CRM_STATUSES = ("Qualified", "Won", "Lost", "Lead", "Proposal")
CRM_PRODUCTS = ("Software", "Hardware", "Services", "Consulting", "Training")
TASK_LISTS = ("Backlog", "In Progress", "In Review", "Completed")
TASK_BOARDS = ("Back end", "Front end", "Design")
PLOT_VALUES = (
    "total_visits",
    "session_duration_seconds",
    "user_engaged",
    "visits_direct",
    "visits_referral",
    "visits_search_engine",
    "visits_social_media",
)
PLOT_TYPES = ("bar", "line", "scatter", "histogram")
_EMAIL_PATTERN = re.compile(r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # JSON schema type: "string" or "integer"
    description: str
    required: bool = False


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    params: tuple[Param, ...]
    function: Callable[..., Any]  # (state, **arguments) -> JSON value

    def schema(self) -> dict[str, Any]:
        """The Responses-API function schema NeMo Gym publishes (and the blend's rows carry)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": {
                "type": "object",
                "properties": {p.name: {"type": p.type, "description": p.description} for p in self.params},
                "required": [p.name for p in self.params if p.required],
                "additionalProperties": False,
            },
            "strict": False,
        }


TOOLS: dict[str, Tool] = {}


def _tool(description: str, *params: Param) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        TOOLS[function.__name__] = Tool(function.__name__, description, params, function)
        return function

    return register


def _s(name: str, description: str, required: bool = False) -> Param:
    return Param(name, "string", description, required)


def _i(name: str, description: str) -> Param:
    return Param(name, "integer", description)


# ---- helpers ---------------------------------------------------------------------------------------


def _matches(pattern: str, value: Any) -> bool:
    return isinstance(value, str) and re.search(pattern, value, re.IGNORECASE) is not None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(str(value))


def _next_id(rows: list[Row], column: str, width: int) -> str:
    current = max((r[column] for r in rows if r[column] is not None), default=None)
    if current is None:
        return "1".zfill(width)
    return str(int(current) + 1).zfill(width)


def _page(items: list[Any], key: str, page: int, page_size: int) -> dict[str, Any]:
    total = len(items)
    pages = (total + page_size - 1) // page_size
    page = max(1, min(page, pages)) if pages > 0 else 1
    start = (page - 1) * page_size
    return {
        key: items[start : min(start + page_size, total)],
        "pagination": {f"total_{key}": total, "page": page, "page_size": page_size, "total_pages": pages},
    }


def _find(rows: list[Row], column: str, value: Any) -> Row | None:
    return next((r for r in rows if r[column] == value), None)


def _valid_8_digits(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 8 and value.isdigit()


def _delete(rows: list[Row], column: str, row_id: Any, noun: str) -> str:
    """The delete tools' shared steps and messages: every row with the id goes."""
    if not row_id:
        return f"{noun} ID not provided."
    if _find(rows, column, row_id) is None:
        return f"{noun} not found."
    rows[:] = [r for r in rows if r[column] != row_id]
    return f"{noun} deleted successfully."


def _set(rows: list[Row], column: str, row_id: Any, field: str, value: Any, noun: str) -> str:
    """The update tools' last step: every row with the id, as pandas' `.loc` assignment."""
    for row in rows:
        if row[column] == row_id:
            row[field] = value
    return f"{noun} updated successfully."


def _update_params(row_id: Param, fields: tuple[str, ...]) -> tuple[Param, ...]:
    """The update tools' parameters: the row's id, the field (one of `fields`) and its new value."""
    return (
        row_id,
        _s("field", f"Field to update. Available fields are: {', '.join(map(repr, fields))}", True),
        _s("new_value", "New value for the field", True),
    )


# ---- company directory -----------------------------------------------------------------------------


@_tool(
    "Finds all email addresses containing the given name (case-insensitive search).",
    _s("name", "Name or partial name to search for in email addresses"),
)
def company_directory_find_email_address(state: WorkplaceState, name: str = "") -> Any:
    if name == "":
        return "Name not provided."
    return [a for a in state.directory if _matches(name.lower(), a)]


# ---- email -----------------------------------------------------------------------------------------

EMAIL_FIELDS = TABLES["emails"][1]


@_tool(
    "Retrieves specific details of an email by its ID.",
    _s("email_id", "Unique ID of the email", True),
    _s("field", f"Specific field to return. Available fields: {', '.join(map(repr, EMAIL_FIELDS))}", True),
)
def email_get_email_information_by_id(state: WorkplaceState, email_id: Any = None, field: Any = None) -> Any:
    if not email_id:
        return "Email ID not provided."
    if not field:
        return "Field not provided."
    email = _find(state.emails, "email_id", email_id)
    if email is None:
        return "Email not found."
    if field in email:
        return {field: email[field]}
    return f"Field '{field}' not found. Available fields: {', '.join(email)}"


@_tool(
    "Searches for emails matching the given query across subject, body, or sender fields. The function "
    "matches an email if all words in the query appear in any of these fields.",
    _s("query", "Search query, matching terms in subject, body, or sender/recipient fields"),
    _s("date_min", "Lower date limit for the email's sent date (inclusive). Format: YYYY-MM-DD"),
    _s("date_max", "Upper date limit for the email's sent date (inclusive). Format: YYYY-MM-DD"),
    _i("page", "Page number of results to return"),
    _i("page_size", "Number of emails per page"),
)
def email_search_emails(
    state: WorkplaceState,
    query: Any = "",
    date_min: Any = None,
    date_max: Any = None,
    page: Any = 1,
    page_size: Any = 5,
) -> Any:
    try:
        words = query.lower().split()

        def text(row: Row) -> str:
            return " ".join(row[c] or "" for c in ("subject", "body", "sender/recipient")).lower()

        emails = [dict(r) for r in state.emails if all(w in text(r) for w in words)]
        emails.sort(key=lambda r: _timestamp(r["sent_datetime"]), reverse=True)
        if date_min:
            emails = [
                e for e in emails if _timestamp(e["sent_datetime"]).date() >= _timestamp(date_min).date()
            ]
        if date_max:
            emails = [
                e for e in emails if _timestamp(e["sent_datetime"]).date() <= _timestamp(date_max).date()
            ]
        if not emails:
            return "No emails found."
        return _page(emails, "emails", page, page_size)
    except Exception as error:
        return f"Error searching emails: {error}"


def _looks_like_address(value: str) -> bool:
    return "@" in value and "." in value


@_tool(
    "Sends an email to the specified recipient.",
    _s("recipient", "Email address of the recipient", True),
    _s("subject", "Subject line of the email", True),
    _s("body", "Body content of the email", True),
)
def email_send_email(
    state: WorkplaceState, recipient: Any = None, subject: Any = None, body: Any = None
) -> Any:
    if not recipient or not subject or not body:
        return "Recipient, subject, or body not provided."
    if not _looks_like_address(recipient):
        return "Invalid recipient email address."
    try:
        # NeMo Gym: str(int(max) + 1), no zero padding for emails
        ids = [r["email_id"] for r in state.emails if r["email_id"] is not None]
        email_id = str(int(max(ids)) + 1) if ids else "1"
        state.emails.append(
            {
                "email_id": email_id,
                "inbox/outbox": "outbox",
                "sender/recipient": recipient.lower(),
                "subject": subject,
                "sent_datetime": CURRENT_TIME,
                "body": body,
            }
        )
        return "Email sent successfully."
    except Exception as error:
        return f"Error sending email: {error}"


@_tool("Deletes an email by its ID.", _s("email_id", "Unique ID of the email to be deleted", True))
def email_delete_email(state: WorkplaceState, email_id: Any = None) -> Any:
    return _delete(state.emails, "email_id", email_id, "Email")


def _send(state: WorkplaceState, recipient: str, subject: str, body: str) -> str | None:
    """Forward's and reply's sending step: `email_send_email`'s failure message, or None."""
    result = email_send_email(state, recipient, subject, body)
    return result if "Error" in result or "Invalid" in result else None


@_tool(
    "Forwards an email to the specified recipient.",
    _s("email_id", "Unique ID of the email to be forwarded", True),
    _s("recipient", "Email address of the recipient", True),
)
def email_forward_email(state: WorkplaceState, email_id: Any = None, recipient: Any = None) -> Any:
    if not email_id or not recipient:
        return "Email ID or recipient not provided."
    if not _looks_like_address(recipient):
        return "Invalid recipient email address."
    email = _find(state.emails, "email_id", email_id)
    if email is None:
        return "Email not found."
    sent = _send(state, recipient.lower(), f"FW: {email['subject']}", email["body"])
    return sent or "Email forwarded successfully."


@_tool(
    "Replies to an email by its ID.",
    _s("email_id", "Unique ID of the email to be replied", True),
    _s("body", "Body content of the email", True),
)
def email_reply_email(state: WorkplaceState, email_id: Any = None, body: Any = None) -> Any:
    if not email_id or not body:
        return "Email ID or body not provided."
    email = _find(state.emails, "email_id", email_id)
    if email is None:
        return "Email not found."
    sent = _send(state, email["sender/recipient"], f"RE: {email['subject']}", body)
    return sent or "Email replied successfully."


# ---- calendar --------------------------------------------------------------------------------------

EVENT_FIELDS = TABLES["calendar_events"][1]
EVENT_UPDATABLE = EVENT_FIELDS[1:]
_EVENT_ID_FORMAT = "Invalid event ID format. Expected 8-digit ID."
_EVENT_ID = _s("event_id", "8-digit ID of the event", True)


@_tool(
    "Returns the event for a given ID.",
    _EVENT_ID,
    _s("field", f"Field to return. Available fields are: {', '.join(map(repr, EVENT_FIELDS))}", True),
)
def calendar_get_event_information_by_id(
    state: WorkplaceState, event_id: Any = None, field: Any = None
) -> Any:
    if not event_id:
        return "Event ID not provided."
    if not field:
        return "Field not provided."
    if not _valid_8_digits(event_id):
        return _EVENT_ID_FORMAT
    if field not in EVENT_FIELDS:
        return f"Invalid field. Available fields are: {', '.join(EVENT_FIELDS)}"
    event = _find(state.calendar_events, "event_id", event_id)
    if event is None:
        return "Event not found."
    return {field: event[field]}


@_tool(
    "Returns the events for a given query with pagination support.",
    _s("query", "Query to search for. Terms will be matched in the event_name and participant_email fields"),
    _s(
        "time_min",
        "Lower bound (inclusive) for an event's end time to filter by. Format: YYYY-MM-DD HH:MM:SS",
    ),
    _s(
        "time_max",
        "Upper bound (inclusive) for an event's start time to filter by. Format: YYYY-MM-DD HH:MM:SS",
    ),
    _i("page", "Page number of results to return"),
    _i("page_size", "Number of events per page"),
)
def calendar_search_events(
    state: WorkplaceState,
    query: Any = "",
    time_min: Any = None,
    time_max: Any = None,
    page: Any = 1,
    page_size: Any = 5,
) -> Any:
    lower = upper = None
    if time_min:
        try:
            lower = _timestamp(time_min)
        except ValueError:
            return "Invalid time_min format. Expected YYYY-MM-DD HH:MM:SS."
    if time_max:
        try:
            upper = _timestamp(time_max)
        except ValueError:
            return "Invalid time_max format. Expected YYYY-MM-DD HH:MM:SS."
    events = [
        dict(e)
        for e in state.calendar_events
        if _matches(query, e["event_name"]) or _matches(query, e["participant_email"])
    ]
    if lower is not None:
        events = [e for e in events if _timestamp(e["event_start"]) >= lower]
    if upper is not None:
        events = [e for e in events if _timestamp(e["event_start"]) <= upper]
    if not events:
        return "No events found."
    events.sort(key=lambda e: _timestamp(e["event_start"]), reverse=True)
    return _page(events, "events", page, page_size)


def _check_start(value: Any) -> str | None:
    try:
        _timestamp(value)
    except ValueError:
        return "Invalid event_start format. Expected YYYY-MM-DD HH:MM:SS."
    return None


def _check_duration(value: Any) -> str | None:
    try:
        if int(value) <= 0:
            return "Duration must be a positive number of minutes."
    except ValueError:
        return "Invalid duration format. Expected a number of minutes."
    return None


@_tool(
    "Creates a new event.",
    _s("event_name", "Name of the event", True),
    _s("participant_email", "Email of the participant", True),
    _s("event_start", "Start time of the event. Format: YYYY-MM-DD HH:MM:SS", True),
    _s("duration", "Duration of the event in minutes", True),
)
def calendar_create_event(
    state: WorkplaceState,
    event_name: Any = None,
    participant_email: Any = None,
    event_start: Any = None,
    duration: Any = None,
) -> Any:
    if not event_name:
        return "Event name not provided."
    if not participant_email:
        return "Participant email not provided."
    if not event_start:
        return "Event start not provided."
    if not duration:
        return "Event duration not provided."
    problem = _check_start(event_start) or _check_duration(duration)
    if problem:
        return problem
    event_id = _next_id(state.calendar_events, "event_id", 8)
    state.calendar_events.append(
        {
            "event_id": event_id,
            "event_name": event_name,
            "participant_email": participant_email.lower(),
            "event_start": event_start,
            "duration": duration,
        }
    )
    return event_id


@_tool("Deletes an event.", _EVENT_ID)
def calendar_delete_event(state: WorkplaceState, event_id: Any = None) -> Any:
    if event_id and not _valid_8_digits(event_id):
        return _EVENT_ID_FORMAT
    return _delete(state.calendar_events, "event_id", event_id, "Event")


@_tool("Updates an event.", *_update_params(_EVENT_ID, EVENT_UPDATABLE))
def calendar_update_event(
    state: WorkplaceState, event_id: Any = None, field: Any = None, new_value: Any = None
) -> Any:
    if not event_id or not field or not new_value:
        return "Event ID, field, or new value not provided."
    if not _valid_8_digits(event_id):
        return _EVENT_ID_FORMAT
    if field not in EVENT_UPDATABLE:
        return f"Invalid field. Available fields are: {', '.join(EVENT_UPDATABLE)}"
    check = {"event_start": _check_start, "duration": _check_duration}.get(field)
    problem = check(new_value) if check else None
    if problem:
        return problem
    event = _find(state.calendar_events, "event_id", event_id)
    if event is None:
        return "Event not found."
    if field == "participant_email":
        new_value = new_value.lower()
    return _set(state.calendar_events, "event_id", event_id, field, new_value, "Event")


# ---- analytics -------------------------------------------------------------------------------------


def _visits(state: WorkplaceState, time_min: Any, time_max: Any) -> list[Row]:
    rows = list(state.analytics)
    if time_min:
        rows = [r for r in rows if r["date_of_visit"] >= time_min]
    if time_max:
        rows = [r for r in rows if r["date_of_visit"] <= time_max]
    return rows


def _per_date(rows: list[Row], value: Callable[[Row], float], reduce: Callable[[list[float]], Any]) -> dict:
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row["date_of_visit"], []).append(value(row))
    return {day: reduce(values) for day, values in sorted(groups.items())}


def _engaged(row: Row) -> bool:
    return row["user_engaged"] == "True"  # NeMo Gym converts the column with == "True"


_TIME_MIN = _s("time_min", "Start date of the time range. Date format is YYYY-MM-DD")
_TIME_MAX = _s("time_max", "End date of the time range. Date format is YYYY-MM-DD")


@_tool(
    "Returns the analytics data for a given visitor ID.",
    _s("visitor_id", "ID of the visitor", True),
)
def analytics_get_visitor_information_by_id(state: WorkplaceState, visitor_id: Any = None) -> Any:
    if not visitor_id:
        return "Visitor ID not provided."
    found = [{**r, "user_engaged": _engaged(r)} for r in state.analytics if r["visitor_id"] == visitor_id]
    return found or "Visitor not found."


@_tool(
    "Plots the analytics data for a given time range and value.",
    _s("time_min", "Start date of the time range. Date format is YYYY-MM-DD", True),
    _s("time_max", "End date of the time range. Date format is YYYY-MM-DD", True),
    _s("value_to_plot", f"Value to plot. Available values are: {', '.join(map(repr, PLOT_VALUES))}", True),
    _s("plot_type", f"Type of plot. Can be {', '.join(map(repr, PLOT_TYPES))}", True),
)
def analytics_create_plot(
    state: WorkplaceState,
    time_min: Any = None,
    time_max: Any = None,
    value_to_plot: Any = None,
    plot_type: Any = None,
) -> Any:
    if not time_min:
        return "Start date not provided."
    if not time_max:
        return "End date not provided."
    if value_to_plot not in PLOT_VALUES:
        return f"Value to plot must be one of {', '.join(map(repr, PLOT_VALUES))}"
    if plot_type not in PLOT_TYPES:
        return "Plot type must be one of 'bar', 'line', 'scatter', or 'histogram'"
    file_path = f"plots/{time_min}_{time_max}_{value_to_plot}_{plot_type}.png"
    state.plots.append({"file_path": file_path})
    return file_path


@_tool("Returns the total number of visits within a specified time range.", _TIME_MIN, _TIME_MAX)
def analytics_total_visits_count(state: WorkplaceState, time_min: Any = None, time_max: Any = None) -> Any:
    return _per_date(_visits(state, time_min, time_max), lambda r: 1, len)


@_tool("Returns the number of engaged users within a specified time range.", _TIME_MIN, _TIME_MAX)
def analytics_engaged_users_count(state: WorkplaceState, time_min: Any = None, time_max: Any = None) -> Any:
    return _per_date(_visits(state, time_min, time_max), lambda r: int(_engaged(r)), sum)


@_tool(
    "Returns the number of visits from a specific traffic source within a specified time range.",
    _TIME_MIN,
    _TIME_MAX,
    _s("traffic_source", "Traffic source to filter the visits. Available values are: 'direct', 'referral', "
       "'search engine', 'social media'"),
)  # fmt: skip
def analytics_traffic_source_count(
    state: WorkplaceState, time_min: Any = None, time_max: Any = None, traffic_source: Any = None
) -> Any:
    rows = _visits(state, time_min, time_max)
    if traffic_source:
        return _per_date(rows, lambda r: int(r["traffic_source"] == traffic_source), sum)
    return _per_date(rows, lambda r: 1, len)


@_tool("Returns the average session duration within a specified time range.", _TIME_MIN, _TIME_MAX)
def analytics_get_average_session_duration(
    state: WorkplaceState, time_min: Any = None, time_max: Any = None
) -> Any:
    return _per_date(
        _visits(state, time_min, time_max),
        lambda r: float(r["session_duration_seconds"]),
        lambda values: sum(values) / len(values),
    )


# ---- project management ----------------------------------------------------------------------------

TASK_FIELDS = TABLES["project_tasks"][1]
_TASK_ID = _s("task_id", "8-digit ID of the task", True)
_LIST_NOT_VALID = "List not valid. Please choose from: 'Backlog', 'In Progress', 'In Review', 'Completed'."
_BOARD_NOT_VALID = "Board not valid. Please choose from: 'Back end', 'Front end', 'Design'."
_ASSIGNEE_NOT_VALID = "Assignee email not valid. Please choose from the list of team members."


@_tool(
    "Returns the task information for a given ID.",
    _TASK_ID,
    _s("field", f"Field to return. Available fields are: {', '.join(map(repr, TASK_FIELDS))}", True),
)
def project_management_get_task_information_by_id(
    state: WorkplaceState, task_id: Any = None, field: Any = None
) -> Any:
    if not task_id:
        return "Task ID not provided."
    if not field:
        return "Field not provided."
    task = _find(state.project_tasks, "task_id", task_id)
    if task is None:
        return "Task not found."
    return {field: task[field]} if field in task else "Field not found."


_TASK_PARAMS = (
    _s("task_name", "Name of the task"),
    _s("assigned_to_email", "Email address of the person assigned to the task"),
    _s("list_name", f"Name of the list the task belongs to. One of: {', '.join(map(repr, TASK_LISTS))}"),
    _s("due_date", "Due date of the task in YYYY-MM-DD format"),
    _s("board", f"Name of the board the task belongs to. One of: {', '.join(map(repr, TASK_BOARDS))}"),
)


@_tool("Searches for tasks based on the given parameters.", *_TASK_PARAMS)
def project_management_search_tasks(
    state: WorkplaceState,
    task_name: Any = None,
    assigned_to_email: Any = None,
    list_name: Any = None,
    due_date: Any = None,
    board: Any = None,
) -> Any:
    if not any([task_name, assigned_to_email, list_name, due_date, board]):
        return "No search parameters provided."
    if assigned_to_email and not _EMAIL_PATTERN.match(assigned_to_email):
        return "Invalid email format for assigned_to_email."
    tasks = state.project_tasks
    if task_name:
        tasks = [t for t in tasks if _matches(task_name, t["task_name"])]
    if assigned_to_email:
        tasks = [t for t in tasks if (t["assigned_to_email"] or "").lower() == assigned_to_email.lower()]
    if list_name:
        tasks = [t for t in tasks if _matches(list_name, t["list_name"])]
    if due_date:
        tasks = [t for t in tasks if _matches(due_date, t["due_date"])]
    if board:
        tasks = [t for t in tasks if _matches(board, t["board"])]
    return [dict(t) for t in tasks]


def _team(state: WorkplaceState) -> set[str]:
    return {(t["assigned_to_email"] or "").lower() for t in state.project_tasks}


@_tool(
    "Creates a new task.",
    *(Param(p.name, p.type, p.description, True) for p in _TASK_PARAMS),
)
def project_management_create_task(
    state: WorkplaceState,
    task_name: Any = None,
    assigned_to_email: Any = None,
    list_name: Any = None,
    due_date: Any = None,
    board: Any = None,
) -> Any:
    if not all([task_name, assigned_to_email, list_name, due_date, board]):
        return "Missing task details."
    assigned_to_email = assigned_to_email.lower()
    if assigned_to_email not in _team(state):
        return _ASSIGNEE_NOT_VALID
    if list_name not in TASK_LISTS:
        return _LIST_NOT_VALID
    if board not in TASK_BOARDS:
        return _BOARD_NOT_VALID
    task_id = _next_id(state.project_tasks, "task_id", 8)
    state.project_tasks.append(
        {
            "task_id": task_id,
            "task_name": task_name,
            "assigned_to_email": assigned_to_email,
            "list_name": list_name,
            "due_date": due_date,
            "board": board,
        }
    )
    return task_id


@_tool("Deletes a task by ID.", _TASK_ID)
def project_management_delete_task(state: WorkplaceState, task_id: Any = None) -> Any:
    return _delete(state.project_tasks, "task_id", task_id, "Task")


@_tool("Updates a task by ID.", *_update_params(_TASK_ID, TASK_FIELDS[1:]))
def project_management_update_task(
    state: WorkplaceState, task_id: Any = None, field: Any = None, new_value: Any = None
) -> Any:
    if not task_id or not field or not new_value:
        return "Task ID, field, or new value not provided."
    if field == "assigned_to_email":
        new_value = new_value.lower()
    if field == "board" and new_value not in TASK_BOARDS:
        return _BOARD_NOT_VALID
    if field == "list_name" and new_value not in TASK_LISTS:
        return _LIST_NOT_VALID
    if field == "assigned_to_email" and new_value not in _team(state):
        return _ASSIGNEE_NOT_VALID
    if _find(state.project_tasks, "task_id", task_id) is None:
        return "Task not found."
    if field not in TASK_FIELDS:
        return "Field not valid."
    return _set(state.project_tasks, "task_id", task_id, field, new_value, "Task")


# ---- customer relationship manager -----------------------------------------------------------------

CRM_FIELDS = TABLES["crm"][1]
_CUSTOMER_ID = _s("customer_id", "ID of the customer", True)


@_tool(
    "Searches for customers based on the given parameters with pagination support.",
    _s("customer_name", "Name of the customer"),
    _s("customer_email", "Email address of the customer"),
    _s("product_interest", "Product interest of the customer"),
    _s("status", "Current status of the customer"),
    _s("assigned_to_email", "Email address of the person assigned to the customer"),
    _s("last_contact_date_min", "Minimum last contact date. Format: YYYY-MM-DD"),
    _s("last_contact_date_max", "Maximum last contact date. Format: YYYY-MM-DD"),
    _s("follow_up_by_min", "Minimum follow up date. Format: YYYY-MM-DD"),
    _s("follow_up_by_max", "Maximum follow up date. Format: YYYY-MM-DD"),
    _i("page", "Page number of results to return"),
    _i("page_size", "Number of customers per page"),
)
def customer_relationship_manager_search_customers(
    state: WorkplaceState,
    customer_name: Any = None,
    customer_email: Any = None,
    product_interest: Any = None,
    status: Any = None,
    assigned_to_email: Any = None,
    last_contact_date_min: Any = None,
    last_contact_date_max: Any = None,
    follow_up_by_min: Any = None,
    follow_up_by_max: Any = None,
    page: Any = 1,
    page_size: Any = 5,
) -> Any:
    contains = {
        "customer_name": customer_name,
        "customer_email": customer_email,
        "product_interest": product_interest,
        "status": status,
        "assigned_to_email": assigned_to_email,
    }
    bounds = [
        ("last_contact_date", last_contact_date_min, last_contact_date_max),
        ("follow_up_by", follow_up_by_min, follow_up_by_max),
    ]
    if not any([*contains.values(), *(v for _c, lo, hi in bounds for v in (lo, hi))]):
        return "No search parameters provided. Please provide at least one parameter."
    customers = [dict(c) for c in state.crm]
    for column, pattern in contains.items():
        if pattern:
            customers = [c for c in customers if _matches(pattern, c[column])]
    for column, low, high in bounds:
        if low:
            customers = [c for c in customers if c[column] is not None and c[column] >= low]
        if high:
            customers = [c for c in customers if c[column] is not None and c[column] <= high]
    if not customers:
        return "No customers found."
    return _page(customers, "customers", page, page_size)


@_tool("Updates a customer record by ID.", *_update_params(_CUSTOMER_ID, CRM_FIELDS[1:]))
def customer_relationship_manager_update_customer(
    state: WorkplaceState, customer_id: Any = None, field: Any = None, new_value: Any = None
) -> Any:
    if not customer_id or not field or not new_value:
        return "Customer ID, field, or new value not provided."
    if field == "status" and new_value not in CRM_STATUSES:
        return "Status not valid. Please choose from: 'Qualified', 'Won', 'Lost', 'Lead', 'Proposal'"
    if field == "product_interest" and new_value not in CRM_PRODUCTS:
        return (
            "Product interest not valid. Please choose from: 'Software', 'Hardware', 'Services', "
            "'Consulting', 'Training'"
        )
    if field in ("customer_email", "assigned_to_email"):
        new_value = new_value.lower()
    if _find(state.crm, "customer_id", customer_id) is None:
        return "Customer not found."
    if field not in CRM_FIELDS:
        return (
            "Field not valid. Please choose from: 'customer_name', 'assigned_to_email', 'customer_email', "
            "'customer_phone', 'last_contact_date', 'product_interest', 'status', 'notes', 'follow_up_by'"
        )
    return _set(state.crm, "customer_id", customer_id, field, new_value, "Customer")


@_tool(
    "Adds a new customer record.",
    _s("customer_name", "Name of the customer", True),
    _s("assigned_to_email", "Email address of the person assigned to the customer", True),
    _s("status", f"Current status of the customer. One of: {', '.join(map(repr, CRM_STATUSES))}", True),
    _s("customer_email", "Email address of the customer"),
    _s("customer_phone", "Phone number of the customer"),
    _s("last_contact_date", "The last date the customer was contacted. Format: YYYY-MM-DD"),
    _s("product_interest", f"Product interest of the customer. One of: {', '.join(map(repr, CRM_PRODUCTS))}"),
    _s("notes", "Notes about the customer"),
    _s("follow_up_by", "Date for the next follow up. Format: YYYY-MM-DD"),
)
def customer_relationship_manager_add_customer(
    state: WorkplaceState,
    customer_name: Any = None,
    assigned_to_email: Any = None,
    status: Any = None,
    customer_email: Any = None,
    customer_phone: Any = None,
    last_contact_date: Any = None,
    product_interest: Any = None,
    notes: Any = "",
    follow_up_by: Any = None,
) -> Any:
    if not all([customer_name, assigned_to_email, status]):
        return "Please provide all required fields: customer_name, assigned_to_email, status."
    new_id = _next_id(state.crm, "customer_id", 8)
    state.crm.append(
        {
            "customer_id": new_id,
            "assigned_to_email": assigned_to_email.lower(),
            "customer_name": customer_name,
            "customer_email": customer_email.lower() if customer_email else customer_email,
            "customer_phone": customer_phone,
            "last_contact_date": last_contact_date,
            "product_interest": product_interest,
            "status": status,
            "follow_up_by": follow_up_by,
            "notes": notes,
        }
    )
    return new_id


@_tool("Deletes a customer record by ID.", _CUSTOMER_ID)
def customer_relationship_manager_delete_customer(state: WorkplaceState, customer_id: Any = None) -> Any:
    return _delete(state.crm, "customer_id", customer_id, "Customer")


# ---- the entry point -------------------------------------------------------------------------------


def schemas() -> list[dict[str, Any]]:
    """Every tool's schema, in NeMo Gym's toolkit order (directory, email, calendar, analytics, ...)."""
    return [tool.schema() for tool in TOOLS.values()]


def check_call(name: str, arguments: Mapping[str, Any]) -> str | None:
    """Why a call cannot run (the study agent's `_validate_tool_action` messages), or None."""
    tool = TOOLS.get(name)
    if tool is None:
        return f"Model attempted to call undefined function: {name}"
    known = {p.name for p in tool.params}
    for key in arguments:
        if key not in known:
            return f"{name}() got an unexpected keyword argument '{key}'"
    for param in tool.params:
        if param.required and param.name not in arguments:
            return f"{name}() missing required argument '{param.name}'"
    return None


def call_tool(state: WorkplaceState, name: str, arguments: Mapping[str, Any]) -> Any:
    """Run one call against `state` (changing it); the result, or an error string for the model."""
    if not isinstance(arguments, Mapping):
        return (
            f"Error executing tool '{name}': arguments must be a JSON object, got {type(arguments).__name__}"
        )
    arguments = {k: v for k, v in arguments.items() if v is not None}  # as NeMo Gym's route does
    problem = check_call(name, arguments)
    if problem is not None:
        return problem
    try:
        return TOOLS[name].function(state, **arguments)
    except Exception as error:  # a bad argument type, a bad regex: an observation, never a crash
        return f"Error executing tool '{name}': {error}"
