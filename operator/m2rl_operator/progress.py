"""Training progress from the trainer's Prometheus endpoint (rank 0, port 9400).

The operator scrapes the gauges named below (m2rl_trainer.train.metrics defines them; the operator
does not import the trainer package, so they are repeated here, once, and a unit test reads a real
MetricsSink through parse_progress) through the trainer's headless Service: no exec into pods, no
API write permission for the trainer, and the same numbers Prometheus sees. The handler does it on
every status refresh (every status_interval_s, 30 s).
"""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from m2rl_operator.status import Progress

STEP = "m2rl_train_step"
CHECKPOINT_STEP = "m2rl_train_checkpoint_step"
DOMAIN_REWARD = "m2rl_train_domain_reward"
DOMAIN_ACCURACY = "m2rl_train_domain_accuracy_ratio"
DOMAIN_METRICS = {DOMAIN_REWARD: "reward", DOMAIN_ACCURACY: "accuracy"}  # -> status.domains keys


def parse_progress(text: str, run: str) -> Progress | None:
    """Step and per-domain reward/accuracy of `run` from Prometheus text; None before the first step."""
    step: int | None = None
    checkpoint: int | None = None
    domains: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("run") != run:
                continue
            if sample.name == STEP:
                step = int(sample.value)
            elif sample.name == CHECKPOINT_STEP:
                checkpoint = int(sample.value)
            elif sample.name in DOMAIN_METRICS and "domain" in sample.labels:
                domains.setdefault(sample.labels["domain"], {})[DOMAIN_METRICS[sample.name]] = float(
                    sample.value
                )
    return None if step is None else Progress(step=step, domains=domains, checkpoint_step=checkpoint)


async def scrape(url: str, run: str, timeout_s: float) -> Progress | None:
    """Scrape `url`; None when the trainer is not reachable yet (starting, or between restarts)."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                return None
            return parse_progress(await response.text(), run)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
