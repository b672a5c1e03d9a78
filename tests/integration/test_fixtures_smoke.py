"""Smoke tests of the real components the test suite starts (issue: foundation)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx
import prometheus_client
import pytest
from kubernetes_asyncio import client

from m2rl_trainer.rollout.vllm_server import VLLMServer
from m2rl_trainer.utils.processes import free_port
from tests.support.kopf_kmock import (
    CORE_RESOURCES,
    M2RL_RESOURCES,
    declare_resources,
    eventually,
    running_operator,
)
from tests.support.prometheus import PrometheusServer


def test_vllm_completions_with_n_and_logprobs(vllm_server: VLLMServer) -> None:
    response = httpx.post(
        f"{vllm_server.url}/v1/completions",
        json={
            "model": vllm_server.model_name,
            "prompt": "Q: 12+34= A:",
            "n": 4,
            "max_tokens": 8,
            "logprobs": 1,
            "temperature": 1.0,
            "seed": 7,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert len(choices) == 4
    for choice in choices:
        token_logprobs = choice["logprobs"]["token_logprobs"]
        assert 1 <= len(token_logprobs) <= 8
        # Real log-probabilities of sampled tokens: finite and negative (probability < 1).
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in token_logprobs)
    # An untrained model sampled at temperature 1 does not give four identical completions.
    assert len({c["text"] for c in choices}) > 1


def test_vllm_serves_the_tiny_model_by_name(vllm_server: VLLMServer) -> None:
    models = httpx.get(f"{vllm_server.url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models] == ["tiny"]
    assert models[0]["max_model_len"] == 256


def test_prometheus_scrapes_a_target_the_test_exposes(
    prometheus_server: Callable[[list[str]], PrometheusServer],
) -> None:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("m2rl_smoke_total", "smoke-test counter", registry=registry)
    counter.inc(42)
    port = free_port()
    http_server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = prometheus_server([f"127.0.0.1:{port}"])
        result = prometheus.wait_for("m2rl_smoke_total")
        assert float(result[0]["value"][1]) == 42.0
        up = prometheus.wait_for('up{job="test"}')
        assert float(up[0]["value"][1]) == 1.0
    finally:
        http_server.shutdown()
        thread.join(timeout=5)


async def test_kopf_operator_against_kmock_creates_owned_child(kmock) -> None:
    declare_resources(kmock, CORE_RESOURCES | M2RL_RESOURCES)
    async with running_operator(kmock, ["tests.support.operators.smoke_operator"]) as operator:
        run = {
            "apiVersion": "m2rl.io/v1alpha1",
            "kind": "RLVRRun",
            "metadata": {"name": "demo", "namespace": "default", "uid": "uid-demo"},
            "spec": {"algorithm": {"steps": 7}},
        }
        async with client.ApiClient(client.Configuration(host=operator.memo.kube_server)) as api:
            await client.CustomObjectsApi(api).create_namespaced_custom_object(
                "m2rl.io", "v1alpha1", "default", "rlvrruns", run
            )
        config_map = await eventually(lambda: kmock.objects["v1/configmaps", "default", "demo-config"])
        assert config_map["data"] == {"steps": "7"}
        owner = config_map["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("RLVRRun", "demo", True)
        # kopf stores the handler's return value in the parent's status.
        status = await eventually(
            lambda: (
                kmock.objects["m2rl.io/v1alpha1/rlvrruns", "default", "demo"]
                .get("status", {})
                .get("create_config")
            )
        )
        assert status == {"configMap": "demo-config"}


def test_tiny_model_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model, parameter_count

    corpus = ["Q: 1+2= A: \\boxed{3}", "the answer is a number"] * 50
    a = build_tiny_model(tmp_path / "a", TinyModelSpec(seed=1), corpus)
    b = build_tiny_model(tmp_path / "b", TinyModelSpec(seed=1), corpus)
    c = build_tiny_model(tmp_path / "c", TinyModelSpec(seed=2), corpus)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (
        c / "tokenizer.json"
    ).read_bytes()  # tokenizer: corpus only
    assert 100_000 < parameter_count(a) < 1_000_000
    with pytest.raises(FileExistsError, match="already exists"):
        build_tiny_model(a, TinyModelSpec(seed=1), corpus)
