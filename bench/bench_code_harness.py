"""Code-verifier throughput, the harness of issue 11 against the one it replaced, side by side.

Both harnesses run in warm bubblewrap sandboxes with a fork per test run; they differ in what
happens per run. Old (bench/legacy_harness/, a frozen copy of the code before issue 11): the
runner forks the program, which runs the test code itself, in its own process (assert tests) or
calls the function and writes the value with a completion token (call tests). New: the program is
forked from the sandbox's fork server, reports how its code ended and answers calls with strictly
encoded values; plain asserts are evaluated on the host over those values, other assert tests run
in the sandbox's checker process, which calls into the program.

Same programs, same tests, same concurrency (`--workers` sandboxes, a sample at a time on each),
normal priority, each harness's own host-side classification included. Four kinds of tests,
equally many of each: stdin/stdout (a sum, a sort, a prime sieve), function calls, plain asserts
(`assert f(...) == ...`) and assert tests with a loop (the new harness's checker process). Each
round measures every kind for both harnesses, alternating which goes first, so that the machine's
other load hits both alike. Every test must pass in both (checked). The last line is the ratio new
/ old of test executions per second over everything; issue 11 asks that it stay >= 0.8.

    .venv/bin/python bench/bench_code_harness.py [--rounds 5] [--samples 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from m2rl_trainer.rewards import code_verifier
from m2rl_trainer.rewards.options import parse_options
from m2rl_trainer.rewards.sandbox import SandboxConfig, bwrap_argv, find_bwrap, find_sandbox_python
from m2rl_trainer.rewards.workers import WorkerPool, WorkerSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verifiers import PROGRAMS as STDIO  # the same three stdin/stdout programs
from legacy_harness import code_verifier as legacy_verifier

LEGACY_RUNNER = Path(__file__).resolve().parent / "legacy_harness" / "sandbox_runner.py"
GRACE_S = 10.0

FUNCTIONS = (
    "def add(a, b):\n    return a + b\n\n"
    "def top(xs, k):\n    return sorted(xs, reverse=True)[:k]\n\n"
    "class Solution:\n    def count(self, s, c):\n        return s.count(c)\n"
)


KINDS = ("stdio", "call", "assert", "assert-loop")


def workload(samples: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, program, reference) per sample; every sample has 10 tests of one kind."""
    work = []
    names = sorted(STDIO)
    for n in range(samples):
        kind = KINDS[n % len(KINDS)]
        base = 10 * n
        if kind == "stdio":
            code, make = STDIO[names[n % len(names)]]
            tests = [dict(zip(("stdin", "stdout"), make(base + i), strict=True)) for i in range(10)]
        elif kind == "call":
            code = FUNCTIONS
            tests = [
                {"call": "add", "args": [base, i], "expected": base + i}
                if i % 3 == 0
                else {
                    "call": "top",
                    "args": [[i, base, 3, 7], 2],
                    "expected": sorted([i, base, 3, 7])[::-1][:2],
                }
                if i % 3 == 1
                else {"call": "Solution.count", "args": ["abcabc" * i, "a"], "expected": 2 * i}
                for i in range(10)
            ]
        elif kind == "assert-loop":  # statements beyond asserts: the new harness's checker process
            code = FUNCTIONS
            tests = [
                {"assert": f"for x in range({i % 3 + 1}):\n    assert add(x, {base}) == x + {base}"}
                for i in range(10)
            ]
        else:
            code = FUNCTIONS
            tests = [
                {"assert": f"assert add({base}, {i}) == {base + i}"}
                if i % 3 == 0
                else {"assert": f"assert top([{i}, {base}, 3, 7], 2) == {sorted([i, base, 3, 7])[::-1][:2]}"}
                if i % 3 == 1
                else {"assert": f"assert Solution().count('abc' * {i}, 'a') == {i}"}
                for i in range(10)
            ]
        work.append((kind, f"```python\n{code}```", {"tests": tests}))
    return work


def start_pool(workers: int, legacy: bool) -> WorkerPool:
    config = SandboxConfig()
    python = find_sandbox_python()
    command = None
    if legacy:
        source = LEGACY_RUNNER.read_text(encoding="utf-8")
        command = [str(python), "-I", "-S", "-B", "-c", source, "normal"]
    argv = bwrap_argv(config, find_bwrap(), python, command)
    popen: dict[str, object] = {"cwd": "/", "env": {}}
    if os.geteuid() == 0:  # as the scorer does: an unprivileged uid, so RLIMIT_NPROC binds
        popen.update(user=65534, group=65534, extra_groups=[])
    pool = WorkerPool(WorkerSpec(name="bench", argv=argv, ready_timeout_s=30.0, popen_kwargs=popen), workers)
    pool.wait_started()
    return pool


def run_round(
    pool: WorkerPool, workers: int, module: Any, work: list[tuple[str, str, dict[str, Any]]]
) -> dict[str, float]:
    """Score every sample through `module.verify` on `pool`; returns executions and seconds per kind."""
    options = parse_options(module.CodeOptions, {"scoring": "fraction"}, "code")

    def one(item: tuple[str, str, dict[str, Any]]) -> tuple[str, int, float]:
        kind, response, reference = item
        start = time.perf_counter()
        with pool.lease() as worker:

            def run(job: dict[str, Any], cap: float, worker: Any = worker) -> Any:
                return worker.call(job, cap + GRACE_S)

            result = module.verify(response, reference, options, run)
        assert result.reward == 1.0, (kind, result.details)
        return kind, result.details["executed"], time.perf_counter() - start

    totals: dict[str, float] = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as executor:
        for kind, executed, _seconds in executor.map(one, work):
            totals[kind] = totals.get(kind, 0) + executed
    totals["seconds"] = time.perf_counter() - start
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds (each measures every kind, both harnesses)"
    )
    parser.add_argument(
        "--samples", type=int, default=12, help="samples of each kind per round (10 tests each)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="sandboxes (default: cores)")
    args = parser.parse_args()
    print(
        f"cores: {os.cpu_count()}, sandboxes: {args.workers}, load average before: {os.getloadavg()[0]:.2f}"
    )
    work = workload(args.samples * len(KINDS))
    by_kind = {kind: [item for item in work if item[0] == kind] for kind in KINDS}
    harnesses: dict[str, tuple[Any, WorkerPool]] = {
        "old": (legacy_verifier, start_pool(args.workers, legacy=True)),
        "new": (code_verifier, start_pool(args.workers, legacy=False)),
    }
    # (executions, seconds) per harness and kind
    totals = {name: {kind: [0.0, 0.0] for kind in KINDS} for name in harnesses}
    try:
        for module, pool in harnesses.values():
            run_round(pool, args.workers, module, work[: 2 * len(KINDS)])  # warm
        for round_index in range(args.rounds):
            for kind in KINDS:
                names = list(harnesses) if round_index % 2 == 0 else list(harnesses)[::-1]
                for name in names:
                    module, pool = harnesses[name]
                    measured = run_round(pool, args.workers, module, by_kind[kind])
                    totals[name][kind][0] += measured[kind]
                    totals[name][kind][1] += measured["seconds"]
    finally:
        for _, pool in harnesses.values():
            pool.close()
    print()
    print(
        f"{'test executions/s, ' + str(args.workers) + ' sandboxes':<40}{'old':>10}{'new':>10}{'new/old':>10}"
    )
    for kind in KINDS:
        old, new = (totals[name][kind][0] / totals[name][kind][1] for name in ("old", "new"))
        print(f"{'  ' + kind:<40}{old:>10.1f}{new:>10.1f}{new / old:>10.2f}")
    rate = {
        name: sum(e for e, _ in kinds.values()) / sum(t for _, t in kinds.values())
        for name, kinds in totals.items()
    }
    print(f"{'  all kinds':<40}{rate['old']:>10.1f}{rate['new']:>10.1f}{rate['new'] / rate['old']:>10.2f}")
    executions = int(sum(e for e, _ in totals["new"].values()))
    print(f"executions per harness: {executions}; load average after: {os.getloadavg()[0]:.2f}")
    print(f"ratio new/old executions/s: {rate['new'] / rate['old']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
