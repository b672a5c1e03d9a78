"""Model helpers: the tiny model factory used by tests, the quickstart and benchmarks."""

from m2rl_trainer.models.tiny import SMALL, TinyModelSpec, build_tiny_model

__all__ = ["SMALL", "TinyModelSpec", "build_tiny_model"]
