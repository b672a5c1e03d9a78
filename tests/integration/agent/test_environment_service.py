"""`python -m m2rl_trainer.agent serve` as a real server process inside bubblewrap (read-only root
filesystem, its own PID/IPC/UTS namespaces): NeMo Gym's routes and verify request, sessions, and
episodes over HTTP identical to in-process ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from m2rl_trainer.agent import EpisodeConfig, WorkplaceEnvironment, run_episodes
from m2rl_trainer.agent.client import HttpEnvironment
from m2rl_trainer.agent.environment import SessionError
from m2rl_trainer.agent.toy import toy_agent_rows
from m2rl_trainer.agent.workplace import WorkplaceData
from m2rl_trainer.agent.workplace.tiny import tiny_workplace
from tests.integration.rewards.helpers import free_port, require_bwrap, wait_until
from tests.unit.agent.test_episodes import CODEC, EOT, sampled_policy, task

# NeMo Gym's test_verify: carlos's email, and the reply the ground truth makes
CARLOS = {
    "email_id": "00000057",
    "inbox/outbox": "inbox",
    "sender/recipient": "carlos.rodriguez@atlas.com",
    "subject": "Task Update on Develop prototype for report generation",
    "sent_datetime": "2023-11-29 10:00:00",
    "body": "Just an update.",
}
REPLY = '{"email_id": "00000057", "body": "Thanks for the update - I will get back to you tomorrow."}'


def workplace() -> WorkplaceData:
    tiny = tiny_workplace()
    return WorkplaceData.from_rows(
        {**tiny.tables, "emails": [*tiny.tables["emails"], CARLOS]}, tiny.directory
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bwrap = require_bwrap()
    data = workplace().write(tmp_path_factory.mktemp("agent") / "csv_data")
    port = free_port()
    log = data.parent / "service.log"
    # The whole host read-only, a private /tmp: the service must need no writable file. The network is
    # shared so the test can reach it (the operator's NetworkPolicy denies egress in a cluster).
    command = [
        str(bwrap),
        "--unshare-all",
        "--share-net",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        str(data),
        str(data),
        sys.executable,
        "-m",
        "m2rl_trainer.agent",
        "serve",
        "--data",
        str(data),
        "--port",
        str(port),
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_until(healthy, 60.0) and proc.poll() is None, log.read_text()
    yield base
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) is not None


def test_nemo_gym_verify_request(url: str):
    """NeMo Gym's test_verify, as its simple agent posts it: reward 1.0 and the request echoed back."""
    request = {
        "responses_create_params": {
            "input": [{"role": "user", "content": "Reply to carlos's last email ..."}]
        },
        "response": {
            "id": "resp_1",
            "output": [
                {
                    "arguments": REPLY,
                    "call_id": "call_4HOX",
                    "name": "email_reply_email",
                    "type": "function_call",
                    "id": "fc_68b2",
                    "status": "completed",
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Done."}],
                },
            ],
        },
        "ground_truth": [{"name": "email_reply_email", "arguments": REPLY}],
        "category": "workplace_assistant_email",
        "environment_name": "workplace_assistant",
        "id": "0",
    }
    answer = httpx.post(f"{url}/verify", json=request).json()
    assert answer == {**request, "reward": 1.0, "details": []}
    request["response"]["output"] = [
        {"type": "message", "role": "assistant", "content": []}
    ]  # replied nothing
    answer = httpx.post(f"{url}/verify", json=request).json()
    assert answer["reward"] == 0.0 and answer["details"][0].startswith("emails: expected row ('58', 'outbox'")
    # the M2RL study's agent posts the calls at the top level, its own ground truth as a JSON string
    study = {
        "output": [{"type": "function_call", "name": "email_reply_email", "arguments": json.loads(REPLY)}],
        "ground_truth": json.dumps(request["ground_truth"]),
    }
    assert httpx.post(f"{url}/verify", json=study).json()["reward"] == 1.0
    bad = httpx.post(f"{url}/verify", json={"output": [], "ground_truth": [{"name": "email_unsend"}]})
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "ground_truth[0].name: unknown workplace tool 'email_unsend'"},
    )


def test_sessions_over_http(url: str):
    with httpx.Client() as client:
        seeded = client.post(f"{url}/seed_session", json={})
        session = seeded.json()["session_id"]
        assert seeded.cookies["m2rl_session"] == session
        # the cookie carries the session, as NeMo Gym's agents use it
        deleted = client.post(f"{url}/calendar_delete_event", json={"event_id": "00000001"})
        assert deleted.json() == {"output": "Event deleted successfully."}
        again = client.post(f"{url}/calendar_delete_event", json={"event_id": "00000001"})
        assert again.json() == {"output": "Event not found."}  # the session kept the change
    # a second session starts from the initial workplace; the header carries it
    other = httpx.post(f"{url}/seed_session").json()["session_id"]
    found = httpx.post(
        f"{url}/calendar_get_event_information_by_id",
        json={"event_id": "00000001", "field": "event_name"},
        headers={"X-Session-Id": other},
    )
    assert found.json() == {"output": {"event_name": "sync"}}
    no_session = httpx.post(f"{url}/calendar_delete_event", json={"event_id": "00000001"})
    assert no_session.status_code == 400 and "no session" in no_session.json()["error"]
    httpx.post(f"{url}/end_session", headers={"X-Session-Id": other})
    gone = httpx.post(f"{url}/email_search_emails", json={}, headers={"X-Session-Id": other})
    assert gone.status_code == 400 and "unknown session" in gone.json()["error"]
    malformed = httpx.post(f"{url}/email_search_emails", content=b"[1]", headers={"X-Session-Id": session})
    assert malformed.status_code == 400
    assert len(httpx.get(f"{url}/v1/tools").json()["tools"]) == 27
    metrics = httpx.get(f"{url}/metrics").text
    assert 'm2rl_agent_env_tool_calls_total{tool="calendar_delete_event"} 2.0' in metrics


def test_episodes_over_http_equal_in_process_ones(url: str):
    tasks = [task(r) for r in toy_agent_rows()]
    config = EpisodeConfig(end_of_turn_id=EOT, parallel=8)
    remote = HttpEnvironment(url)
    try:
        over_http = run_episodes(tasks, sampled_policy(5), CODEC, remote, config)
        with pytest.raises(SessionError, match="unknown session"):
            remote.call("not-a-session", "email_search_emails", {})
    finally:
        remote.close()
    local = run_episodes(tasks, sampled_policy(5), CODEC, WorkplaceEnvironment(workplace()), config)
    summary = [(e.token_ids, e.loss_mask, e.finish, e.reward, e.verdict.details) for e in local]
    assert [(e.token_ids, e.loss_mask, e.finish, e.reward, e.verdict.details) for e in over_http] == summary
    assert 0 < sum(e.reward for e in local) < len(local)
    assert httpx.get(f"{url}/health").json()["sessions"] <= 2  # the episodes ended theirs


def test_a_bad_data_directory_is_an_error_at_start(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "m2rl_trainer.agent", "serve", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "processed/emails.csv: cannot read (No such file or directory)" in done.stderr
