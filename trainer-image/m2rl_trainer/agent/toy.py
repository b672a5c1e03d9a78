"""Toy agent tasks on the tiny workplace, in the Nemotron blend's `workbench` row layout.

Three kinds, each solved by one state-changing call (verification compares state, so looking the id
up first is allowed and usually needed):

  "Move my meeting with ana to Friday."      calendar_update_event(id, "event_start", same time Friday)
  "Cancel my meeting with ben."              calendar_delete_event(id)
  "Mark chen's task as completed."           project_management_update_task(id, "list_name", "Completed")

Rows carry the system prompt of NeMo Gym's workplace data (dataset_preprocess.py's SYS_PROMPT),
the tools and the ground truth, so `format: nemotron` loads them like the blend's rows.
`expert_turn` is a scripted policy that solves them in two or three turns (search, act, confirm)
from what it reads in the context: a deterministic right trajectory for tests.

Warm-up data for the tiny model (`direct_warmup_pairs`, `toy_agent_corpus`): the expert's
search-act-confirm episodes are ~550 tokens with the tiny tokenizer, and 100 supervised steps on
them took 300 s here without one solved task; the direct route (the state-changing call at once,
ids known by heart, then "Done." after the tool's answer), without the system prompt and with a
tokenizer that learned merges from these texts, is ~60-90 tokens a turn and learns the call format
in under a minute.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta
from typing import Any

from m2rl_trainer.agent.environment import WorkplaceEnvironment
from m2rl_trainer.agent.episode import render_prompt
from m2rl_trainer.agent.toolcall import observation_text, result_text
from m2rl_trainer.agent.workplace import schemas
from m2rl_trainer.agent.workplace.tiny import MEETINGS, PEOPLE, address, tiny_workplace

SYSTEM_PROMPT = (
    "Today's date is Thursday, 2023-11-30 and the current time is 23:59:00. Remember the current date "
    "and time when answering queries. Meetings must not start before 9am or end after 6pm."
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
WEEK_START = datetime(2023, 12, 4)  # the Monday of the tiny workplace's meetings
WORKBENCH = "nano_v3_sft_profiled_workbench"


def _call(name: str, **arguments: str) -> dict[str, str]:
    return {"name": name, "arguments": json.dumps(arguments)}


def _row(instruction: str, ground_truth: list[dict[str, str]], kind: str) -> dict[str, Any]:
    return {
        "responses_create_params": {
            "input": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": instruction}],
            "tools": schemas(),
            "parallel_tool_calls": False,
        },
        "ground_truth": ground_truth,
        "category": f"toy_{kind}",
        "environment_name": "workplace_assistant",
        "dataset": WORKBENCH,
    }


KINDS = ("move", "cancel", "complete")


def toy_agent_rows(kinds: tuple[str, ...] = KINDS, *, system_prompt: bool = True) -> list[dict[str, Any]]:
    """The toy tasks of `kinds` (move x 4 other weekdays, cancel, complete; per colleague), in a fixed
    order; `system_prompt=False` leaves the system message out (shorter prompts for tiny models)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"toy agent task kind {unknown[0]!r} is unknown (known: {', '.join(KINDS)})")
    rows = [r for r in _all_rows() if r["category"].removeprefix("toy_") in kinds]
    if not system_prompt:
        for r in rows:
            r["responses_create_params"]["input"] = r["responses_create_params"]["input"][1:]
    return rows


def _all_rows() -> list[dict[str, Any]]:
    rows = []
    tasks = {r["assigned_to_email"]: r["task_id"] for r in tiny_workplace().tables["project_tasks"]}
    for event_id, _title, name, start, _minutes in MEETINGS:
        when = datetime.fromisoformat(start)
        for day, weekday in enumerate(WEEKDAYS):
            if day == when.weekday():
                continue
            moved = (WEEK_START + timedelta(days=day)).replace(hour=when.hour, minute=when.minute)
            rows.append(
                _row(
                    f"Move my meeting with {name} to {weekday}.",
                    [_call("calendar_update_event", event_id=event_id, field="event_start",
                           new_value=moved.strftime("%Y-%m-%d %H:%M:%S"))],
                    "move",
                )
            )  # fmt: skip
        rows.append(
            _row(
                f"Cancel my meeting with {name}.",
                [_call("calendar_delete_event", event_id=event_id)],
                "cancel",
            )
        )
    for name in PEOPLE:
        rows.append(
            _row(
                f"Mark {name}'s task as completed.",
                [_call("project_management_update_task", task_id=tasks[address(name)], field="list_name",
                       new_value="Completed")],
                "complete",
            )
        )  # fmt: skip
    return rows


def toy_agent_splits(n_heldout: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Disjoint train and held-out rows (a seeded shuffle of `toy_agent_rows`)."""
    rows = toy_agent_rows()
    if not 0 < n_heldout < len(rows):
        raise ValueError(f"n_heldout must be in 1..{len(rows) - 1}, got {n_heldout}")
    random.Random(seed).shuffle(rows)
    return rows[n_heldout:], rows[:n_heldout]


def tool_call_text(name: str, **arguments: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)


def expert_turn(context: str) -> str:
    """The next turn of a scripted expert, from the decoded context (prompt and turns so far)."""
    instruction = re.findall(r"(Move my meeting with \w+ to \w+\.|Cancel my meeting with \w+\.|"
                             r"Mark \w+'s task as completed\.)", context)  # fmt: skip
    if not instruction:
        return "I cannot help with that."
    task = instruction[-1]
    responses = _RESPONSE.findall(context)
    if any("successfully" in r for r in responses):  # the change is confirmed
        return "Done."
    name = re.findall(r"with (\w+)|Mark (\w+)'s", task)[0]
    person = name[0] or name[1]
    kind = "[" if task.startswith("Mark") else '{"events"'  # a task search's list, an event search's page
    found = next((json.loads(r) for r in reversed(responses) if r.startswith(kind)), None)
    if not found:  # look the meeting or task up (first turn, or after an error)
        if task.startswith("Mark"):
            return tool_call_text("project_management_search_tasks", assigned_to_email=address(person))
        return tool_call_text("calendar_search_events", query=person)
    if task.startswith("Mark"):
        task_id = found[0]["task_id"]
        return tool_call_text(
            "project_management_update_task", task_id=task_id, field="list_name", new_value="Completed"
        )
    event = found["events"][0]
    if task.startswith("Cancel"):
        return tool_call_text("calendar_delete_event", event_id=event["event_id"])
    weekday = task.rsplit(" ", 1)[1].rstrip(".")
    start = datetime.fromisoformat(event["event_start"])
    moved = (WEEK_START + timedelta(days=WEEKDAYS.index(weekday))).replace(
        hour=start.hour, minute=start.minute
    )
    return tool_call_text("calendar_update_event", event_id=event["event_id"], field="event_start",
                          new_value=moved.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip


def _direct_turns(row: dict[str, Any]) -> tuple[str, str]:
    """(the row's ground-truth call as the model writes it, the observation that follows it), the
    observation from running the call on a fresh tiny workplace."""
    (call,) = row["ground_truth"]
    arguments = json.loads(call["arguments"])
    environment = WorkplaceEnvironment(tiny_workplace())
    session = environment.seed_session()
    try:
        result = result_text(environment.call(session, call["name"], arguments))
    finally:
        environment.end_session(session)
    return tool_call_text(call["name"], **arguments), observation_text([result], after_end_of_turn=True)


def direct_warmup_pairs(rows: list[dict[str, Any]], tokenizer: Any) -> list[tuple[str, str]]:
    """Supervised warm-up pairs (context, next turn) of the direct route through each one-call row:
    the call at once, then "Done." after the tool's answer; contexts are the rollout's own prompt
    (`render_prompt`, the chat template with the row's tools), turns end with <|im_end|>."""
    pairs = []
    for row in rows:
        messages = row["responses_create_params"]
        prompt = tokenizer.decode(render_prompt(tokenizer, messages["input"], messages["tools"]))
        call, observation = _direct_turns(row)
        pairs.append((prompt, call + "<|im_end|>"))
        pairs.append((prompt + call + "<|im_end|>" + observation, "Done.<|im_end|>"))
    return pairs


def toy_agent_corpus(rows: list[dict[str, Any]]) -> list[str]:
    """Text a tiny tokenizer learns merges from: each row's user turn and its direct route."""
    texts = []
    for row in rows:
        call, observation = _direct_turns(row)
        instruction = row["responses_create_params"]["input"][-1]["content"]
        texts.append(f"{instruction}\n{call}{observation}Done.")
    return texts
