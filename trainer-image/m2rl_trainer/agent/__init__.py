"""The agent domain: multi-turn tool use, verified by replaying state (the M2RL study's fifth domain).

environment.py  NeMo Gym's resource-server shape (seed a session, call tools, verify) and the
                table of environments (`workplace_assistant`)
workplace/      the built-in environment: NeMo Gym's workplace assistant re-implemented (CSV tables,
                27 tools, verification by replaying the ground-truth calls)
toolcall.py     Qwen-format tool calls: parsing model turns, rendering tool results
episode.py      the multi-turn episode driver over an abstract `generate` (model tokens mask 1,
                tool-result tokens mask 0)
service.py      the environment as an HTTP service (`python -m m2rl_trainer.agent serve`)
client.py       `HttpEnvironment`, the service behind the `Environment` interface
toy.py          toy agent tasks on the tiny workplace
"""

from m2rl_trainer.agent.environment import (
    ENVIRONMENTS,
    Environment,
    SessionError,
    Verdict,
    WorkplaceEnvironment,
    get_environment,
    parse_ground_truth,
)
from m2rl_trainer.agent.episode import AgentTask, Continuation, Episode, EpisodeConfig, run_episodes
from m2rl_trainer.agent.toolcall import MalformedCall, ToolCall, parse_turn

__all__ = [
    "ENVIRONMENTS",
    "AgentTask",
    "Continuation",
    "Environment",
    "Episode",
    "EpisodeConfig",
    "MalformedCall",
    "SessionError",
    "ToolCall",
    "Verdict",
    "WorkplaceEnvironment",
    "get_environment",
    "parse_ground_truth",
    "parse_turn",
    "run_episodes",
]
