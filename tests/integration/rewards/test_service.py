"""`m2rl-verifier serve` as a real server process on 127.0.0.1: API, limits, metrics, parity with the
library, and latency of other requests while hostile code runs."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from m2rl_trainer.rewards.client import HttpScorer
from tests.integration.rewards.helpers import (
    descendants,
    free_port,
    processes_with,
    require_bwrap,
    wait_until,
)
from tests.integration.rewards.test_scorer import mixed_batch, slow_math

CONFIG = """
python_workers: 2
sandbox_workers: 2
service:
  max_inflight_requests: 4
  max_pending_samples: 8
  max_request_bytes: 1048576
  max_batch_samples: 100
"""


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_bwrap()
    workdir = tmp_path_factory.mktemp("service")
    (workdir / "config.yaml").write_text(CONFIG)
    port = free_port()
    log = workdir / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "m2rl_trainer.rewards.cli",
                "serve",
                "--port",
                str(port),
                "--config",
                str(workdir / "config.yaml"),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_until(healthy, 120.0) and proc.poll() is None, log.read_text()
    yield Server(proc, url, log)
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    # a clean shutdown leaves none of its workers or sandboxes behind
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), 10.0)


_clients = threading.local()


def post(server: Server, body: bytes | dict, timeout: float = 60) -> httpx.Response:
    """POST /v1/score on a per-thread keep-alive client (a new httpx client costs ~50 ms of TLS set-up)."""
    client = getattr(_clients, "client", None)
    if client is None:
        client = _clients.client = httpx.Client()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"{server.url}/v1/score",
        content=content,
        timeout=timeout,
        headers={"Content-Type": "application/json"},
    )


def strip_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k != "time_s"}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def test_health_and_verifier_listing(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    assert health["pools"]["python"]["alive"] == 2 and health["pools"]["sandbox"]["alive"] == 2
    # the service's sandboxes run programs at low priority, with setsid() denied
    assert health["pools"]["sandbox"]["worker"]["low_priority"] is True
    assert health["pools"]["sandbox"]["worker"]["seccomp"] is True
    # what one request may hold, for clients to split batches by
    assert health["limits"] == {
        "max_request_bytes": 1048576,
        "max_batch_samples": 100,
        "max_pending_samples": 8,
        "max_inflight_requests": 4,
    }
    names = [v["name"] for v in httpx.get(f"{server.url}/v1/verifiers").json()["verifiers"]]
    assert names == ["math", "code", "multiple_choice", "ifeval"]


def test_service_and_library_give_the_same_results(server, scorer):
    batch = mixed_batch()
    with HttpScorer(server.url) as remote:
        over_http = remote.score(batch)
    in_process = scorer.score(batch)
    assert [strip_timing(r.to_dict()) for r in over_http] == [strip_timing(r.to_dict()) for r in in_process]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b'["samples"]', 'expected a JSON object {"samples": [...]}'),
        (
            b'{"samples": [{"verifier": "astrology", "response": "", "reference": 1}]}',
            "unknown verifier 'astrology'",
        ),
        (
            json.dumps(
                {
                    "samples": [
                        {"verifier": "math", "response": "1", "reference": "1", "options": {"bogus": 1}}
                    ]
                }
            ).encode(),
            "samples[0]: verifier 'math': unknown option(s) ['bogus']",
        ),
    ],
    ids=["malformed", "not-utf8", "not-object", "unknown-verifier", "unknown-option"],
)
def test_bad_requests_get_400_with_a_message(server, body, message):
    response = post(server, body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_requests_that_can_never_be_admitted_get_413_with_a_message(server):
    response = post(server, b'{"samples": [], "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert response.status_code == 413
    mc = {"verifier": "multiple_choice", "response": "A", "reference": "A"}
    response = post(server, {"samples": [mc] * 101})
    assert response.status_code == 413
    assert response.json()["error"].startswith("101 samples exceed the limit of 100 per request; split")
    # 9 math samples: more than the python pool queues (8), so no retry could ever admit them
    math = {"verifier": "math", "response": r"\boxed{1}", "reference": "1"}
    response = post(server, {"samples": [math] * 9})
    assert response.status_code == 413 and "Retry-After" not in response.headers
    assert (
        "9 samples for the python_worker pool can never be admitted: it queues at most 8"
        in (response.json()["error"])
    )


def test_the_client_splits_batches_to_the_service_limits(server):
    """One call with 60 samples: requests of at most 4 samples (half the queue of 8), in order."""
    batch = [
        {"id": str(i), "verifier": "math", "response": rf"\boxed{{{i}}}", "reference": str(i + i % 3)}
        for i in range(60)
    ]
    with HttpScorer(server.url) as remote:
        results = remote.score(batch)
    assert [r.id for r in results] == [str(i) for i in range(60)]
    assert [r.reward for r in results] == [1.0 if i % 3 == 0 else 0.0 for i in range(60)]


def test_saturated_pool_gets_429_while_math_is_still_served(server):
    sleeper = {
        "verifier": "code",
        "response": "```python\nimport time\ntime.sleep(0.6)\n```",
        "reference": {"tests": [{"stdout": ""}]},
        "options": {"timeout_s": 3},
    }
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(post, server, {"samples": [sleeper] * 8})  # fills the sandbox queue (limit 8)

        def queued() -> bool:
            return httpx.get(f"{server.url}/health").json()["pending"]["sandbox"] == 8

        assert wait_until(queued, 5.0)
        # 2 more: refused while at least 7 of the 8 are still pending (each sleeps 0.6 s, 2 at a time)
        refused = post(server, {"samples": [sleeper, sleeper]})
        math = post(server, {"samples": [{"verifier": "math", "response": r"\boxed{1}", "reference": "1"}]})
        assert busy.result().status_code == 200
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert "sandbox pool" in refused.json()["error"]
    assert math.status_code == 200  # a code backlog does not refuse math


def test_too_many_requests_in_flight_get_429(server):
    slow = slow_math(1)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(server, {"samples": [slow]}), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 4 and 429 in codes, codes


def test_metrics_count_requests_timeouts_and_kills(server):
    post(
        server,
        {
            "samples": [
                {
                    "verifier": "code",
                    "response": "```python\nwhile True: pass\n```",
                    "reference": {"tests": [{"stdout": ""}]},
                    "options": {"timeout_s": 0.3},
                }
            ]
        },
    )
    text = httpx.get(f"{server.url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("m2rl_verifier_requests_total", code="200", endpoint="score") >= 1
    assert value("m2rl_verifier_requests_total", code="400", endpoint="score") >= 1
    assert value("m2rl_verifier_request_duration_seconds_count", endpoint="score") >= 2
    assert value("m2rl_verifier_timeouts_total", verifier="code") >= 1
    assert value("m2rl_verifier_sandbox_kills_total", reason="timeout", verifier="code") >= 1
    assert value("m2rl_verifier_samples_total", verdict="correct", verifier="math") >= 1
    assert value("m2rl_verifier_rejected_requests_total", reason="saturated") >= 1
    # Verifier types x verdicts start at 0 rather than missing (error ratios read 0, not "no data").
    assert value("m2rl_verifier_samples_total", verdict="sandbox_error", verifier="ifeval") == 0
    assert value("m2rl_verifier_timeouts_total", verifier="multiple_choice") == 0


# name, program, verdicts it may get. The service runs programs at low priority: on a machine busy
# with other work a program may wait past its hard wall-clock cap before it gets the CPU to reach
# its own limit, so a timeout is also a contained outcome there. The library tests
# (test_hostile_code.py) check the exact verdicts of the same programs at normal priority.
HOSTILE = [
    (
        "fork bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        {"timeout"},
    ),
    ("infinite loop", "while True: pass", {"timeout"}),
    ("infinite loop", "x = 0\nwhile True: x += 1", {"timeout"}),
    ("memory bomb", "b = []\nwhile True: b.append(bytearray(10**8))", {"memory_limit", "timeout"}),
    ("huge output", "while True: print('y' * 4096)", {"output_limit", "timeout"}),
    ("sleeper", "import time\ntime.sleep(30)", {"timeout"}),
    (
        "background",
        "import os\nif os.fork() == 0:\n    os.execv('/bin/sleep', ['sleep', '31337.303'])\nprint('done')",
        {"correct", "timeout"},
    ),
    ("kill parent", "import os\nos.kill(os.getppid(), 9)", {"sandbox_error", "timeout"}),
]


def test_other_requests_keep_their_speed_while_hostile_code_runs(server):
    def quick() -> float:
        batch = {
            "samples": [
                {"verifier": "math", "response": r"\boxed{\frac{1}{2}}", "reference": "0.5"},
                {"verifier": "multiple_choice", "response": "Answer: C", "reference": "C"},
            ]
        }
        start = time.monotonic()
        response = post(server, batch, timeout=10)
        assert response.status_code == 200 and [r["reward"] for r in response.json()["results"]] == [1.0, 1.0]
        return time.monotonic() - start

    baseline = [quick() for _ in range(30)]
    hostile = {
        "samples": [
            {
                "id": name,
                "verifier": "code",
                "response": f"```python\n{code}\n```",
                "reference": {"tests": [{"stdout": "done"}]},
                "options": {"timeout_s": 1.0, "max_wall_factor": 2.0, "memory_mb": 256},
            }
            for name, code, _ in HOSTILE
        ]
    }
    outcome: dict = {}
    attack = threading.Thread(target=lambda: outcome.update(response=post(server, hostile, timeout=60)))
    attack.start()
    time.sleep(0.2)
    under_attack = []
    while attack.is_alive() and len(under_attack) < 200:
        under_attack.append(quick())
    attack.join()
    results = outcome["response"].json()["results"]
    for (name, _, allowed), result in zip(HOSTILE, results, strict=True):
        assert result["verdict"] in allowed, (name, result)
        assert result["reward"] == (1.0 if result["verdict"] == "correct" else 0.0)
    base, loaded = statistics.median(baseline), statistics.median(under_attack)
    print(
        f"\nquick request median: {base * 1000:.1f} ms idle, {loaded * 1000:.1f} ms under attack "
        f"({len(under_attack)} requests, max {max(under_attack) * 1000:.1f} ms)"
    )
    assert len(under_attack) >= 10
    assert loaded <= 2.5 * base + 0.010, (base, loaded)  # 2 shared cores: allow noise, not starvation
    assert wait_until(lambda: processes_with("31337.303") == [], 3.0)
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["pools"]["sandbox"]["alive"] == 2
