"""A real Prometheus server (Debian's package, unpacked by scripts/setup.sh) for tests."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from m2rl_trainer.utils.processes import (
    free_port,
    start_logged_process,
    stop_process_group,
    tail,
    wait_http_ok,
)
from tests.support.paths import tool


class PrometheusServer:
    """Prometheus scraping `targets` ("host:port") every `interval_s`; query with `query()`."""

    def __init__(self, workdir: Path, targets: list[str], interval_s: float = 1.0) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {
                        "scrape_interval": f"{round(interval_s * 1000)}ms",
                        "evaluation_interval": "1s",
                    },
                    "scrape_configs": [{"job_name": "test", "static_configs": [{"targets": targets}]}],
                }
            )
        )
        self.process = start_logged_process(
            [
                str(tool("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.log_path,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> PrometheusServer:
        wait_http_ok(f"{self.url}/-/ready", self.process, self.log_path, timeout_s, "Prometheus")
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; returns the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Query until the result is non-empty (a scrape has happened)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(
            f"Prometheus returned nothing for {promql!r} in {timeout_s} s:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> PrometheusServer:
        return self.wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
