"""A tiny built-in workplace: five colleagues, their meetings, emails, tasks and customers.

Same tables, columns, id formats and current time (Thursday 2023-11-30 23:59) as NeMo Gym's
workplace, small enough to read in a test and to write toy tasks against. Deterministic: no
randomness, so every session and every machine starts from the same rows.
"""

from __future__ import annotations

from m2rl_trainer.agent.workplace.data import WorkplaceData

PEOPLE = ("ana", "ben", "chen", "dara", "eli")
DOMAIN = "atlas.com"


def address(name: str) -> str:
    return f"{name}@{DOMAIN}"


# One meeting with each colleague next week (Mon 2023-12-04 .. Fri 2023-12-08), 30 or 60 minutes.
MEETINGS = (
    ("00000001", "sync", "ana", "2023-12-04 10:00:00", "30"),
    ("00000002", "review", "ben", "2023-12-05 11:00:00", "60"),
    ("00000003", "planning", "chen", "2023-12-06 14:00:00", "30"),
    ("00000004", "retro", "dara", "2023-12-07 09:30:00", "60"),
    ("00000005", "demo", "eli", "2023-12-04 15:00:00", "30"),
)


def tiny_workplace() -> WorkplaceData:
    emails = [
        {
            "email_id": f"{i + 1:08d}",
            "inbox/outbox": "inbox",
            "sender/recipient": address(name),
            "subject": f"Update from {name}",
            "sent_datetime": f"2023-11-{20 + i:02d} 09:00:00",
            "body": f"Hi Sam, here is my update. {name}",
        }
        for i, name in enumerate(PEOPLE)
    ]
    events = [
        {
            "event_id": event_id,
            "event_name": title,
            "participant_email": address(name),
            "event_start": start,
            "duration": minutes,
        }
        for event_id, title, name, start, minutes in MEETINGS
    ]
    tasks = [
        {
            "task_id": f"{i + 1:08d}",
            "task_name": f"{task} for {name}",
            "assigned_to_email": address(name),
            "list_name": "Backlog",
            "due_date": "2023-12-08",
            "board": board,
        }
        for i, (name, task, board) in enumerate(
            zip(PEOPLE, ("Fix login", "Write docs", "Add search", "New logo", "Speed up API"),
                ("Back end", "Front end", "Back end", "Design", "Back end"), strict=True)
        )
    ]  # fmt: skip
    customers = [
        {
            "customer_id": f"{i + 1:08d}",
            "assigned_to_email": address(PEOPLE[i]),
            "customer_name": customer,
            "customer_email": f"{customer.lower()}@client.com",
            "customer_phone": None,
            "last_contact_date": "2023-11-15 10:00:00",
            "product_interest": product,
            "status": "Lead",
            "follow_up_by": "2023-12-15 10:00:00",
            "notes": None,
        }
        for i, (customer, product) in enumerate(
            (("Acme", "Software"), ("Globex", "Hardware"), ("Initech", "Training"))
        )
    ]
    visits = [
        {
            "date_of_visit": f"2023-11-{day:02d}",
            "visitor_id": f"{day * 10 + k:04d}",
            "page_views": str(1 + (day + k) % 5),
            "session_duration_seconds": str(10 * (1 + (day * k) % 7)),
            "traffic_source": ("direct", "referral", "search engine", "social media")[(day + k) % 4],
            "user_engaged": "True" if (day + k) % 2 else "False",
        }
        for day in range(27, 31)
        for k in range(3)
    ]
    return WorkplaceData.from_rows(
        {
            "emails": emails,
            "calendar_events": events,
            "analytics": visits,
            "crm": customers,
            "project_tasks": tasks,
        },
        directory=[address(n) for n in PEOPLE],
    )
