"""The Nemotron RL blend read as the M2RL study reads it (hand-made rows in the blend's layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.cli import train_main
from m2rl_trainer.config import ConfigError, DomainConfig, load_config
from m2rl_trainer.data import load_domain
from m2rl_trainer.data.datasets import DatasetError
from m2rl_trainer.data.nemotron import MATH_PREFIX
from m2rl_trainer.rewards import VERIFIERS


def _row(dataset: str, content: str, **fields: Any) -> dict[str, Any]:
    return {
        "responses_create_params": {"input": [{"role": "user", "content": content}]},
        "dataset": dataset,
        "agent_ref": {"type": "responses_api_agents", "name": "x"},
        **fields,
    }


ROWS = [
    _row("nano_v3_sft_profiled_dapo17k", "What is 1+1?", expected_answer="2"),
    _row(
        "nano_v3_sft_profiled_stem_mcqa",
        "Answer the following multiple choice question. The last line ...\n\nWhich?\nA) x\nB) y",
        expected_answer="B",
    ),
    _row(
        "nano_v3_sft_profiled_instruction_following",
        "Write a haiku. Use no dots.",
        prompt="Write a haiku. Use no dots.",
        instruction_id_list=["punctuation:punctuation_dot"],
        kwargs=[{}],
    ),
    _row(
        "nano_v3_sft_profiled_comp_coding_50tests",
        "Read two numbers and print their sum.",
        verifier_metadata={"unit_tests": {"inputs": ["1 2\n"], "outputs": ["3\n"], "fn_name": None}},
    ),
    # the layout of NeMo Gym's workplace_assistant rows: system + user messages, tools, JSON-string arguments
    {
        "responses_create_params": {
            "input": [
                {"role": "system", "content": "Today's date is Thursday, 2023-11-30 ..."},
                {"role": "user", "content": "Reply to carlos's last email with 'Thanks.'"},
            ],
            "tools": [{"type": "function", "name": "email_reply_email", "parameters": {"type": "object"}}],
            "parallel_tool_calls": False,
        },
        "dataset": "nano_v3_sft_profiled_workbench",
        "ground_truth": [
            {"name": "email_reply_email", "arguments": '{"email_id": "00000057", "body": "Thanks."}'}
        ],
        "category": "workplace_assistant_email",
        "agent_ref": {"type": "responses_api_agents", "name": "x"},
    },
    _row("nano_v3_sft_profiled_structured_outputs", "Emit JSON."),
    _row("nano_v3_sft_profiled_skywork_no_omni", "Compute 2*3.", expected_answer="6"),
]


@pytest.fixture
def blend(tmp_path: Path) -> Path:
    path = tmp_path / "train_complete.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _domain(blend: Path, verifier: str, **extra: Any) -> DomainConfig:
    return DomainConfig(name=verifier, dataset=str(blend), verifier=verifier, format="nemotron", **extra)


def test_each_domain_takes_its_rows_with_the_studys_prefixes(blend: Path) -> None:
    math = load_domain(_domain(blend, "math"))
    assert [(p.id, p.reference, p.meta["dataset"]) for p in math] == [
        ("0", "2", "nano_v3_sft_profiled_dapo17k"),
        ("6", "6", "nano_v3_sft_profiled_skywork_no_omni"),
    ]
    assert math[0].prompt == [{"role": "user", "content": MATH_PREFIX + "What is 1+1?"}]
    (science,) = load_domain(_domain(blend, "multiple_choice"))
    assert science.prompt[0]["content"].startswith(
        "Answer the following multiple choice question step by step. The last line"
    )
    assert science.reference == "B"
    (if_row,) = load_domain(_domain(blend, "ifeval"))
    assert if_row.reference == {
        "instruction_id_list": ["punctuation:punctuation_dot"],
        "kwargs": [{}],
        "prompt": "Write a haiku. Use no dots.",
    }
    assert if_row.verifier_options == {"registry": "ifevalg"}  # the study's IF reward
    assert if_row.prompt == [{"role": "user", "content": "Write a haiku. Use no dots."}]  # no prefix
    (code,) = load_domain(_domain(blend, "code", verifier_options={"timeout_s": 10.0}))
    assert code.reference == {"inputs": ["1 2\n"], "outputs": ["3\n"]}
    assert code.verifier_options == {"max_tests": 20, "timeout_s": 10.0}  # study default + the domain's own
    for prompt in (*math, science, if_row, code):  # every reference is one its verifier accepts
        spec = VERIFIERS[prompt.verifier]
        spec.check_reference(prompt.reference, spec.parse_options(prompt.verifier_options))


def test_agent_rows_are_workplace_tasks(blend: Path, tmp_path: Path) -> None:
    (agent,) = load_domain(_domain(blend, "workplace_assistant"))
    assert (agent.id, agent.verifier, agent.meta) == (
        "4",
        "workplace_assistant",
        {"dataset": "nano_v3_sft_profiled_workbench", "category": "workplace_assistant_email"},
    )
    assert agent.prompt == ROWS[4]["responses_create_params"]["input"]  # system + user, no prefix
    assert agent.reference == {
        "ground_truth": [
            {"name": "email_reply_email", "arguments": {"email_id": "00000057", "body": "Thanks."}}
        ],
        "tools": ROWS[4]["responses_create_params"]["tools"],
    }
    row = json.loads(json.dumps(ROWS[4]))
    del row["responses_create_params"]["tools"]  # no tools in the row: the environment's 27
    path = tmp_path / "no-tools.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    first, second = load_domain(_domain(path, "workplace_assistant"))
    assert len(first.reference["tools"]) == 27 and first.reference["tools"] is second.reference["tools"]


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        (None, r"line 1: field 'ground_truth' is missing or null"),
        (
            [{"name": "book_room", "arguments": "{}"}],
            r"field 'ground_truth'\[0\]\.name: unknown workplace tool 'book_room'",
        ),
        (
            [{"name": "email_delete_email", "arguments": "{email_id"}],
            r"'ground_truth'\[0\]\.arguments: arguments are not valid JSON",
        ),
        ('[{"name": "email_delete_email"', r"field 'ground_truth': not valid JSON"),
        ({"name": "email_delete_email"}, r"field 'ground_truth': must be a list of tool calls, got dict"),
    ],
    ids=["missing", "unknown-tool", "bad-arguments", "bad-json-string", "not-a-list"],
)
def test_agent_row_errors_name_the_line_and_field(tmp_path: Path, ground_truth: Any, message: str) -> None:
    row = {**ROWS[4], "ground_truth": ground_truth}
    path = tmp_path / "blend.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_domain(_domain(path, "workplace_assistant"))


def test_unknown_routes_are_refused(blend: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"'agent' rows are scored by verifier 'workplace_assistant', not 'math'"
    ):
        load_domain(_domain(blend, "math", format_options={"domains": ["agent"]}))
    with pytest.raises(
        DatasetError, match="'science' rows are scored by verifier 'multiple_choice', not 'math'"
    ):
        load_domain(_domain(blend, "math", format_options={"domains": ["science"]}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[0], "dataset": "nano_v4_new"}) + "\n")
    with pytest.raises(
        DatasetError, match=r"bad\.jsonl line 2: field 'dataset': unknown value 'nano_v4_new'"
    ):
        load_domain(_domain(bad, "math"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("expected_answer"), r"line 1: field 'expected_answer' is missing or null"),
        (lambda r: r["responses_create_params"].update(input=[]), "must be a non-empty list of messages"),
        (
            lambda r: r["responses_create_params"]["input"][0].update(content=[{"type": "input_image"}]),
            "only text parts are supported",
        ),
    ],
    ids=["no-answer", "no-messages", "image-part"],
)
def test_row_errors_name_file_line_and_field(tmp_path: Path, change: Any, message: str) -> None:
    row = json.loads(json.dumps(ROWS[0]))
    change(row)
    path = tmp_path / "blend.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_domain(_domain(path, "math"))


def test_a_mixed_run_config_reads_one_blend_file(blend: Path, tmp_path: Path) -> None:
    domains = [
        {"name": name, "dataset": str(blend), "verifier": verifier, "format": "nemotron"}
        for name, verifier in [
            ("math", "math"),
            ("science", "multiple_choice"),
            ("if", "ifeval"),
            ("code", "code"),
        ]
    ]
    base = {"model": "m", "output_dir": str(tmp_path), "rollout": {"mode": "colocated"}}
    config = load_config({**base, "data": {"domains": domains}})
    assert [len(load_domain(d)) for d in config.data.domains] == [2, 1, 1, 1]
    with pytest.raises(ConfigError, match=r"data\.domains\[0\]\.format_options: unknown option 'domain'"):
        load_config({**base, "data": {"domains": [{**domains[0], "format_options": {"domain": 1}}]}})
    with pytest.raises(ConfigError, match=r"data\.domains\[0\]\.format: unknown format 'nemo'"):
        load_config({**base, "data": {"domains": [{**domains[0], "format": "nemo"}]}})


def test_data_inspect_and_split(blend: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["data", "inspect", str(blend)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 7
    assert report["domains"] == {
        "agent": 1,
        "code": 1,
        "if": 1,
        "math": 2,
        "science": 1,
        "structured_outputs": 1,
    }
    assert report["datasets"]["nano_v3_sft_profiled_stem_mcqa"] == {
        "rows": 1,
        "domain": "science",
        "verifier": "multiple_choice",
    }
    out = tmp_path / "split"
    assert train_main(["data", "split", str(blend), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {
        "agent": 1,
        "code": 1,
        "if": 1,
        "math": 2,
        "science": 1,
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "agent.jsonl",
        "code.jsonl",
        "if.jsonl",
        "math.jsonl",
        "science.jsonl",
    ]
    math_rows = [json.loads(line) for line in (out / "math.jsonl").read_text().splitlines()]
    assert math_rows == [ROWS[0], ROWS[6]]  # unchanged, in file order (dapo17k + skywork)
    assert len(load_domain(_domain(out / "math.jsonl", "math"))) == 2  # a split file loads as is
    # a bad row: nothing is written, the error names the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "expected_answer": None}) + "\n")
    assert train_main(["data", "split", str(bad), "--out", str(tmp_path / "none")]) == 2
    assert "bad.jsonl line 2: field 'expected_answer' is missing or null" in capsys.readouterr().err
    assert list((tmp_path / "none").iterdir()) == []


def test_held_out_blend_rows_as_a_benchmark(blend: Path) -> None:
    from m2rl_trainer.eval.config import parse_eval_config
    from m2rl_trainer.eval.runner import load_benchmark

    config = parse_eval_config(
        {
            "models": [{"name": "m", "path": "/m"}],
            "benchmarks": [
                {"name": "held-out-math", "dataset": str(blend), "format": "nemotron", "verifier": "math"},
                {"name": "held-out-if", "dataset": str(blend), "format": "nemotron", "verifier": "ifeval"},
            ],
        }
    )
    math, instructions = (load_benchmark(b) for b in config.benchmarks)
    assert [p.id for p in math] == ["0", "6"] and math[0].prompt[0]["content"].startswith(MATH_PREFIX)
    assert [p.verifier_options for p in instructions] == [{"registry": "ifevalg"}]
