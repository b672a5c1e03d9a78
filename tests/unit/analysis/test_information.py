"""The information analysis: the KL estimate on models whose policies have a closed form (context-free
next-token distributions), teacher-forced log-probabilities equal to the closed form, and the pure
KL-matrix arithmetic on hand-made log-probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from m2rl_trainer.analysis.config import parse_analysis_config
from m2rl_trainer.analysis.information import SequenceScorer, Trajectory, kl_matrix
from m2rl_trainer.analysis.runner import engine_factory, run_analysis
from m2rl_trainer.eval.config import parse_eval_config
from m2rl_trainer.eval.runner import RunOptions
from tests.unit.analysis.models import unigram_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _t(domain: str, sampler: str, logprob: dict[str, float], tokens: int = 2) -> Trajectory:
    return Trajectory(domain, sampler, "0", 0, [1], list(range(tokens)), logprob)


def test_kl_matrix_means_errors_per_token_and_neighbours() -> None:
    trajectories = [
        _t("math", "a", {"a": -1.0, "b": -3.0}),  # diff 2
        _t("math", "a", {"a": -2.0, "b": -2.0}, tokens=4),  # diff 0
        _t("math", "b", {"a": -5.0, "b": -1.0}),  # diff from b: 4
        _t("math", "b", {"a": -4.0, "b": -2.0}),  # 2
    ]
    result = kl_matrix(trajectories, ["a", "b"], epsilon=1.5)
    math_ = result["domains"]["math"]
    assert math_["kl"] == {"a": {"a": 0.0, "b": 1.0}, "b": {"a": 3.0, "b": 0.0}}
    assert math_["klStderr"]["a"]["b"] == pytest.approx(math.sqrt(2 / 2))  # sample sd sqrt(2), n 2
    assert math_["klPerToken"]["a"]["b"] == pytest.approx(2 / 6)
    assert math_["neighbours"] == {"a": ["b"], "b": []}  # 1.0 < 1.5; 3.0 is not
    assert math_["trajectories"] == {"a": 2, "b": 2}
    assert result["meanKl"] == math_["kl"] and result["meanNeighbours"] == {"a": ["b"], "b": []}


@pytest.fixture(scope="module")
def unigram(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, torch.Tensor]]:
    root = tmp_path_factory.mktemp("unigram")
    return {name: unigram_model(tiny_model_dir, root / name, seed) for name, seed in (("a", 1), ("b", 2))}


def test_teacher_forced_logprobs_equal_the_closed_form(unigram) -> None:
    path, p = unigram["a"]
    scorer = SequenceScorer(str(path), device="cpu", chunk=3)  # chunks smaller than the response
    response = [5, 17, 17, 300, 2, 9, 41]
    want = float(sum(math.log(p[t]) for t in response))
    assert scorer.logprob([3, 4, 5], response) == pytest.approx(want, rel=1e-5)
    assert scorer.logprob([3], []) == 0.0


def test_the_kl_estimate_matches_the_closed_form_kl(unigram, tmp_path: Path) -> None:
    (path_a, p_a), (path_b, p_b) = unigram["a"], unigram["b"]
    per_token = float((p_a * (p_a / p_b).log()).sum())
    reverse = float((p_b * (p_b / p_a).log()).sum())
    data = tmp_path / "bench.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"Q{i}: 1+{i}=", "answer": str(1 + i)}) + "\n" for i in range(4))
    )
    config = parse_eval_config(
        {
            "models": [{"name": "a", "path": str(path_a), "chat_template": False},
                       {"name": "b", "path": str(path_b), "chat_template": False}],
            "benchmarks": [{"name": "toy", "dataset": str(data), "verifier": "math"}],
        }
    )  # fmt: skip
    tokens = 12
    analysis = parse_analysis_config(
        {
            "domains": [{"name": "toy", "benchmarks": ["toy"]}],
            "information": {"models": ["a", "b"], "prompts": 4, "samples": 16, "max_response_tokens": tokens,
                            "epsilon": tokens * per_token / 2},
        },
        config,
    )  # fmt: skip
    summary = run_analysis(
        config, analysis, tmp_path / "out", engines=engine_factory(config, RunOptions(engine="hf"), tmp_path)
    )
    report = json.loads((tmp_path / "out" / "_analysis" / "report.json").read_text())
    toy = report["information"]["domains"]["toy"]
    assert toy["trajectories"] == {"a": 64, "b": 64}
    assert toy["kl"]["a"]["a"] == 0.0 and toy["kl"]["b"]["b"] == 0.0
    for (x, y), want in ((("a", "b"), per_token), (("b", "a"), reverse)):
        estimate, error = toy["kl"][x][y], toy["klStderr"][x][y]
        assert abs(estimate - tokens * want) < 4 * error, (x, y, estimate, tokens * want, error)
        assert error < 0.2 * tokens * want  # 64 trajectories pin it down
        assert toy["klPerToken"][x][y] == pytest.approx(estimate / tokens)  # every trajectory has 12 tokens
    assert toy["neighbours"] == {"a": [], "b": []}  # KL is about twice epsilon either way
    rows = [json.loads(line) for line in (tmp_path / "out" / "_analysis" / "trajectories.jsonl").open()]
    assert len(rows) == 128 and {len(r["response_ids"]) for r in rows} == {tokens}
    assert (tmp_path / "out" / "_analysis" / "information-kl-toy.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"
    assert {(k["sampler"], k["scorer"]) for k in summary["kl"]} == {("a", "b"), ("b", "a")}
    assert summary["reportFile"] == "_analysis/report.json"
    yaml.safe_dump(summary)  # plain data
