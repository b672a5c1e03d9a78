"""Tool calls in Qwen's chat format: parse them from a model turn, render the results as its next input.

A Qwen2.5 / Qwen3 model calls a tool by writing, anywhere in its turn,

    <tool_call>
    {"name": "calendar_update_event", "arguments": {"event_id": "00000001", ...}}
    </tool_call>

(the `tools` section of their chat templates asks for exactly this; sglang's `qwen25` parser, which the
M2RL study's agent uses, and vLLM's `hermes` parser read it). Their chat templates render the results
as one user turn of `<tool_response>` blocks, in call order:

    <|im_start|>user
    <tool_response>
    RESULT 1
    </tool_response>
    <tool_response>
    RESULT 2
    </tool_response><|im_end|>
    <|im_start|>assistant

Here a block that is not valid JSON, has no string `name`, or has `arguments` that are not an object
(a JSON string holding an object is accepted, as OpenAI's wire format sends it), and an opening tag
that is never closed, are `MalformedCall`s: the episode answers each with an error observation in
its place, and the model can try again (the study's agent aborted the episode instead). Text up to
the last `</think>` is reasoning and is not searched, as the study's agent does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: a tool name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_function_call(self, call_id: str) -> dict[str, Any]:
        """As a Responses-API output item, the shape NeMo Gym's `/verify` reads."""
        return {
            "type": "function_call",
            "call_id": call_id,
            "name": self.name,
            "arguments": json.dumps(self.arguments, ensure_ascii=False),
        }


@dataclass(frozen=True)
class MalformedCall:
    """A `<tool_call>` block that cannot be a call; `error` is what the model is told."""

    text: str
    error: str


@dataclass(frozen=True)
class ParsedTurn:
    content: str  # the turn's text outside tool-call blocks (after any reasoning), stripped
    calls: list[ToolCall | MalformedCall]  # in the order they appear

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)


def parse_arguments(raw: Any, where: str) -> dict[str, Any]:
    """A call's `arguments`: a JSON object, or a string holding one. ValueError names `where`."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: arguments are not valid JSON ({error.msg})") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: arguments must be a JSON object, got {type(raw).__name__}")
    return dict(raw)


def _call(block: str) -> ToolCall | MalformedCall:
    text = block.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return MalformedCall(text, f"Error: the tool call is not valid JSON ({error.msg}).")
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str) or not data["name"]:
        return MalformedCall(text, 'Error: a tool call must be a JSON object with a string "name".')
    try:
        arguments = parse_arguments(data.get("arguments", data.get("parameters", {})), "Error")
    except ValueError as error:
        return MalformedCall(text, f"{error}.")
    return ToolCall(data["name"], arguments)


def parse_turn(text: str) -> ParsedTurn:
    """The calls of one model turn (see the module docstring for what counts as malformed)."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    calls: list[ToolCall | MalformedCall] = []
    pieces: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        pieces.append(text[position : match.start()])
        calls.append(_call(match.group(1)))
        position = match.end()
    rest = text[position:]
    if OPEN in rest:  # opened and never closed: a call cut short
        before, _, after = rest.partition(OPEN)
        pieces.append(before)
        calls.append(MalformedCall(after.strip(), f"Error: the tool call has no closing {CLOSE} tag."))
    else:
        pieces.append(rest)
    return ParsedTurn("".join(pieces).strip(), calls)


def observation_text(results: list[str], *, after_end_of_turn: bool) -> str:
    """The text between the model's turn and its next one, as Qwen's chat templates render tool results.

    after_end_of_turn: the model's turn ended with its `<|im_end|>` token (then only the newline the
    template writes after it is missing); otherwise the turn is closed here.
    """
    head = "\n" if after_end_of_turn else "<|im_end|>\n"
    blocks = "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)
    return f"{head}<|im_start|>user{blocks}<|im_end|>\n<|im_start|>assistant\n"


def result_text(output: Any) -> str:
    """A tool's result as the model reads it: JSON for objects and lists, else the string (the study's)."""
    if isinstance(output, dict | list):
        return json.dumps(output, ensure_ascii=False)
    return str(output)
