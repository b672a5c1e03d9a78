"""Training metrics: one JSON line per step (rank 0) and a Prometheus endpoint.

The JSONL file is the durable record and keeps the loop's short keys (`time_update_s`, ...). The
endpoint is what Prometheus scrapes and what the operator reads to show progress in `kubectl get
rlvrrun`; its names follow Prometheus' conventions (prometheus.io/docs/practices/naming, checked
by `promtool check metrics` in the tests): base units as suffixes (`_seconds`, `_tokens`, `_ratio`
for fractions in [0, 1]), counters end in `_total`, and what is a rate (tokens per second, time
per step) is a counter for `rate()` to divide, not a gauge that a 30 s scrape samples. Every
series has a `run` label; per-domain ones also `domain`. The tables below map each JSONL key to
its Prometheus name; a key not in them (a metric added later) becomes a gauge
`m2rl_train_<key>`, with `_s` and `_fraction` spelled `_seconds` and `_ratio`, and a `time_<x>_s`
key becomes phase `<x>` of `m2rl_train_phase_seconds_total`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client

_SAFE = re.compile(r"[^a-zA-Z0-9_]")

# The four names the operator scrapes (m2rl_operator.progress repeats them, as the operator does not
# import this package; tests/unit/operator/test_status_and_progress.py keeps the two in step).
STEP = "m2rl_train_step"
CHECKPOINT_STEP = "m2rl_train_checkpoint_step"
DOMAIN_REWARD = "m2rl_train_domain_reward"
DOMAIN_ACCURACY = "m2rl_train_domain_accuracy_ratio"

STEPS_TOTAL = "m2rl_train_steps_total"
LAST_STEP_TIMESTAMP = "m2rl_train_last_step_timestamp_seconds"
PHASE_SECONDS = "m2rl_train_phase_seconds_total"

# JSONL key -> (gauge name, help, extra labels): the value of the latest step.
GAUGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "step": (STEP, "Global step last completed (resumes continue it).", {}),
    "reward": ("m2rl_train_reward", "Mean reward of the step's completions (shaping included).", {}),
    "accuracy": ("m2rl_train_accuracy_ratio", "Fraction of the step's completions judged correct.", {}),
    "response_length": ("m2rl_train_response_length_tokens", "Mean completion length of the step.", {}),
    "loss": ("m2rl_train_loss", "Policy loss of the step (mean over update epochs).", {}),
    "approx_kl": ("m2rl_train_approx_kl", "Mean log(pi_old / pi_theta) over response tokens.", {}),
    "kl_ref": ("m2rl_train_kl_ref", "KL estimate to the reference model (algorithm.kl_estimator).", {}),
    "entropy": ("m2rl_train_entropy", "Mean token entropy of the policy, in nats.", {}),
    "ratio_mean": ("m2rl_train_mean_importance_ratio", "Mean pi_theta / pi_old over tokens.", {}),
    "ratio_max": ("m2rl_train_max_importance_ratio", "Largest pi_theta / pi_old of the step.", {}),
    # Low and high clipping are disjoint (negative vs positive advantages): their sum is the total.
    "clip_fraction_low": (
        "m2rl_train_clipped_tokens_ratio",
        "Fraction of response tokens clipped, by bound.",
        {"bound": "low"},
    ),
    "clip_fraction_high": (
        "m2rl_train_clipped_tokens_ratio",
        "Fraction of response tokens clipped, by bound.",
        {"bound": "high"},
    ),
    "grad_norm": ("m2rl_train_grad_norm", "Global gradient norm of the step.", {}),
    "lm_head_grad_norm": ("m2rl_train_lm_head_grad_norm", "Gradient norm of the LM head.", {}),
    "learning_rate": ("m2rl_train_learning_rate", "Learning rate of the step.", {}),
    "zero_variance_fraction": (
        "m2rl_train_zero_variance_groups_ratio",
        "Fraction of groups whose completions all got the same verdict (no learning signal).",
        {},
    ),
    # Dynamic sampling: every generated group vs the ones trained on.
    "dropped_group_ratio": (
        "m2rl_train_dropped_groups_ratio",
        "Fraction of generated groups not trained on (zero variance, or left over once the step was full).",
        {},
    ),
    "truncated_ratio": (
        "m2rl_train_truncated_completions_ratio",
        "Fraction of generated completions cut at max_response_tokens (finish reason length).",
        {},
    ),
    "kept_reward": ("m2rl_train_kept_reward", "Mean reward of the completions trained on.", {}),
    "kept_accuracy": (
        "m2rl_train_kept_accuracy_ratio",
        "Fraction of the completions trained on judged correct (dynamic sampling pulls it toward 0.5).",
        {},
    ),
    "dual_clip_ratio": (
        "m2rl_train_dual_clipped_tokens_ratio",
        "Fraction of response tokens whose loss the dual clip (clip_ratio_c) bounded.",
        {},
    ),
    # Rollout/trainer mismatch (recompute_old_logprobs).
    "rollout_trainer_kl": (
        "m2rl_train_rollout_trainer_kl",
        "Mean log pi_rollout - log pi_trainer over response tokens (k1 estimate of KL(rollout || trainer)).",
        {},
    ),
    "rollout_trainer_k3_kl": (
        "m2rl_train_rollout_trainer_k3_kl",
        "k3 estimate of KL(rollout || trainer) over response tokens.",
        {},
    ),
    "importance_ratio_max": (
        "m2rl_train_max_rollout_correction_ratio",
        "Largest pi_old_trainer / pi_rollout of the step.",
        {},
    ),
    "importance_weight_mean": (
        "m2rl_train_mean_rollout_correction_weight",
        "Mean rollout-correction weight (tis/mis) over response tokens.",
        {},
    ),
    "importance_weight_clip_ratio": (
        "m2rl_train_rollout_correction_clipped_tokens_ratio",
        "Fraction of response tokens whose correction weight was truncated (tis) or masked (mis).",
        {},
    ),
}
DOMAIN_GAUGES: dict[str, tuple[str, str]] = {
    "reward": (DOMAIN_REWARD, "Mean reward of the step's completions in a domain."),
    "kept_accuracy": (
        "m2rl_train_domain_kept_accuracy_ratio",
        "Fraction of the completions trained on in a domain judged correct.",
    ),
    "truncated_ratio": (
        "m2rl_train_domain_truncated_completions_ratio",
        "Fraction of a domain's generated completions cut at max_response_tokens.",
    ),
    "zero_variance_ratio": (
        "m2rl_train_domain_zero_variance_groups_ratio",
        "Fraction of a domain's generated groups whose completions all got the same verdict.",
    ),
    "dropped_group_ratio": (
        "m2rl_train_domain_dropped_groups_ratio",
        "Fraction of a domain's generated groups not trained on.",
    ),
    "clip_ratio": (
        "m2rl_train_domain_clipped_tokens_ratio",
        "Fraction of a domain's response tokens whose clipped term was active.",
    ),
    "accuracy": (DOMAIN_ACCURACY, "Fraction of the step's completions in a domain judged correct."),
    "response_length": (
        "m2rl_train_domain_response_length_tokens",
        "Mean completion length in a domain, in tokens (an agent episode: the model's tokens only).",
    ),
    # Agent domains (m2rl_trainer.agent.rollout.episode_figures), per episode.
    "turns": ("m2rl_train_domain_agent_turns", "Mean model turns per agent episode."),
    "tool_calls": ("m2rl_train_domain_agent_tool_calls", "Mean well-formed tool calls per agent episode."),
    "malformed_call_ratio": (
        "m2rl_train_domain_agent_malformed_calls_ratio",
        "Fraction of an agent domain's tool calls that were malformed (the model read an error instead).",
    ),
    "tool_result_length": (
        "m2rl_train_domain_agent_tool_result_length_tokens",
        "Mean tool-result tokens per agent episode (context, never trained on).",
    ),
}
# JSONL key -> (counter name, help, extra labels): the step's value is added.
COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "time_step_s": ("m2rl_train_step_seconds_total", "Wall-clock time spent in steps.", {}),
    "completions": ("m2rl_train_completions_total", "Completions trained on (after dynamic sampling).", {}),
    "generated_completions": (
        "m2rl_train_generated_completions_total",
        "Completions generated and scored, every refill round included.",
        {},
    ),
    "updates_applied": ("m2rl_train_optimizer_updates_total", "Optimizer updates taken.", {}),
    "response_tokens": ("m2rl_train_response_tokens_total", "Response tokens in policy updates.", {}),
    "refill_rounds": ("m2rl_train_refill_rounds_total", "Dynamic-sampling refill rounds.", {}),
}
# JSONL key -> (counter name, help): the record carries the run's running total, mirrored as is.
RUNNING_TOTALS: dict[str, tuple[str, str]] = {
    "skipped_steps": ("m2rl_train_skipped_steps_total", "Steps whose update was skipped (non-finite loss)."),
    "nonfinite_steps": (
        "m2rl_train_nonfinite_steps_total",
        "Steps with a non-finite loss, whole or partial (faults.max_skipped_steps bounds them).",
    ),
}
# Not exported: a rate (rate() of the counters gives it) and a sum of two exported series.
NOT_EXPORTED = frozenset({"tokens_per_s", "clip_fraction"})
_PHASE_HELP = "Time spent in each phase of the steps (generation, reward, update, sync, ...)."

Spec = tuple[type[prometheus_client.Gauge] | type[prometheus_client.Counter], str, str, dict[str, str]]
_STEPS: Spec = (prometheus_client.Counter, STEPS_TOTAL, "Steps completed by this process.", {})
_LAST_STEP: Spec = (prometheus_client.Gauge, LAST_STEP_TIMESTAMP, "Unix time the latest step completed.", {})
_CHECKPOINT: Spec = (prometheus_client.Gauge, CHECKPOINT_STEP, "Step of the newest complete checkpoint.", {})


def prometheus_spec(key: str, domain: bool = False) -> Spec | None:
    """(type, name, help, extra labels) of JSONL key `key` on the endpoint; None if not exported."""
    gauge, counter = prometheus_client.Gauge, prometheus_client.Counter
    key = _SAFE.sub("_", key)
    if domain:
        name, doc = DOMAIN_GAUGES.get(key, (f"m2rl_train_domain_{_units(key)}", f"Per-domain {key}."))
        return gauge, name, doc, {}
    if key in NOT_EXPORTED:
        return None
    if key in GAUGES:
        return gauge, *GAUGES[key]
    if key in COUNTERS:
        return counter, *COUNTERS[key]
    if key in RUNNING_TOTALS:
        return counter, *RUNNING_TOTALS[key], {}
    if key.startswith("time_") and key.endswith("_s"):
        return counter, PHASE_SECONDS, _PHASE_HELP, {"phase": key[len("time_") : -len("_s")]}
    return gauge, f"m2rl_train_{_units(key)}", f"GRPO training metric {key}.", {}


def _units(key: str) -> str:
    for short, unit in (("_s", "_seconds"), ("_fraction", "_ratio")):
        if key.endswith(short):
            return key[: -len(short)] + unit
    return key


class _SnapshotRegistry(prometheus_client.CollectorRegistry):
    """A registry whose scrape never sees half a step: `collect` and `MetricsSink.log` hold the
    same lock, so every scrape shows all the numbers of one record (a scrape between the step
    gauge and the per-domain gauges of the last step would otherwise be the run's final view)."""

    def __init__(self) -> None:
        super().__init__()
        self.update_lock = threading.Lock()
        self.collected = threading.Event()  # set by a collect that saw every update so far

    def collect(self) -> Iterator[Any]:
        with self.update_lock:
            metrics = list(super().collect())
            self.collected.set()
        yield from metrics


class MetricsSink:
    """Writes step records to JSONL and mirrors numbers to Prometheus gauges and counters."""

    def __init__(
        self,
        jsonl_path: Path,
        prometheus_port: int | None,
        run_name: str,
        final_scrape_timeout_s: float = 0.0,
    ) -> None:
        self.jsonl_path = jsonl_path
        self.final_scrape_timeout_s = final_scrape_timeout_s
        jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self.registry = _SnapshotRegistry()
        self.run_name = run_name
        self._metrics: dict[str, Any] = {}
        self._running: dict[str, float] = {}  # running totals already counted, by JSONL key
        self._server: Any = None
        if prometheus_port is not None:
            self._server, _ = prometheus_client.start_http_server(
                prometheus_port, addr="0.0.0.0", registry=self.registry
            )

    def _child(self, spec: Spec) -> Any:
        kind, name, doc, labels = spec
        if name not in self._metrics:
            self._metrics[name] = kind(name, doc, ("run", *labels), registry=self.registry)
        return self._metrics[name].labels(self.run_name, *labels.values())

    def _export(self, key: str, value: float, domain: str | None = None) -> None:
        spec = prometheus_spec(key, domain=domain is not None)
        if spec is None:
            return
        if domain is not None:
            kind, name, doc, _ = spec
            spec = (kind, name, doc, {"domain": domain})
        child = self._child(spec)
        if spec[0] is prometheus_client.Gauge:
            child.set(value)
        elif key in RUNNING_TOTALS:
            # The run's total, restored on resume: count what this process has not counted yet.
            child.inc(max(value - self._running.get(key, 0.0), 0.0))
            self._running[key] = max(value, self._running.get(key, 0.0))
        else:
            child.inc(max(value, 0.0))  # counters never go down

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` (flat numbers, plus `per_domain: {domain: {metric: value}}`)."""
        with open(self.jsonl_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        with self.registry.update_lock:
            for key, value in record.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._export(key, float(value))
            for domain, values in record.get("per_domain", {}).items():
                for key, value in values.items():
                    if isinstance(value, int | float) and math.isfinite(value):
                        self._export(key, float(value), domain=domain)
            self._child(_STEPS).inc()
            self._child(_LAST_STEP).set(time.time())  # the chart's M2RLStepStalled alert
            self.registry.collected.clear()

    def checkpoint_written(self, step: int) -> None:
        """`m2rl_train_checkpoint_step`: the newest complete checkpoint (the operator's latestCheckpoint)."""
        with self.registry.update_lock:
            self._child(_CHECKPOINT).set(step)
            self.registry.collected.clear()

    def close(self) -> bool:
        """Stop the endpoint, once it has been scraped after the last record when
        `final_scrape_timeout_s` > 0 (a run's last step would otherwise end with its process, between
        two scrapes). Returns whether that last scrape came (True without an endpoint)."""
        if self._server is None:
            return True
        scraped = self.registry.collected.wait(self.final_scrape_timeout_s)
        self._server.shutdown()
        return scraped


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
