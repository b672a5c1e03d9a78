"""The warm-worker mechanism with a real process that ignores signals while spinning in C."""

from __future__ import annotations

import sys

from m2rl_trainer.rewards.workers import WorkerPool, WorkerSpec
from tests.integration.rewards.helpers import alive, wait_until

# Answers {"spin": false} at once; on {"spin": true} blocks every signal it can and spins for ever.
SCRIPT = r"""
import json, os, signal, struct, sys
def send(obj):
    data = json.dumps(obj).encode(); os.write(1, struct.pack(">I", len(data)) + data)
send({"ready": True})
while True:
    head = os.read(0, 4)
    if len(head) < 4:
        sys.exit(0)
    job = json.loads(os.read(0, struct.unpack(">I", head)[0]))
    if job["spin"]:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
        while True:
            pass
    send({"pid": os.getpid()})
"""


def test_a_stuck_worker_is_killed_at_the_deadline_and_replaced():
    kills: list[str] = []
    pool = WorkerPool(WorkerSpec("spin", [sys.executable, "-c", SCRIPT], on_kill=kills.append), 1)
    try:
        pool.wait_started()
        with pool.lease() as worker:
            first = worker.call({"spin": False}, 5.0)
            stuck = worker.call({"spin": True}, 0.5)
            assert stuck.status == "timeout" and 0.5 <= stuck.elapsed_s < 1.5
            assert wait_until(lambda: not alive(first.message["pid"]), 2.0)  # killed, not leaked
            again = worker.call({"spin": False}, 5.0)
        assert again.status == "ok" and again.message["pid"] != first.message["pid"]
        assert kills == ["timeout"] and pool.workers[0].restarts == 1
    finally:
        pool.close()
    assert pool.pids() == []


def test_a_worker_that_dies_is_reported_and_restarted():
    pool = WorkerPool(
        WorkerSpec(
            "die",
            [
                sys.executable,
                "-c",
                "import os, struct, json\n"
                "d = json.dumps({'ready': True}).encode()\n"
                "os.write(1, struct.pack('>I', len(d)) + d)\nos.read(0, 1)\n",
            ],
        ),
        1,
    )
    try:
        pool.wait_started()
        with pool.lease() as worker:
            reply = worker.call({"x": 1}, 5.0)
        assert reply.status == "crashed"
    finally:
        pool.close()
