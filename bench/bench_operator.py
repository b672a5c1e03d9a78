"""Operator scale: N RLVRRuns created at once against kmock's Kubernetes emulator (issue 4).

Measures, for the real handlers (kopf, the same code as in a cluster, status interval 30 s):
time until every run has its trainer Job and a status phase, the per-run latency from the create
call to that point (p50, p99), and the peak RSS of this process. The emulator and the operator
share the process (the operator in its own thread and event loop), so the RSS is an upper bound
of the operator's; the emulator (pure Python, no indexes) is also the likely bottleneck on 2
cores, so the figures bound a real API server from below. Not a timed test.

    .venv/bin/python bench/bench_operator.py [--runs 500] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support and the operator thread helper

from kmock import KubernetesEmulator, Server  # noqa: E402
from kubernetes_asyncio import client  # noqa: E402

from m2rl_operator.settings import OperatorOptions  # noqa: E402
from tests.support.kopf_kmock import (  # noqa: E402
    CORE_RESOURCES,
    M2RL_RESOURCES,
    declare_resources,
    running_operator,
)

TINY = yaml.safe_load((ROOT / "tests" / "unit" / "operator" / "cases" / "tiny-cpu.yaml").read_text())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ready(kmock: Any, name: str) -> bool:
    try:
        job = kmock.objects["batch/v1/jobs", "default", f"{name}-trainer"]
        run = kmock.objects["m2rl.io/v1alpha1/rlvrruns", "default", name]
        return not job.deleted and bool((run.get("status") or {}).get("phase"))
    except KeyError:
        return False


async def bench(runs: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
    created: dict[str, float] = {}
    done: dict[str, float] = {}
    async with KubernetesEmulator() as kmock, Server(kmock):
        declare_resources(kmock, CORE_RESOURCES | M2RL_RESOURCES)
        memo = {
            "options": OperatorOptions(metrics_port=None),
            "trainer_metrics_url": lambda ns, n: "http://127.0.0.1:9/",
        }
        async with (
            running_operator(kmock, ["m2rl_operator.handlers"], memo),
            client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))) as api,
        ):
            custom = client.CustomObjectsApi(api)
            names = [f"run-{i:04d}" for i in range(runs)]
            limit = asyncio.Semaphore(concurrency)

            async def create(name: str) -> None:
                body = copy.deepcopy(TINY)
                body["metadata"] = {
                    "name": name,
                    "namespace": "default",
                    "uid": f"uid-{name}",
                    "resourceVersion": "1",
                }
                async with limit:
                    created[name] = time.perf_counter()
                    await custom.create_namespaced_custom_object(
                        "m2rl.io", "v1alpha1", "default", "rlvrruns", body
                    )

            start = last_report = time.perf_counter()
            creating = asyncio.gather(*(create(n) for n in names))
            while len(done) < runs:
                now = time.perf_counter()
                for name in names:
                    if name not in done and name in created and ready(kmock, name):
                        done[name] = now
                if now - start > timeout_s:
                    break  # reported as ready < runs
                if now - last_report >= 30:
                    last_report = now
                    print(f"{now - start:.0f} s: {len(done)}/{runs} ready", file=sys.stderr, flush=True)
                await asyncio.sleep(0.25)  # polling resolution; polls share the emulator's loop
            await creating
            total = time.perf_counter() - start
    latencies = [done[n] - created[n] for n in done] or [float("nan")]
    return {
        "runs": runs,
        "ready": len(done),
        "seconds_until_all_ready": round(total, 2),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
        "latency_mean_s": round(statistics.fmean(latencies), 3),
        "peak_rss_mib_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50, help="create calls in flight at once")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.runs, args.concurrency, args.timeout)), indent=2))


if __name__ == "__main__":
    main()
