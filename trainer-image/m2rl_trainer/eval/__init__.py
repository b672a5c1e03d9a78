"""Benchmark evaluation: one model of an EvalSuite on every benchmark (`m2rl-eval`).

config   eval.yaml (rendered by the operator) -> typed, validated dataclasses
metrics  avg@N, pass@N (unbiased), maj@N from per-sample rewards; pure functions
runner   datasets -> rollout engine (vLLM or HF generate) -> training verifiers -> metrics, outputs
table    several models' results as a Markdown table
cli      `m2rl-eval` and `m2rl-eval table`
"""
