"""The workplace's tools and tables: NeMo Gym's own test cases for its `workplace_assistant`, our CSV
loading, and the state comparison that verification uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.agent.workplace import TOOLS, WorkplaceData, WorkplaceDataError, call_tool, schemas
from m2rl_trainer.agent.workplace.data import TABLES, WorkplaceState, differences
from m2rl_trainer.agent.workplace.tiny import tiny_workplace


def state(**tables: list[dict[str, Any]]) -> WorkplaceState:
    """A state from partial rows, missing columns None (as a CSV's empty cells); `directory` is a list."""
    full = {}
    for name, (_file, header) in TABLES.items():
        full[name] = [{c: row.get(c) for c in header} for row in tables.get(name, [])]
    return WorkplaceState(
        emails=full["emails"],
        calendar_events=full["calendar_events"],
        analytics=tuple(full["analytics"]),
        crm=full["crm"],
        project_tasks=full["project_tasks"],
        directory=tuple(tables.get("directory", [])),  # type: ignore[arg-type]
    )


ENTRY_1 = {
    "event_id": "00000016",
    "event_name": "sync up",
    "participant_email": "santiago.martinez@atlas.com",
    "event_start": "2023-12-12 12:00:00",
    "duration": "90",
}
ENTRY_2 = {
    "event_id": "00000017",
    "event_name": "Team sync up",
    "participant_email": "aisha.chen@atlas.com",
    "event_start": "2023-12-13 10:00:00",
    "duration": "30",
}
OTHER_EVENT = {
    "event_id": "00000018",
    "event_name": "Project Deadline",
    "participant_email": "sam@example.com",
    "event_start": "2023-12-14 17:00:00",
    "duration": "5",
}
AISHA_EMAIL = {
    "email_id": "match_01",
    "inbox/outbox": "inbox",
    "sender/recipient": "aisha.chen@atlas.com",
    "subject": "Matching Email Subject",
    "sent_datetime": "2025-09-01 10:00:00",
    "body": "This is a test email from Aisha.",
}
LEILA_TASKS = [
    {
        "task_id": "00000149",
        "task_name": "Add animation to carousel",
        "assigned_to_email": "leila.azizi@atlas.com",
        "list_name": "Backlog",
        "due_date": "2023-11-27",
        "board": "Front end",
    },
    {
        "task_id": "00000151",
        "task_name": "Fix alignment issue in profile page",
        "assigned_to_email": "leila.azizi@atlas.com",
        "list_name": "Backlog",
        "due_date": "2023-11-27",
        "board": "Front end",
    },
]
JADEN = {
    "customer_id": "00000052",
    "assigned_to_email": "raj.patel@atlas.com",
    "customer_name": "Jaden White",
    "customer_email": "jaden.white@protracefoods",
    "customer_phone": "724-857-2625",
    "last_contact_date": "2023-11-30 23:59:00",
    "product_interest": "Hardware",
    "status": "Won",
    "follow_up_by": "2023-12-13 23:59:00",
    "notes": "2023-10-17: Had a call. ",
}
ANALYTICS_0860 = {
    "date_of_visit": "2023-10-22",
    "visitor_id": "0860",
    "page_views": "8",
    "session_duration_seconds": "4",
    "traffic_source": "referral",
    "user_engaged": "False",
}


# (tables, tool, arguments, expected output): NeMo Gym's
# resources_servers/workplace_assistant/tests/test_app.py, one case per test there (its mock
# DataFrames as rows; the ids are its test names).
NEMO_GYM_CASES = {
    "test_company_directory_find_email_address": (
        {"directory": ["aisha.chen@atlas.com", "carlos.rodriguez@atlas.com"]},
        "company_directory_find_email_address",
        {"name": "aisha"},
        ["aisha.chen@atlas.com"],
    ),
    "test_email_get_email_information_by_id": (
        {
            "emails": [
                {"email_id": "00000393", "inbox/outbox": "inbox"},
                {"email_id": "00000123", "inbox/outbox": "outbox"},
            ]
        },
        "email_get_email_information_by_id",
        {"email_id": "00000393", "field": "inbox/outbox"},
        {"inbox/outbox": "inbox"},
    ),
    "test_email_search_emails": (
        {
            "emails": [
                AISHA_EMAIL,
                {
                    **AISHA_EMAIL,
                    "email_id": "no_match_01",
                    "sender/recipient": "another.user@example.com",
                    "subject": "Non-Matching Subject",
                    "body": "This email should not be found.",
                    "sent_datetime": "2025-09-01 11:00:00",
                },
            ]
        },
        "email_search_emails",
        {"query": "aisha"},
        {
            "emails": [AISHA_EMAIL],
            "pagination": {"total_emails": 1, "page": 1, "page_size": 5, "total_pages": 1},
        },
    ),
    "test_email_send_email": (
        {"emails": [{"email_id": "123", "subject": "Initial Email"}]},
        "email_send_email",
        {"recipient": "aisha.chen@atlas.com", "subject": "regarding something", "body": "some body"},
        "Email sent successfully.",
    ),
    "test_email_delete_email": (
        {"emails": [{"email_id": "00000393"}, {"email_id": "00000123"}]},
        "email_delete_email",
        {"email_id": "00000393"},
        "Email deleted successfully.",
    ),
    "test_email_forward_email": (
        {
            "emails": [
                {
                    "email_id": "00000393",
                    "subject": "Original Subject",
                    "body": "This is the original email body.",
                }
            ]
        },
        "email_forward_email",
        {"email_id": "00000393", "recipient": "forward.to@example.com"},
        "Email forwarded successfully.",
    ),
    "test_calendar_get_event_information_by_id": (
        {"calendar_events": [{"event_id": "00000013", "event_name": "Test Event"}]},
        "calendar_get_event_information_by_id",
        {"event_id": "00000013", "field": "event_id"},
        {"event_id": "00000013"},
    ),
    "test_calendar_search_events": (
        {"calendar_events": [ENTRY_1, ENTRY_2, OTHER_EVENT]},
        "calendar_search_events",
        {"query": "sync up"},
        {
            "events": [ENTRY_2, ENTRY_1],
            "pagination": {"total_events": 2, "page": 1, "page_size": 5, "total_pages": 1},
        },
    ),
    "test_calendar_delete_event": (
        {"calendar_events": [{"event_id": "00000013"}, {"event_id": "00000014"}]},
        "calendar_delete_event",
        {"event_id": "00000013"},
        "Event deleted successfully.",
    ),
    "test_calendar_update_event": (
        {"calendar_events": [{"event_id": "00000013", "duration": "60"}]},
        "calendar_update_event",
        {"event_id": "00000013", "field": "duration", "new_value": "100"},
        "Event updated successfully.",
    ),
    "test_analytics_engaged_users_count": (
        {"analytics": [ANALYTICS_0860]},
        "analytics_engaged_users_count",
        {"time_min": "2023-10-22", "time_max": "2023-11-22"},
        {"2023-10-22": 0},
    ),
    "test_analytics_get_visitor_information_by_id": (
        {"analytics": [ANALYTICS_0860, {**ANALYTICS_0860, "visitor_id": "4426", "user_engaged": "True"}]},
        "analytics_get_visitor_information_by_id",
        {"visitor_id": "0860"},
        [{**ANALYTICS_0860, "user_engaged": False}],
    ),
    "test_analytics_create_plot": (
        {},
        "analytics_create_plot",
        {
            "time_min": "2023-10-22",
            "time_max": "2023-10-22",
            "value_to_plot": "total_visits",
            "plot_type": "bar",
        },
        "plots/2023-10-22_2023-10-22_total_visits_bar.png",
    ),
    "test_analytics_traffic_source_count": (
        {
            "analytics": [
                {"date_of_visit": d, "traffic_source": s}
                for d, s in [
                    ("2023-10-22", "referral"),
                    ("2023-10-22", "referral"),
                    ("2023-10-22", "direct"),
                    ("2023-10-23", "referral"),
                ]
            ]
        },
        "analytics_traffic_source_count",
        {"time_min": "2023-10-22", "time_max": "2023-10-22", "traffic_source": "referral"},
        {"2023-10-22": 2},
    ),
    "test_analytics_total_visits_count": (
        {"analytics": [{"date_of_visit": "2023-10-22"}] * 13 + [{"date_of_visit": "2023-10-23"}] * 2},
        "analytics_total_visits_count",
        {"time_min": "2023-10-22", "time_max": "2023-10-22"},
        {"2023-10-22": 13},
    ),
    "test_analytics_get_average_session_duration": (
        {
            "analytics": [{"date_of_visit": "2023-10-22", "session_duration_seconds": "15"}] * 12
            + [
                {"date_of_visit": "2023-10-22", "session_duration_seconds": "25"},
                {"date_of_visit": "2023-10-23", "session_duration_seconds": "100"},
            ]
        },
        "analytics_get_average_session_duration",
        {"time_min": "2023-10-22", "time_max": "2023-10-22"},
        {"2023-10-22": 15.76923076923077},
    ),
    "test_project_management_get_task_information_by_id": (
        {"project_tasks": [{"task_id": "00000149", "task_name": "Test Task"}]},
        "project_management_get_task_information_by_id",
        {"task_id": "00000149", "field": "task_id"},
        {"task_id": "00000149"},
    ),
    "test_project_management_search_tasks": (
        {
            "project_tasks": [
                *LEILA_TASKS,
                {
                    "task_id": "00000999",
                    "task_name": "Irrelevant Task",
                    "assigned_to_email": "other@user.com",
                    "list_name": "Done",
                    "due_date": "2025-01-01",
                    "board": "Design",
                },
            ]
        },
        "project_management_search_tasks",
        {
            "task_name": "",
            "assigned_to_email": "leila.azizi@atlas.com",
            "list_name": "Backlog",
            "due_date": "2023-11-27",
            "board": "Front end",
        },
        LEILA_TASKS,
    ),
    "test_project_management_create_task": (
        {"project_tasks": [{"task_id": "00000299", "assigned_to_email": "leila.azizi@atlas.com"}]},
        "project_management_create_task",
        {
            "task_name": "Add animation to carousel",
            "assigned_to_email": "leila.azizi@atlas.com",
            "list_name": "Backlog",
            "due_date": "2023-11-27",
            "board": "Front end",
        },
        "00000300",
    ),
    "test_project_management_delete_task": (
        {"project_tasks": [{"task_id": "00000149"}]},
        "project_management_delete_task",
        {"task_id": "00000149"},
        "Task deleted successfully.",
    ),
    "test_project_management_update_task": (
        {"project_tasks": [{"task_id": "00000149", "board": "Front end"}]},
        "project_management_update_task",
        {"task_id": "00000149", "field": "board", "new_value": "Design"},
        "Task updated successfully.",
    ),
    "test_customer_relationship_manager_search_customers": (
        {"crm": [JADEN, {"customer_id": "00000999", "customer_name": "Jane Doe"}]},
        "customer_relationship_manager_search_customers",
        {
            "customer_name": "Jaden White",
            "customer_email": "jaden.white@protracefoods",
            "product_interest": "Hardware",
            "status": "Won",
            "assigned_to_email": "raj.patel@atlas.com",
            "last_contact_date_min": "2023-11-30 23:59:00",
            "last_contact_date_max": "2023-11-30 23:59:00",
            "follow_up_by_min": "2023-12-13 23:5",
        },
        {
            "customers": [JADEN],
            "pagination": {"total_customers": 1, "page": 1, "page_size": 5, "total_pages": 1},
        },
    ),
    "test_customer_relationship_manager_update_customer": (
        {"crm": [{"customer_id": "00000189", "customer_name": "old name"}]},
        "customer_relationship_manager_update_customer",
        {"customer_id": "00000189", "field": "customer_name", "new_value": "new customer"},
        "Customer updated successfully.",
    ),
    "test_customer_relationship_manager_add_customer": (
        {"crm": [{"customer_id": "00000199", "customer_name": "Max ID Customer"}]},
        "customer_relationship_manager_add_customer",
        {
            "customer_name": "Some customer",
            "product_interest": "Hardware",
            "status": "Won",
            "assigned_to_email": "raj.patel@atlas.com",
            "last_contact_date": "2023-11-30 23:59:00",
            "follow_up_by": "2023-12-13 23:59:00",
            "notes": "some notes",
        },
        "00000200",
    ),
    "test_customer_relationship_manager_delete_customer": (
        {"crm": [{"customer_id": "00000189"}]},
        "customer_relationship_manager_delete_customer",
        {"customer_id": "00000189"},
        "Customer deleted successfully.",
    ),
    # NeMo Gym's route reports the TypeError of the call; the call is checked first here, with the message
    # of the study's agent (`_validate_tool_action`), which is what the model saw in the study.
    "test_extra_arguments_error_handling": (
        {"emails": [{"email_id": "00000057", "subject": "Task Update"}]},
        "email_get_email_information_by_id",
        {"email_id": "00000057", "field": "subject", "useless_argument": "this should cause an error"},
        "email_get_email_information_by_id() got an unexpected keyword argument 'useless_argument'",
    ),
}


@pytest.mark.parametrize("case", NEMO_GYM_CASES.values(), ids=NEMO_GYM_CASES.keys())
def test_nemo_gym_tool_cases(case):
    tables, tool, arguments, expected = case
    assert call_tool(state(**tables), tool, arguments) == expected


def test_state_changes_of_the_changing_tools():
    s = state(**NEMO_GYM_CASES["test_email_send_email"][0])
    call_tool(s, "email_send_email", {"recipient": "Aisha.Chen@atlas.com", "subject": "S", "body": "B"})
    assert s.emails[-1] == {
        "email_id": "124",
        "inbox/outbox": "outbox",
        "sender/recipient": "aisha.chen@atlas.com",
        "subject": "S",
        "sent_datetime": "2023-11-30 23:59:00",
        "body": "B",
    }
    s = state(**NEMO_GYM_CASES["test_email_forward_email"][0])
    call_tool(s, "email_forward_email", {"email_id": "00000393", "recipient": "x@y.com"})
    assert (s.emails[-1]["email_id"], s.emails[-1]["subject"]) == ("394", "FW: Original Subject")
    s = state(calendar_events=[ENTRY_1, ENTRY_2])
    assert (
        call_tool(
            s,
            "calendar_create_event",
            {
                "event_name": "x",
                "participant_email": "A@B.com",
                "event_start": "2023-12-01 10:00:00",
                "duration": "30",
            },
        )
        == "00000018"
    )
    assert s.calendar_events[-1]["participant_email"] == "a@b.com"
    call_tool(
        s,
        "calendar_update_event",
        {"event_id": "00000016", "field": "event_start", "new_value": "2023-12-15 09:00:00"},
    )
    assert s.calendar_events[0]["event_start"] == "2023-12-15 09:00:00"
    call_tool(s, "calendar_delete_event", {"event_id": "00000017"})
    assert [e["event_id"] for e in s.calendar_events] == ["00000016", "00000018"]
    call_tool(
        s,
        "analytics_create_plot",
        {"time_min": "a", "time_max": "b", "value_to_plot": "user_engaged", "plot_type": "line"},
    )
    assert s.plots == [{"file_path": "plots/a_b_user_engaged_line.png"}]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("calendar_delete_event", {"event_id": "13"}, "Invalid event ID format. Expected 8-digit ID."),
        (
            "calendar_update_event",
            {"event_id": "00000016", "field": "duration", "new_value": "-5"},
            "Duration must be a positive number of minutes.",
        ),
        (
            "calendar_create_event",
            {"event_name": "x", "participant_email": "a@b.c", "event_start": "soon", "duration": "5"},
            "Invalid event_start format. Expected YYYY-MM-DD HH:MM:SS.",
        ),
        (
            "customer_relationship_manager_update_customer",
            {"customer_id": "1", "field": "status", "new_value": "won"},
            "Status not valid. Please choose from: 'Qualified', 'Won', 'Lost', 'Lead', 'Proposal'",
        ),
        (
            "project_management_update_task",
            {"task_id": "1", "field": "list_name", "new_value": "Done"},
            "List not valid. Please choose from: 'Backlog', 'In Progress', 'In Review', 'Completed'.",
        ),
        (
            "email_send_email",
            {"recipient": "nobody", "subject": "s", "body": "b"},
            "Invalid recipient email address.",
        ),
        (
            "email_search_emails",
            {"query": 7},
            "Error searching emails: 'int' object has no attribute 'lower'",
        ),
        (
            "calendar_search_events",
            {"query": "("},
            "Error executing tool 'calendar_search_events': missing ), unterminated subpattern at position 0",
        ),
        ("calendar_delete_event", {}, "calendar_delete_event() missing required argument 'event_id'"),
        ("no_such_tool", {}, "Model attempted to call undefined function: no_such_tool"),
        (
            "calendar_delete_event",
            ["00000016"],
            "Error executing tool 'calendar_delete_event': arguments must be a JSON object, got list",
        ),
    ],
    ids=[
        "event-id-format",
        "duration",
        "start-format",
        "crm-status-case",
        "task-list",
        "recipient",
        "query-type",
        "bad-regex",
        "missing-required",
        "unknown-tool",
        "arguments-not-object",
    ],
)
def test_bad_calls_are_observations_and_change_nothing(tool, arguments, expected):
    s = state(calendar_events=[ENTRY_1], emails=[AISHA_EMAIL])
    before = s.snapshot()
    assert call_tool(s, tool, arguments) == expected
    assert s.snapshot() == before


def test_schemas_are_nemo_gyms_27_tools():
    names = [s["name"] for s in schemas()]
    assert len(names) == 27 == len(set(names)) and names == list(TOOLS)
    reply = next(s for s in schemas() if s["name"] == "email_reply_email")
    # NeMo Gym's schema of the tool in its test_verify request
    assert reply == {
        "type": "function",
        "name": "email_reply_email",
        "description": "Replies to an email by its ID.",
        "parameters": {
            "type": "object",
            "properties": {
                "email_id": {"type": "string", "description": "Unique ID of the email to be replied"},
                "body": {"type": "string", "description": "Body content of the email"},
            },
            "required": ["email_id", "body"],
            "additionalProperties": False,
        },
        "strict": False,
    }


def test_csv_layout_round_trip_and_errors(tmp_path: Path):
    data = tiny_workplace()
    root = data.write(tmp_path / "csv_data")
    assert (root / "processed" / "calendar_events.csv").read_text().splitlines()[:2] == [
        "event_id,event_name,participant_email,event_start,duration",
        "00000001,sync,ana@atlas.com,2023-12-04 10:00:00,30",
    ]
    loaded = WorkplaceData.load(root)
    assert loaded == data  # empty cells come back as None
    crm = root / "processed" / "customer_relationship_manager_data.csv"
    crm.write_text(crm.read_text() + "00000009,x@atlas.com\n")
    with pytest.raises(
        WorkplaceDataError,
        match=r"customer_relationship_manager_data\.csv line 5: 2 cells; the header has 10",
    ):
        WorkplaceData.load(root)
    (root / "processed" / "emails.csv").write_text("id,subject\n")
    with pytest.raises(
        WorkplaceDataError, match=r"emails\.csv line 1: header 'id,subject'; expected 'email_id,"
    ):
        WorkplaceData.load(root)
    with pytest.raises(WorkplaceDataError, match="does not exist"):
        WorkplaceData.load(tmp_path / "nowhere")


def test_sessions_start_from_fresh_copies():
    data = tiny_workplace()
    first, second = data.fresh_state(), data.fresh_state()
    call_tool(first, "calendar_delete_event", {"event_id": "00000001"})
    assert len(first.calendar_events) == 4 and len(second.calendar_events) == 5
    assert len(data.fresh_state().calendar_events) == 5


def test_differences_compare_case_insensitively_except_status_list_and_board():
    data = tiny_workplace()
    a, b = data.fresh_state(), data.fresh_state()
    b.calendar_events[0]["event_name"] = "SYNC"  # case does not matter here
    assert differences(a, b) == []
    b.project_tasks[0]["list_name"] = "backlog"  # here it does
    b.crm[0]["status"] = "LEAD"
    found = differences(a, b)
    assert [f.split(":")[0] for f in found] == ["project_tasks", "project_tasks", "crm", "crm"]
    assert "expected row ('00000001', 'fix login for ana', 'ana@atlas.com', 'Backlog'" in found[0]
    c = data.fresh_state()
    c.emails.reverse()
    assert differences(a, c) == ["emails: same rows in another order"]
