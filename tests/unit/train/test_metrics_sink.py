"""The trainer's Prometheus names and types: what each JSONL key becomes on the endpoint."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest

from m2rl_trainer.train import metrics
from m2rl_trainer.train.metrics import MetricsSink, prometheus_spec

RECORD = {
    "step": 5,
    "reward": 0.5,
    "accuracy": 0.25,
    "response_length": 7.5,
    "completions": 16.0,
    "response_tokens": 120.0,
    "refill_rounds": 1.0,
    "skipped_steps": 0,
    "time_step_s": 2.0,
    "time_generation_s": 1.25,
    "time_reward_s": 0.5,
    "time_update_s": 0.25,
    "tokens_per_s": 96.0,
    "clip_fraction": 0.3,
    "clip_fraction_low": 0.1,
    "clip_fraction_high": 0.2,
    "zero_variance_fraction": 0.5,
    "per_domain": {"math": {"reward": 0.75, "accuracy": 0.5, "response_length": 6.0}},
}


def _value(sink: MetricsSink, name: str, **labels: str) -> float | None:
    return sink.registry.get_sample_value(name, {"run": "r", **labels})


def test_gauges_counters_and_units(tmp_path: Path) -> None:
    sink = MetricsSink(tmp_path / "m.jsonl", None, "r")
    sink.log(RECORD)
    sink.log({**RECORD, "step": 6, "time_generation_s": 0.75})
    # The latest step's values.
    assert _value(sink, "m2rl_train_step") == 6
    assert _value(sink, "m2rl_train_accuracy_ratio") == 0.25
    assert _value(sink, "m2rl_train_response_length_tokens") == 7.5
    assert _value(sink, "m2rl_train_domain_accuracy_ratio", domain="math") == 0.5
    assert _value(sink, "m2rl_train_domain_response_length_tokens", domain="math") == 6.0
    assert _value(sink, "m2rl_train_clipped_tokens_ratio", bound="low") == 0.1
    assert _value(sink, "m2rl_train_clipped_tokens_ratio", bound="high") == 0.2
    assert _value(sink, "m2rl_train_zero_variance_groups_ratio") == 0.5
    # Sums over steps, for rate().
    assert _value(sink, "m2rl_train_steps_total") == 2
    assert _value(sink, "m2rl_train_phase_seconds_total", phase="generation") == 2.0
    assert _value(sink, "m2rl_train_phase_seconds_total", phase="update") == 0.5
    assert _value(sink, "m2rl_train_step_seconds_total") == 4.0
    assert _value(sink, "m2rl_train_completions_total") == 32
    assert _value(sink, "m2rl_train_response_tokens_total") == 240
    assert _value(sink, "m2rl_train_refill_rounds_total") == 2
    assert _value(sink, "m2rl_train_last_step_timestamp_seconds") > 1.7e9
    # Rates and the union of the two clip bounds are left to PromQL; no abbreviated units remain.
    text = prometheus_client.generate_latest(sink.registry).decode()
    for gone in ("tokens_per_s", "clip_fraction", "time_step_s", "_fraction", "_per_s"):
        assert gone not in text, gone


def test_dynamic_sampling_correction_and_fault_figures(tmp_path: Path) -> None:
    sink = MetricsSink(tmp_path / "m.jsonl", None, "r")
    step = {**RECORD, "generated_completions": 24.0, "updates_applied": 4, "nonfinite_steps": 1,
            "dropped_group_ratio": 0.25, "kept_accuracy": 0.5, "importance_ratio_max": 3.5,
            "importance_weight_clip_ratio": 0.125, "rollout_trainer_kl": 0.01, "dual_clip_ratio": 0.0,
            "per_domain": {"math": {"clip_ratio": 0.2, "zero_variance_ratio": 0.5}}}  # fmt: skip
    sink.log(step)
    sink.log({**step, "nonfinite_steps": 1})
    assert _value(sink, "m2rl_train_generated_completions_total") == 48
    assert _value(sink, "m2rl_train_optimizer_updates_total") == 8
    assert _value(sink, "m2rl_train_nonfinite_steps_total") == 1  # a running total, not added twice
    assert _value(sink, "m2rl_train_dropped_groups_ratio") == 0.25
    assert _value(sink, "m2rl_train_kept_accuracy_ratio") == 0.5
    assert _value(sink, "m2rl_train_max_rollout_correction_ratio") == 3.5
    assert _value(sink, "m2rl_train_rollout_correction_clipped_tokens_ratio") == 0.125
    assert _value(sink, "m2rl_train_domain_clipped_tokens_ratio", domain="math") == 0.2
    assert _value(sink, "m2rl_train_domain_zero_variance_groups_ratio", domain="math") == 0.5


def test_skipped_steps_mirror_the_runs_running_total_across_a_resume(tmp_path: Path) -> None:
    first = MetricsSink(tmp_path / "a.jsonl", None, "r")
    for skipped in (0, 1, 1, 2):
        first.log({**RECORD, "skipped_steps": skipped})
    assert _value(first, "m2rl_train_skipped_steps_total") == 2
    # A resumed process starts from the checkpoint's total (a new series: new pod), then counts on.
    resumed = MetricsSink(tmp_path / "b.jsonl", None, "r")
    resumed.log({**RECORD, "skipped_steps": 1})
    resumed.log({**RECORD, "skipped_steps": 3})
    assert _value(resumed, "m2rl_train_skipped_steps_total") == 3


@pytest.mark.parametrize(
    ("key", "name", "labels"),
    [
        ("time_reference_s", "m2rl_train_phase_seconds_total", {"phase": "reference"}),
        ("peak_memory_fraction", "m2rl_train_peak_memory_ratio", {}),
        ("wait_s", "m2rl_train_wait_seconds", {}),
        ("loss", "m2rl_train_loss", {}),
    ],
    ids=["phase", "fraction", "seconds", "known"],
)
def test_names_of_keys_added_later(key: str, name: str, labels: dict[str, str]) -> None:
    """A metric another module adds to the record gets a conventional name without a table entry."""
    spec = prometheus_spec(key)
    assert spec is not None
    _, got_name, _, got_labels = spec
    assert (got_name, got_labels) == (name, labels)


def test_every_name_is_documented() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "trainer.md").read_text()
    tables = [*metrics.GAUGES.values(), *metrics.COUNTERS.values(), *metrics.RUNNING_TOTALS.values()]
    names = {entry[0] for entry in tables} | {name for name, _ in metrics.DOMAIN_GAUGES.values()}
    names |= {
        metrics.STEPS_TOTAL,
        metrics.LAST_STEP_TIMESTAMP,
        metrics.PHASE_SECONDS,
        metrics.CHECKPOINT_STEP,
    }
    assert sorted(n for n in names if f"`{n}" not in doc) == []


def test_a_scrape_sees_all_numbers_of_one_step(tmp_path: Path) -> None:
    """A scrape during `log` must not mix two steps (the run's last scrape would then show the
    final step count beside the previous step's per-domain numbers)."""
    import threading

    sink = MetricsSink(tmp_path / "m.jsonl", None, "r")
    domains = [f"d{i}" for i in range(40)]  # many series: a long window between the first and last
    steps = 300
    done = threading.Event()

    def train() -> None:
        for step in range(1, steps + 1):
            sink.log({"step": step, "per_domain": {d: {"accuracy": step / steps} for d in domains}})
        done.set()

    writer = threading.Thread(target=train)
    writer.start()
    mixed = scrapes = 0
    while not done.is_set() or scrapes == 0:
        samples = {
            (s.name, s.labels.get("domain")): s.value for m in sink.registry.collect() for s in m.samples
        }
        if (metrics.STEP, None) not in samples:
            continue
        scrapes += 1
        step = samples[(metrics.STEP, None)]
        accuracies = {samples[(metrics.DOMAIN_ACCURACY, d)] for d in domains}
        mixed += accuracies != {step / steps}
    writer.join()
    assert scrapes > 0
    assert mixed == 0, f"{mixed} of {scrapes} scrapes mixed two steps"


def test_the_endpoint_waits_for_the_scrape_after_the_last_step(tmp_path: Path) -> None:
    """With final_scrape_timeout_s, close() returns once a scrape has seen the last record; a scrape
    before that record does not count, and without any it gives up after the timeout."""
    import threading
    import urllib.request

    from m2rl_trainer.utils.processes import free_port

    port = free_port()
    sink = MetricsSink(tmp_path / "m.jsonl", port, "r", final_scrape_timeout_s=30.0)
    url = f"http://127.0.0.1:{port}/metrics"
    sink.log({"step": 1, "per_domain": {}})
    urllib.request.urlopen(url, timeout=10).read()  # scraped step 1 ...
    sink.log({"step": 2, "per_domain": {}})  # ... but not step 2 yet
    result: list[bool] = []
    closing = threading.Thread(target=lambda: result.append(sink.close()))
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # still waiting for the scrape of step 2
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert f'{metrics.STEP}{{run="r"}} 2.0' in text
    closing.join(10)
    assert result == [True]

    lonely = MetricsSink(tmp_path / "n.jsonl", free_port(), "r", final_scrape_timeout_s=0.2)
    lonely.log({"step": 1, "per_domain": {}})
    assert lonely.close() is False  # nobody scraped: gave up after 0.2 s
