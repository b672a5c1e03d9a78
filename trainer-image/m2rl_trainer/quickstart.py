"""The quickstart: the smallest real end-to-end path on one CPU machine.

Today it builds the tiny model, starts a real vLLM OpenAI server on it, samples a GRPO-style group
(n completions per prompt, with log-probabilities) and prints what came back. As the local runner
grows, this becomes `m2rl run -f examples/quickstart/` (train, merge, evaluate on CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model, parameter_count
from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig


def _log(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def _complete(server: VLLMServer, prompt: str, n: int, max_tokens: int) -> list[dict[str, object]]:
    body = json.dumps(
        {
            "model": server.model_name,
            "prompt": prompt,
            "n": n,
            "max_tokens": max_tokens,
            "logprobs": 0,
            "temperature": 1.0,
            "seed": 0,
        }
    ).encode()
    request = urllib.request.Request(
        f"{server.url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return list(json.load(response)["choices"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__)
    parser.add_argument(
        "--workdir", type=Path, default=Path("runs/quickstart"), help="where the model and logs go"
    )
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt (GRPO's group)")
    args = parser.parse_args(argv)

    model_dir = args.workdir / "model"
    if model_dir.exists():
        _log(f"tiny model: reusing {model_dir}")
    else:
        _log("tiny model: building a Qwen2-style model and BPE tokenizer from seed 0")
        build_tiny_model(model_dir, TinyModelSpec(seed=0))
    _log(f"tiny model: {parameter_count(model_dir):,} parameters in {model_dir}")

    _log("vLLM: starting an OpenAI-compatible server on CPU (about a minute on 2 cores)")
    server = VLLMServer(
        VLLMServerConfig(model=model_dir, served_model_name="tiny"), args.workdir / "vllm.log"
    )
    try:
        server.wait_ready()
        _log(f"vLLM: ready at {server.url} after {server.startup_seconds:.0f} s (log: {server.log_path})")
        prompts = ["Q: 3+4= A:", "Q: 21+12= A:", "Q: 50+49= A:"]
        start = time.monotonic()
        tokens = 0
        for prompt in prompts:
            for choice in _complete(server, prompt, args.group_size, max_tokens=12):
                logprobs = choice["logprobs"]["token_logprobs"]  # type: ignore[index]
                tokens += len(logprobs)
                mean_lp = sum(logprobs) / max(len(logprobs), 1)
                _log(f"  {prompt!r} -> {choice['text']!r:<40} mean logprob {mean_lp:6.2f}")
        elapsed = time.monotonic() - start
        _log(
            f"sampled {len(prompts)} prompts x {args.group_size} completions = {tokens} tokens "
            f"in {elapsed:.1f} s ({tokens / elapsed:.0f} tokens/s); the untrained model answers at random"
        )
    finally:
        server.stop()
        _log("vLLM: stopped")
    _log("done: built a model, served it with vLLM and sampled GRPO groups with log-probabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
