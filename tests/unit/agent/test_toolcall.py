"""Qwen-format tool calls: parsing model turns (well-formed, several, malformed) and rendering results."""

from __future__ import annotations

import pytest

from m2rl_trainer.agent.toolcall import MalformedCall, ToolCall, observation_text, parse_turn, result_text

CALL = '<tool_call>\n{"name": "calendar_delete_event", "arguments": {"event_id": "00000001"}}\n</tool_call>'


def test_a_call_and_the_text_around_it():
    parsed = parse_turn(f"Let me cancel it.\n{CALL}")
    assert parsed.content == "Let me cancel it."
    assert parsed.calls == [ToolCall("calendar_delete_event", {"event_id": "00000001"})]


def test_several_calls_in_order_and_string_arguments():
    second = '<tool_call>{"name": "email_delete_email", "arguments": "{\\"email_id\\": \\"7\\"}"}</tool_call>'
    parsed = parse_turn(CALL + second)
    assert [c.name for c in parsed.calls] == ["calendar_delete_event", "email_delete_email"]
    assert parsed.calls[1] == ToolCall("email_delete_email", {"email_id": "7"})


def test_reasoning_is_not_searched():
    parsed = parse_turn(f"<think>maybe {CALL}</think>No call needed.")
    assert parsed.calls == [] and parsed.content == "No call needed."


def test_no_call_is_an_answer():
    assert not parse_turn("Done.").has_calls


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "<tool_call>{name: x}</tool_call>",
            "Error: the tool call is not valid JSON (Expecting property name enclosed in double quotes).",
        ),
        (
            '<tool_call>["calendar_delete_event"]</tool_call>',
            'Error: a tool call must be a JSON object with a string "name".',
        ),
        (
            '<tool_call>{"arguments": {}}</tool_call>',
            'Error: a tool call must be a JSON object with a string "name".',
        ),
        (
            '<tool_call>{"name": "x", "arguments": [1]}</tool_call>',
            "Error: arguments must be a JSON object, got list.",
        ),
        (
            '<tool_call>{"name": "x", "arguments": "{oops"}</tool_call>',
            "Error: arguments are not valid JSON (Expecting property name enclosed in double quotes).",
        ),
        (
            '<tool_call>{"name": "calendar_delete_event", "arguments": {',
            "Error: the tool call has no closing </tool_call> tag.",
        ),
    ],
    ids=["not-json", "not-object", "no-name", "arguments-list", "arguments-bad-string", "unclosed"],
)
def test_malformed_calls_become_errors_for_the_model(text, error):
    parsed = parse_turn("Trying. " + text)
    assert parsed.has_calls and len(parsed.calls) == 1
    call = parsed.calls[0]
    assert isinstance(call, MalformedCall) and call.error == error


def test_results_render_as_qwen_templates_render_tool_messages():
    # Qwen2.5/Qwen3 chat templates: consecutive tool messages become one user turn of
    # <tool_response> blocks; the assistant turn before them ends "<|im_end|>\n".
    assert observation_text(["A", '{"x": 1}'], after_end_of_turn=True) == (
        "\n<|im_start|>user\n<tool_response>\nA\n</tool_response>\n<tool_response>\n"
        '{"x": 1}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )
    assert observation_text(["A"], after_end_of_turn=False).startswith(
        "<|im_end|>\n<|im_start|>user\n<tool_response>"
    )
    assert (
        result_text({"a": "é"}) == '{"a": "é"}'
        and result_text(["x"]) == '["x"]'
        and result_text("ok") == "ok"
    )
    assert ToolCall("t", {"a": 1}).to_function_call("c0") == {
        "type": "function_call",
        "call_id": "c0",
        "name": "t",
        "arguments": '{"a": 1}',
    }
