"""The trainer config: loading, defaults, and errors that name the field."""

from pathlib import Path

import pytest

from m2rl_trainer.config import ConfigError, load_config

BASE = {
    "model": "m",
    "output_dir": "o",
    "data": {"domains": [{"name": "math", "dataset": "x.jsonl", "verifier": "math"}]},
    "rollout": {"mode": "colocated"},
}


def _with(path: str, value: object) -> dict:
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    node = config
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return config


def test_defaults_follow_the_algorithm() -> None:
    config = load_config(_with("algorithm", {"name": "dapo"}))
    assert config.algorithm.resolved_aggregation() == "token-mean"
    assert load_config(_with("algorithm", {"name": "dr_grpo"})).algorithm.resolved_aggregation() == (
        "seq-mean-token-sum-norm"
    )
    assert not load_config(_with("algorithm", {"name": "dr_grpo"})).algorithm.scale_rewards()
    assert load_config(BASE).algorithm.resolved_aggregation() == "seq-mean-token-mean"
    # An explicit normalize_advantage_std wins over the algorithm's default (the API's field).
    dr = load_config(_with("algorithm", {"name": "dr_grpo", "normalize_advantage_std": True})).algorithm
    assert dr.scale_rewards()
    assert not load_config(_with("algorithm", {"normalize_advantage_std": False})).algorithm.scale_rewards()


def test_the_studys_mismatch_correction_loads() -> None:
    algorithm = {"recompute_old_logprobs": True, "importance_sampling": "tis", "importance_sampling_cap": 2.0,
                 "clip_low": 0.2, "clip_high": 0.28, "clip_ratio_c": 3.0, "mini_batches": 4}  # fmt: skip
    a = load_config(_with("algorithm", algorithm)).algorithm
    assert (a.importance_sampling, a.importance_sampling_cap, a.importance_sampling_floor) == (
        "tis",
        2.0,
        0.0,
    )
    assert a.updates_per_step() == 4


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("algorithm.grop_size", 3, "algorithm.grop_size: unknown field"),
        ("algorithm.name", "ppo", "algorithm.name: 'ppo' is not one of"),
        ("algorithm.group_size", 1, "algorithm.group_size: must be at least 2"),
        ("algorithm.clip_high", 0.1, "algorithm.clip_high: must be >= clip_low"),
        ("algorithm.learning_rate", "fast", "algorithm.learning_rate: expected float"),
        ("algorithm.top_p", 0.0, "algorithm.top_p: must be in (0, 1]"),
        ("rollout.mode", "server", "rollout.server_urls: server mode needs"),
        ("rollout.weight_sync", "nccl", "rollout.nccl_master_address"),
        ("data.domains", [], "data.domains: at least one domain"),
        ("data.mixing", "random", "data.mixing: 'random' is not one of"),
        ("algorithm.off_policy_steps", 2, "algorithm.off_policy_steps: must be 0 (on-policy) or 1"),
        ("algorithm.importance_sampling", "tis", "needs recompute_old_logprobs: true"),
        ("algorithm.importance_sampling", "is", "algorithm.importance_sampling: 'is' is not one of"),
        ("algorithm.importance_sampling_cap", 0.9, "algorithm.importance_sampling_cap: must be >= 1"),
        (
            "algorithm.importance_sampling_floor",
            1.0,
            "algorithm.importance_sampling_floor: must be in [0, 1)",
        ),
        ("algorithm.clip_ratio_c", 1.0, "algorithm.clip_ratio_c: must be > 1"),
        ("algorithm.mini_batches", 0, "algorithm.mini_batches: must be at least 1"),
        ("algorithm.mini_batches", 17, "algorithm.mini_batches: 17 slices of 16 prompts"),
        ("algorithm.warmup_steps", 100, "algorithm.warmup_steps: must be >= 0 and smaller than steps"),
        ("algorithm.lr_min_ratio", 1.5, "algorithm.lr_min_ratio: must be in [0, 1]"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_values_name_the_field(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_with(path, value))
    assert message in str(error.value)


def test_duplicate_domains_and_bad_weights() -> None:
    domain = {"name": "math", "dataset": "x.jsonl", "verifier": "math", "weight": -1.0}
    with pytest.raises(ConfigError) as error:
        load_config(_with("data.domains", [domain, domain]))
    assert "data.domains[1].name: duplicate domain name 'math'" in str(error.value)
    assert "data.domains[0].weight: must be > 0" in str(error.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    missing = tmp_path / "m.yaml"
    missing.write_text("output_dir: o\n")
    with pytest.raises(ConfigError, match="model: required field is missing"):
        load_config(missing)


def test_overlap_needs_full_weights_on_each_colocated_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _with("algorithm", {"off_policy_steps": 1})
    config["deepspeed"] = {"zero_stage": 3}
    assert load_config(config).algorithm.off_policy_steps == 1  # one rank: it gathers the weights
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"algorithm\.off_policy_steps: colocated rollout with ZeRO-3"):
        load_config(config)
    config["deepspeed"] = {"zero_stage": 2}
    assert load_config(config).algorithm.off_policy_steps == 1
