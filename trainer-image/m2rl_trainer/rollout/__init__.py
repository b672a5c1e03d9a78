"""Rollout: generating grouped completions with log-probabilities (vLLM servers or in-process)."""
