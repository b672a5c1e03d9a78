"""The workplace assistant environment: NeMo Gym's `workplace_assistant` resource server, re-implemented.

data.py     the tables (CSV layout of NeMo Gym's `csv_data/`), per-session copies, state comparison
tools.py    the 27 tools, their schemas and `call_tool`
tiny.py     a built-in tiny workplace (a few people, meetings, emails, tasks, customers) for toy
            tasks and tests; the real one is NeMo Gym's `csv_data` directory, loaded with `--data`
"""

from m2rl_trainer.agent.workplace.data import (
    COMPARED,
    WorkplaceData,
    WorkplaceDataError,
    WorkplaceState,
    differences,
)
from m2rl_trainer.agent.workplace.tools import TOOLS, call_tool, check_call, schemas

__all__ = [
    "COMPARED",
    "TOOLS",
    "WorkplaceData",
    "WorkplaceDataError",
    "WorkplaceState",
    "call_tool",
    "check_call",
    "differences",
    "schemas",
]
