"""The vLLM server command line and environment (pure functions)."""

from pathlib import Path

from m2rl_trainer.rollout.vllm_server import VLLMServerConfig, vllm_server_command, vllm_server_env


def test_command_runs_the_module_not_the_console_script() -> None:
    config = VLLMServerConfig(model=Path("/m"), served_model_name="tiny", extra_args=("--max-num-seqs", "8"))
    assert vllm_server_command(config, 8123, python="py") == [
        "py", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/m", "--dtype", "float32", "--max-model-len", "256",
        "--host", "127.0.0.1", "--port", "8123", "--seed", "0",
        "--served-model-name", "tiny", "--enforce-eager", "--no-enable-chunked-prefill",
        "--max-num-seqs", "8",
    ]  # fmt: skip
    gpu = VLLMServerConfig(model=Path("/m"), enforce_eager=False, chunked_prefill=True)
    assert vllm_server_command(gpu, 1, python="py")[-1:] == ["--enable-chunked-prefill"]


def test_env_enables_reload_weights_rpc_and_bounds_the_kv_cache() -> None:
    env = vllm_server_env(VLLMServerConfig(model=Path("/m"), kv_cache_space_gib=2), base={"A": "1"})
    assert env == {
        "A": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_LOGGING_LEVEL": "INFO",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_SERVER_DEV_MODE": "1",
    }
    assert "VLLM_SERVER_DEV_MODE" not in vllm_server_env(
        VLLMServerConfig(model=Path("/m"), dev_mode=False), base={}
    )
