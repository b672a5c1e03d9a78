"""Prometheus metrics of the verifiers (one registry per scorer/service, so tests can run several).

Names follow Prometheus' conventions (counters end in `_total`, written out here as exposed, so a
dashboard's or alert's name is found by searching for it). The closed vocabularies (verifier types
x verdicts) start at zero rather than missing, so an error or timeout ratio reads 0 on a healthy
service instead of "no data" (prometheus.io/docs/practices/instrumentation, "avoid missing metrics").
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from m2rl_trainer.rewards.types import VERDICTS, Result

# Seconds: from a 1 ms multiple-choice check to a batch of code runs near their limits.
REJECT_REASONS = ("saturated", "too_large", "invalid")  # 429, 413, 400
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, verifiers: Iterable[str] = ()) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "m2rl_verifier_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "m2rl_verifier_request_duration_seconds",
            "HTTP request latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "m2rl_verifier_inflight_requests", "Score requests being processed.", registry=r
        )
        self.samples = Counter(
            "m2rl_verifier_samples_total",
            "Scored samples by verifier type and verdict.",
            ["verifier", "verdict"],
            registry=r,
        )
        self.sample_seconds = Histogram(
            "m2rl_verifier_sample_duration_seconds",
            "Time to check one sample.",
            ["verifier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.timeouts = Counter(
            "m2rl_verifier_timeouts_total",
            "Samples whose check or program ran past its limit.",
            ["verifier"],
            registry=r,
        )
        self.sandbox_kills = Counter(
            "m2rl_verifier_sandbox_kills_total",
            "Processes or sandboxes killed: timeout, output_limit (runs), leftover_processes "
            "(background processes outliving a run), worker_timeout / worker_crashed (whole workers).",
            ["verifier", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "m2rl_verifier_rejected_requests_total",
            "Requests refused: saturated (429), too_large (413), invalid (400).",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for verifier in verifiers:
            for verdict in VERDICTS:
                self.samples.labels(verifier, verdict)
            self.timeouts.labels(verifier)

        self.rewarded_checked = Counter(
            "m2rl_verifier_rewarded_checked",
            "Rewarded samples whose program was checked for reward-hacking signs (code).",
            ["verifier"],
            registry=r,
        )
        self.rewarded_hygiene_flags = Counter(
            "m2rl_verifier_rewarded_hygiene_flags",
            "Rewarded samples showing a reward-hacking sign (rewards/hygiene.py): early_exit, eq_override, "
            "builtins_touched, stderr_only.",
            ["verifier", "flag"],
            registry=r,
        )

    def observe(self, result: Result) -> None:
        self.samples.labels(result.verifier, result.verdict).inc()
        self.sample_seconds.labels(result.verifier).observe(result.time_s)
        if result.verdict == "timeout":
            self.timeouts.labels(result.verifier).inc()
        if result.verifier == "code":
            for test in result.details.get("tests", []):
                if test.get("status") in ("timeout", "output_limit"):
                    self.sandbox_kills.labels("code", test["status"]).inc()
                if test.get("killed_processes"):
                    self.sandbox_kills.labels("code", "leftover_processes").inc(test["killed_processes"])
        flags = result.details.get("hygiene")
        if result.reward > 0 and isinstance(flags, dict):
            self.rewarded_checked.labels(result.verifier).inc()
            for flag, shown in flags.items():
                if shown:
                    self.rewarded_hygiene_flags.labels(result.verifier, flag).inc()

    def worker_killed(self, pool: str, reason: str) -> None:
        verifier = "code" if pool == "sandbox" else "math_ifeval"
        self.sandbox_kills.labels(verifier, f"worker_{reason}").inc()
