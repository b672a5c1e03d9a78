"""Training metrics: one JSON line per step (rank 0) and a Prometheus endpoint.

Names on the endpoint: `m2rl_train_<metric>` gauges, per-domain ones with a `domain` label, plus
`m2rl_train_step` and `m2rl_train_checkpoint_step`. The JSONL file is the durable record; the
endpoint is what Prometheus scrapes and what the operator reads to show progress in `kubectl get
rlvrrun`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import prometheus_client

_SAFE = re.compile(r"[^a-zA-Z0-9_]")


class MetricsSink:
    """Writes step records to JSONL and mirrors numbers to Prometheus gauges."""

    def __init__(self, jsonl_path: Path, prometheus_port: int | None, run_name: str) -> None:
        self.jsonl_path = jsonl_path
        jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self.registry = prometheus_client.CollectorRegistry()
        self.run_name = run_name
        self._gauges: dict[str, prometheus_client.Gauge] = {}
        self._server: Any = None
        if prometheus_port is not None:
            self._server, _ = prometheus_client.start_http_server(
                prometheus_port, addr="0.0.0.0", registry=self.registry
            )

    def _gauge(self, name: str, labels: tuple[str, ...]) -> prometheus_client.Gauge:
        if name not in self._gauges:
            self._gauges[name] = prometheus_client.Gauge(
                f"m2rl_train_{name}", f"GRPO training metric {name}", ("run", *labels), registry=self.registry
            )
        return self._gauges[name]

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` (flat numbers, plus `per_domain: {domain: {metric: value}}`)."""
        with open(self.jsonl_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                self._gauge(_SAFE.sub("_", key), ()).labels(self.run_name).set(value)
        for domain, values in record.get("per_domain", {}).items():
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._gauge("domain_" + _SAFE.sub("_", key), ("domain",)).labels(
                        self.run_name, domain
                    ).set(value)

    def checkpoint_written(self, step: int) -> None:
        """`m2rl_train_checkpoint_step`: the newest complete checkpoint (the operator's latestCheckpoint)."""
        self._gauge("checkpoint_step", ()).labels(self.run_name).set(step)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
