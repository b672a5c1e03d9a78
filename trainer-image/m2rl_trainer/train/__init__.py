"""The GRPO training program: DeepSpeed engine, loop, weight sync, checkpoints and metrics."""
