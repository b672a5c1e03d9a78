"""`m2rl-verifier` as a user runs it: a real subprocess on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.rewards.helpers import require_bwrap

CLI = [sys.executable, "-m", "m2rl_trainer.rewards.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "m2rl-verifier"
    assert script.exists(), "run `.venv/bin/pip install -e trainer-image --no-deps`"


def test_score_file_writes_one_result_per_line_in_order(tmp_path):
    require_bwrap()
    rows = [
        {"id": "a", "verifier": "math", "response": r"\boxed{4}", "reference": "4"},
        {"verifier": "multiple_choice", "response": "Answer: B", "reference": "C"},
        {
            "id": "c",
            "verifier": "code",
            "response": "```python\nprint(6 * 7)\n```",
            "reference": {"tests": [{"stdout": "42"}]},
        },
    ]
    source = write_jsonl(tmp_path / "rollouts.jsonl", rows)
    (tmp_path / "rollouts.jsonl").write_text(source.read_text() + "\n")  # a blank line is ignored
    out = tmp_path / "results.jsonl"
    proc = run_cli("score", str(source), "-o", str(out), "--python-workers", "1", "--sandbox-workers", "1")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["verifier"], r["reward"], r["verdict"]) for r in results] == [
        ("a", "math", 1.0, "correct"),
        ("line2", "multiple_choice", 0.0, "incorrect"),
        ("c", "code", 1.0, "correct"),
    ]
    assert set(results[0]) == {"id", "verifier", "reward", "verdict", "details", "time_s"}
    assert "math: 1 samples, mean reward 1.0000 (correct=1)" in proc.stderr


def test_score_to_stdout_with_a_config_file(tmp_path):
    config = tmp_path / "verifiers.yaml"
    config.write_text("verifiers:\n  multiple_choice:\n    require_think_close: true\n")
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"verifier": "multiple_choice", "response": "A", "reference": "A"}]
    )
    proc = run_cli("score", str(source), "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "format_error"  # the config's gate applied


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"verifier": "math", "response": "1", "reference": "1"}\n{oops\n', ":2: malformed JSON"),
        ('{"verifier": "alchemy", "response": "1", "reference": "1"}\n', "unknown verifier 'alchemy'"),
        ('{"verifier": "multiple_choice", "response": "1", "reference": "Z"}\n', "samples[0] (id 'line1')"),
    ],
    ids=["malformed-line", "unknown-verifier", "bad-reference"],
)
def test_invalid_input_exits_2_with_the_reason(tmp_path, content, message):
    source = tmp_path / "bad.jsonl"
    source.write_text(content)
    proc = run_cli("score", str(source))
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


def test_list_and_prepare_nltk_data(tmp_path):
    proc = run_cli("list")
    assert proc.returncode == 0
    assert [v["name"] for v in json.loads(proc.stdout)] == ["math", "code", "multiple_choice", "ifeval"]
    proc = run_cli("prepare-nltk-data", str(tmp_path / "nltk"))
    assert proc.returncode == 0
    assert (
        tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english" / "ortho_context.tab"
    ).stat().st_size > 1000
