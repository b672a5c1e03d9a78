"""Verifier throughput, measured side by side in one run (issue 5).

Code: sandboxed test executions per second through the warm bubblewrap pool, against the naive
baseline that starts one plain, unsandboxed `python3 solution.py` subprocess per test. Both run the
same programs on the same tests with the same concurrency (one per sandbox worker / core), at
normal priority, and check the same outputs. The pool at low priority (the service's setting) is
printed too: on a machine busy with other jobs it mostly waits for them, by design.

Math: checks per second through the pool of math-verify worker processes, against calling the
same check (`math_verifier.verify`: extraction + math-verify) sequentially in this process.

    .venv/bin/python bench/bench_verifiers.py [--code-execs 600] [--math-repeat 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from m2rl_trainer.rewards import Scorer, ScorerConfig
from m2rl_trainer.rewards.code_verifier import stdout_matches
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.sandbox import SandboxConfig, find_sandbox_python

ROOT = Path(__file__).resolve().parents[1]
MATH_CASES = ROOT / "tests" / "unit" / "rewards" / "data" / "math_cases.jsonl"

# Typical competitive-programming shapes: parse input, compute, print.
PROGRAMS = {
    "sum": (
        "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n",
        lambda i: (f"{i} {2 * i}\n", f"{3 * i}\n"),
    ),
    "sort": (
        "n = int(input())\nxs = list(map(int, input().split()))\nprint(*sorted(xs))\n",
        lambda i: (f"5\n{i} 3 {i % 7} 9 1\n", " ".join(map(str, sorted([i, 3, i % 7, 9, 1]))) + "\n"),
    ),
    "primes": (
        "n = int(input())\nsieve = [True] * (n + 1)\nfor p in range(2, int(n ** 0.5) + 1):\n"
        "    if sieve[p]:\n        sieve[p * p :: p] = [False] * len(sieve[p * p :: p])\n"
        "print(sum(sieve[2:]))\n",
        lambda i: (f"{1000 + i}\n", f"{_count_primes(1000 + i)}\n"),
    ),
}


def _count_primes(n: int) -> int:
    return sum(1 for k in range(2, n + 1) if all(k % d for d in range(2, int(k**0.5) + 1)))


def code_workload(execs: int) -> list[tuple[str, str, str]]:
    """(program, stdin, expected stdout) for `execs` test executions."""
    names = sorted(PROGRAMS)
    work = []
    for i in range(execs):
        code, make = PROGRAMS[names[i % len(names)]]
        stdin, expected = make(i)
        work.append((code, stdin, expected))
    return work


def bench_code_pool(work: list[tuple[str, str, str]], workers: int, low_priority: bool) -> tuple[float, int]:
    # Samples of 10 tests of one program each (a problem's tests run in order on one sandbox).
    by_program: dict[str, list[tuple[str, str, str]]] = {}
    for item in work:
        by_program.setdefault(item[0], []).append(item)
    samples = []
    for code, items in by_program.items():
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            samples.append(
                {
                    "verifier": "code",
                    "response": f"```python\n{code}```",
                    "reference": {"tests": [{"stdin": s, "stdout": e} for _, s, e in chunk]},
                    "options": {"scoring": "fraction"},
                }
            )
    # Normal priority is the library's default and the naive baseline's; low priority (the service's
    # default: SCHED_IDLE in a nice-19 scheduler autogroup) waits for every other job of the machine.
    sandbox = SandboxConfig(low_priority=low_priority)
    with Scorer(ScorerConfig(verifiers={"code": {}}, sandbox_workers=workers, sandbox=sandbox)) as scorer:
        scorer.score(samples[:4])  # warm
        start = time.perf_counter()
        results = scorer.score(samples)
        elapsed = time.perf_counter() - start
    execs = sum(r.details["executed"] for r in results)
    passed = sum(r.details["passed"] for r in results)
    assert passed == execs, "every test should pass in both paths"
    return execs / elapsed, execs


def bench_code_naive(work: list[tuple[str, str, str]], workers: int) -> tuple[float, int]:
    python = str(find_sandbox_python())  # the same interpreter the sandbox runs
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for code, _, _ in work:
            if code not in files:
                path = Path(tmp) / f"solution{len(files)}.py"
                path.write_text(code)
                files[code] = str(path)

        def one(item: tuple[str, str, str]) -> bool:
            code, stdin, expected = item
            proc = subprocess.run(
                [python, files[code]], input=stdin, capture_output=True, text=True, timeout=10, cwd=tmp
            )
            return proc.returncode == 0 and stdout_matches(
                proc.stdout, expected, get_verifier("code").parse_options({})
            )

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, work[:8]))  # warm the page cache
            start = time.perf_counter()
            ok = list(pool.map(one, work))
            elapsed = time.perf_counter() - start
    assert all(ok), "every test should pass in both paths"
    return len(work) / elapsed, len(work)


def math_samples(repeat: int) -> list[dict]:
    cases = [json.loads(line) for line in MATH_CASES.read_text().splitlines()]
    return [
        {
            "verifier": "math",
            "response": c["response"],
            "reference": c["reference"],
            "options": c.get("options", {}),
        }
        for _ in range(repeat)
        for c in cases
    ]


def bench_math_sequential(samples: list[dict]) -> tuple[float, list[str]]:
    spec = get_verifier("math")
    options = [spec.parse_options(s["options"]) for s in samples]
    for s, o in zip(samples[:100], options[:100], strict=True):  # warm sympy's caches and imports
        spec.verify(s["response"], s["reference"], o)
    start = time.perf_counter()
    verdicts = [
        spec.verify(s["response"], s["reference"], o).verdict for s, o in zip(samples, options, strict=True)
    ]
    return len(samples) / (time.perf_counter() - start), verdicts


def bench_math_pool(samples: list[dict], workers: int) -> tuple[float, list[str]]:
    with Scorer(ScorerConfig(verifiers={"math": {}}, python_workers=workers)) as scorer:
        scorer.score(samples[:100] * workers)  # warm every worker
        start = time.perf_counter()
        results = scorer.score(samples)
        elapsed = time.perf_counter() - start
    return len(samples) / elapsed, [r.verdict for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code-execs", type=int, default=600, help="test executions per code path")
    parser.add_argument("--math-repeat", type=int, default=4, help="passes over the math corpus")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="pool size (default: cores)")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, workers: {args.workers}, load average before: {load:.2f}")
    work = code_workload(args.code_execs)
    pool_rate, pool_n = bench_code_pool(work, args.workers, low_priority=False)
    # fewer runs: on a busy machine low-priority runs crawl, and a rate needs no more
    low_rate, low_n = bench_code_pool(work[: max(60, len(work) // 10)], args.workers, low_priority=True)
    naive_rate, naive_n = bench_code_naive(work, args.workers)
    samples = math_samples(args.math_repeat)
    seq_rate, seq_verdicts = bench_math_sequential(samples)
    mpool_rate, mpool_verdicts = bench_math_pool(samples, args.workers)
    assert seq_verdicts == mpool_verdicts, "the pool must give the sequential verdicts"

    print()
    print(f"{'code: test executions/s':<44}{'rate':>10}{'n':>8}")
    print(f"{'  sandboxed warm pool (bwrap + rlimits)':<44}{pool_rate:>10.1f}{pool_n:>8}")
    print(f"{'  naive: one plain python subprocess/test':<44}{naive_rate:>10.1f}{naive_n:>8}")
    print(f"{'  ratio pool / naive':<44}{pool_rate / naive_rate:>10.2f}x")
    print(f"{'  pool at low priority (the service default)':<44}{low_rate:>10.1f}{low_n:>8}")
    print(f"{'math: checks/s':<44}{'rate':>10}{'n':>8}")
    print(f"{'  process pool (math-verify workers)':<44}{mpool_rate:>10.1f}{len(samples):>8}")
    print(f"{'  sequential, in one process':<44}{seq_rate:>10.1f}{len(samples):>8}")
    print(f"{'  ratio pool / sequential':<44}{mpool_rate / seq_rate:>10.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
