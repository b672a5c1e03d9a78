"""Operator scale: N RLVRRuns created at once against kmock's Kubernetes emulator (issue 4).

Three processes, so that each figure belongs to one of them and none waits for another's GIL:

* the emulator (tests/support/kmock_fast.py: kmock's KubernetesEmulator without its O(requests) dispatch
  and O(objects) lookups, and with resourceVersions as a real API server bumps them);
* the operator: the real handlers under kopf with production settings (kopf's defaults, the
  handlers' start-up timeouts, INFO logging to a file as `kopf run` logs, Events at INFO);
* this driver: creates the runs (at most --concurrency calls in flight) and waits.

Reported: time from the first create call until every run has its trainer Job and a status phase
("all ready"); per run, the latency from its create call to that point (p50, p99), both stamped by
the emulator at the write that completed the run; peak RSS and CPU time of operator and emulator
separately; API requests per run by client (kopf itself vs the handlers' kubernetes_asyncio
client) and verb; the emulator's service time per request; how often, and how long, each
reconcile entry point ran. Not a timed test. Other jobs may share the cores: note the load.

With --lifecycle the driver then plays the Job controller for every run (its trainer Job becomes
active, then complete) and waits until every run reports Running, then Succeeded: the refreshes
that child events trigger, counted per run. With --foreign-jobs N, N Jobs the operator does not
manage exist in the cluster and change status once each while the runs are created: what an
operator that watches every Job of the cluster receives and filters itself.

    .venv/bin/python bench/bench_operator.py --runs 500 [--concurrency 50] [--settle 0]
        [--lifecycle] [--foreign-jobs 2000]
        [--profile DIR] [--kopf-setting persistence.consistency_timeout=60]
        [--emulator-variant slow-dispatch] [--operator-experiment no-trust-env]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.* and tests.support in the child processes too

# Only stdlib (and what the driver needs) here: spawned children re-import this module.
from bench import operator_bench_procs as procs  # noqa: E402

CASE = ROOT / "tests" / "unit" / "operator" / "cases" / "tiny-cpu.yaml"
RUNS_PATH = "/apis/m2rl.io/v1alpha1/namespaces/default/rlvrruns"
JOBS_PATH = "/apis/batch/v1/namespaces/default/jobs"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
DRIVER_AGENT = "bench-driver/1"
VARIANTS = {  # --emulator-variant: undo one of kmock_fast's fixes, to measure what it is worth
    "slow-dispatch": {"fast_dispatch": False},
    "scan-objects": {"indexed": False},
    "no-resource-versions": {"stamped": False},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def per_run(counts: dict[str, int], runs: int) -> dict[str, Any]:
    """Requests by client, then by `verb resource`, divided by the number of runs."""
    by_client: dict[str, dict[str, float]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for key, n in counts.items():
        client, action, path = key.split("|")
        if client == DRIVER_AGENT.split("/")[0]:
            continue
        by_client[client][f"{action} {path}"] = round(n / runs, 2)
        totals[client] += n
    named = {"kopf": "kopf", "OpenAPI-Generator": "handlers (kubernetes_asyncio)"}
    return {
        "total": round(sum(totals.values()) / runs, 2),
        **{
            named.get(client, client): {
                "total": round(totals[client] / runs, 2),
                **dict(sorted(calls.items(), key=lambda kv: -kv[1])),
            }
            for client, calls in by_client.items()
        },
    }


def run_body(template: dict[str, Any], name: str) -> dict[str, Any]:
    body = copy.deepcopy(template)
    body["metadata"] = {"name": name, "namespace": "default"}  # uid, rv: set by the emulator
    return body


def foreign_job(name: str) -> dict[str, Any]:
    """A Job of someone else (no m2rl labels)."""
    container = {"name": "main", "image": "busybox", "command": ["true"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "someone-else"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


async def drive(
    runs: int,
    concurrency: int,
    timeout_s: float,
    settle_s: float,
    emulator: Any,
    server: str,
    *,
    lifecycle: bool = False,
    foreign_jobs: int = 0,
) -> dict[str, Any]:
    import aiohttp
    import yaml

    template = yaml.safe_load(CASE.read_text())
    del template["spec"]["queueName"]  # no Kueue here: trainer Jobs start unsuspended
    names = [f"run-{i:04d}" for i in range(runs)]
    foreign = [f"foreign-{i:05d}" for i in range(foreign_jobs)]
    created: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)

    def ask(command: str) -> Any:
        emulator.send(command)
        return emulator.recv()

    async with aiohttp.ClientSession(headers={"User-Agent": DRIVER_AGENT}) as session:

        async def call(method: str, path: str, body: dict[str, Any], **kwargs: Any) -> None:
            async with limit, session.request(method, server + path, json=body, **kwargs) as reply:
                assert reply.status < 300, (reply.status, await reply.text())

        async def create(name: str) -> None:
            async with limit:
                created[name] = time.time()
                async with session.post(server + RUNS_PATH, json=run_body(template, name)) as reply:
                    assert reply.status < 300, (reply.status, await reply.text())

        async def wait_for(what: str, command: str, start: float) -> float:
            done, last_report = 0, time.time()
            while done < runs and time.time() - start < timeout_s:
                await asyncio.sleep(0.5)
                done = await asyncio.to_thread(ask, command)
                if time.time() - last_report >= 30:
                    last_report = time.time()
                    print(f"{last_report - start:.0f} s: {done}/{runs} {what}", file=sys.stderr, flush=True)
            return round(time.time() - start, 2)

        for name in foreign:  # present before the operator's work starts, as in a shared cluster
            await call("POST", JOBS_PATH, foreign_job(name))
        start = time.time()
        churn = asyncio.gather(
            *(call("PATCH", f"{JOBS_PATH}/{n}/status", {"status": {"active": 1}}, headers=MERGE_PATCH)
              for n in foreign)
        )  # fmt: skip
        creating = asyncio.gather(*(create(n) for n in names))
        await wait_for("ready", "progress", start)
        await creating
        await churn
        created_s = max(created.values()) - start
        phases: dict[str, Any] = {}
        if lifecycle:
            phases["counts_after_ready"] = await asyncio.to_thread(ask, "counts")
            complete = {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            for state, phase in (({"active": 1}, "Running"), (complete, "Succeeded")):
                begin = time.time()
                await asyncio.gather(
                    *(call("PATCH", f"{JOBS_PATH}/{n}-trainer/status", {"status": state}, headers=MERGE_PATCH)
                      for n in names)
                )  # fmt: skip
                phases[f"seconds_until_all_{phase.lower()}"] = await wait_for(phase, f"phase {phase}", begin)
    if settle_s:
        await asyncio.sleep(settle_s)  # steady state: status timers, watch events, Events
    return {"start": start, "created": created, "created_s": created_s, **phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50, help="create calls in flight at once")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument("--settle", type=float, default=0, help="seconds to keep running after all ready")
    parser.add_argument(
        "--lifecycle", action="store_true", help="then make every trainer Job active, then complete"
    )
    parser.add_argument("--foreign-jobs", type=int, default=0, help="Jobs of others in the cluster")
    parser.add_argument("--profile", help="cProfile both children; stats into this directory")
    parser.add_argument("--log", help="operator log file (default: a temporary file)")
    parser.add_argument(
        "--kopf-setting",
        action="append",
        default=[],
        metavar="SECTION.ATTR=JSON",
        help="override a kopf setting in the operator, e.g. queueing.worker_limit=50",
    )
    parser.add_argument("--emulator-variant", choices=sorted(VARIANTS), action="append", default=[])
    parser.add_argument(
        "--operator-experiment",
        choices=sorted(procs.EXPERIMENTS),
        action="append",
        default=[],
        help="an operator-side change tried by monkeypatching in the operator process",
    )
    args = parser.parse_args()

    overrides = {}
    for item in args.kopf_setting:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    variant: dict[str, bool] = {}
    for name in args.emulator_variant:
        variant |= VARIANTS[name]
    log_path = args.log or tempfile.mkstemp(prefix="bench-operator-", suffix=".log")[1]

    from m2rl_operator import naming

    assert naming.trainer("x") == "x" + procs.TRAINER_SUFFIX, "trainer Job name changed"

    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: RSS of their own
    emulator, emulator_end = spawn.Pipe()
    emulator_proc = spawn.Process(
        target=procs.serve_emulator,
        args=(emulator_end, args.profile, variant),
        name="emulator",
        daemon=True,
    )
    emulator_proc.start()
    server = emulator.recv()
    operator, operator_end = spawn.Pipe()
    operator_proc = spawn.Process(
        target=procs.run_operator,
        args=(operator_end, server, args.profile, log_path, overrides, args.operator_experiment),
        name="operator",
        daemon=True,
    )
    operator_proc.start()
    assert operator.recv() == "ready", "operator did not start"
    load_before = os.getloadavg()[0]
    try:
        driven = asyncio.run(
            drive(
                args.runs, args.concurrency, args.timeout, args.settle, emulator, server,
                lifecycle=args.lifecycle, foreign_jobs=args.foreign_jobs,
            )
        )  # fmt: skip
    finally:
        operator.send("stop")
        operator_stats = operator.recv()
        emulator.send("stop")
        emulator_stats = emulator.recv()
        operator_proc.join(30)
        emulator_proc.join(30)
    load_after = os.getloadavg()

    ready_at: dict[str, float] = emulator_stats.pop("ready_at")
    created, start = driven["created"], driven["start"]
    latencies = [ready_at[n] - created[n] for n in ready_at if n in created] or [float("nan")]
    result = {
        "runs": args.runs,
        "ready": len(ready_at),
        "seconds_until_all_ready": round(max(ready_at.values(), default=float("nan")) - start, 2),
        "seconds_until_all_created": round(driven["created_s"], 2),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
        "latency_max_s": round(max(latencies), 3),
        "operator": operator_stats,
        "emulator": {
            key: emulator_stats[key]
            for key in ("peak_rss_mib", "cpu_s", "service", "objects", "recorded_requests")
        },
        "requests_per_run": per_run(emulator_stats["counts"], args.runs),
        **(
            {
                "requests_per_run_until_ready": per_run(driven["counts_after_ready"], args.runs)["total"],
                "seconds_until_all_running": driven["seconds_until_all_running"],
                "seconds_until_all_succeeded": driven["seconds_until_all_succeeded"],
            }
            if args.lifecycle
            else {}
        ),
        "foreign_jobs": args.foreign_jobs,
        "settle_s": args.settle,
        "kopf_settings": overrides,
        "emulator_variant": variant,
        "operator_experiments": args.operator_experiment,
        "load_average_1m_before": round(load_before, 2),
        "load_average_after": [round(x, 2) for x in load_after],
        "operator_log": log_path,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
