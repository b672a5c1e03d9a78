"""Prediction behaviour and self-verification: gains, union gain and cosines on hand-made per-sample
outputs with known answers; judges' verdicts parsed and scored per domain and mode (a stub engine
stands in for generation); the config's errors name their field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.analysis.config import parse_analysis_config
from m2rl_trainer.analysis.prediction import cosine, gains, union
from m2rl_trainer.analysis.runner import needed_outputs, run_analysis, wait_for_outputs
from m2rl_trainer.analysis.selfverify import (
    Judged,
    judge_accuracy,
    judge_prompt,
    outcome_of,
    parse_verdict,
)
from m2rl_trainer.config import ConfigError
from m2rl_trainer.eval.config import parse_eval_config
from m2rl_trainer.eval.runner import EvalError
from m2rl_trainer.rollout.base import Completion, SamplingParams

# Per-prompt accuracies (mean of two 0/1 samples) on benchmark "alg" (prompts 0-3) and "code" (0-1).
ACCURACY = {
    "sft": {"alg": [0.0, 0.5, 1.0, 0.5], "code": [0.0, 0.5]},
    "math": {"alg": [1.0, 0.5, 1.0, 0.0], "code": [0.0, 0.5]},  # gains [1, 0, 0, 0] [0, 0]
    "coder": {"alg": [0.0, 1.0, 0.5, 1.0], "code": [1.0, 0.5]},  # gains [0, .5, 0, .5] [1, 0]
    "mixed": {"alg": [1.0, 1.0, 1.0, 0.5], "code": [0.5, 0.5]},  # gains [1, .5, 0, 0] [.5, 0]
    "merged": {"alg": [0.0, 0.0, 0.0, 1.0], "code": [0.0, 0.0]},  # gains [0, 0, 0, .5] [0, 0]
}
UNION = {"alg": [1.0, 0.5, 0.0, 0.5], "code": [1.0, 0.0]}


def test_gain_union_and_cosine_by_hand() -> None:
    sft = {"0": 0.0, "1": 0.5}
    assert gains({"0": 1.0, "1": 0.25}, sft, ["0", "1"]) == [1.0, 0.0]  # a loss is no gain
    assert union([[1.0, 0.0], [0.5, 0.5]]) == [1.0, 0.5]
    assert cosine([1.0, 0.0], [0.0, 0.0]) == 0.0  # undefined -> 0
    assert cosine([1.0, 1.0], [2.0, 2.0]) == pytest.approx(1.0)


def _records(model: str, benchmark: str) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(ACCURACY[model][benchmark]):
        wins = round(2 * a)
        for j in range(2):
            out.append(
                {"prompt_id": str(i), "sample": j, "reward": float(j < wins), "verdict": "x",
                 "response": f"<think>work</think> The answer is {42 if j < wins else 7}.",
                 "answer": str(42 if j < wins else 7)}
            )  # fmt: skip
    return out


@pytest.fixture
def suite(tmp_path: Path, tiny_model_dir: Path) -> tuple[Any, Path]:
    out = tmp_path / "out"
    for name, length in (("alg", 4), ("code", 2)):
        rows = [{"prompt": f"{name} question {i}?", "answer": "42"} for i in range(length)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for model in ACCURACY:
        (out / model).mkdir(parents=True)
        (out / model / "results.json").write_text("{}")
        for benchmark in ("alg", "code"):
            lines = [json.dumps(r) for r in _records(model, benchmark)]
            (out / model / f"{benchmark}.samples.jsonl").write_text("\n".join(lines) + "\n")
    config = parse_eval_config(
        {
            "models": [{"name": m, "path": str(tiny_model_dir), "chat_template": False} for m in ACCURACY],
            "benchmarks": [
                {"name": b, "dataset": str(tmp_path / f"{b}.jsonl"), "verifier": "math"}
                for b in ("alg", "code")
            ],
        }
    )
    return config, out


DOMAINS = [
    {"name": "math", "benchmarks": ["alg"], "expert": "math"},
    {"name": "code", "benchmarks": ["code"], "expert": "coder"},
]


class _Judge:
    """A judge that finds a response correct when it says 42 (right: reward 1 iff the answer is 42)
    or, if `contrary`, the opposite; `silent` gives no verdict."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[int, SamplingParams]] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((len(prompts), params))
        out = []
        for i, prompt in enumerate(prompts):
            right = "42" in prompt.split("solution", 1)[1]
            said = {"mixed": right, "sft": not right}.get(self.name)
            text = "no idea" if said is None else f"Checked.\nVerdict: {'CORRECT' if said else 'INCORRECT'}"
            out.append([Completion(i, [1], [2], [0.0], text, "stop")])
        return out

    def close(self) -> None:
        pass


def test_prediction_and_self_verification_end_to_end_with_a_stub_engine(suite, tmp_path: Path) -> None:
    config, out = suite
    analysis = parse_analysis_config(
        {
            "sft": "sft", "mixed": "mixed", "merged": ["merged"], "domains": DOMAINS, "prediction": {},
            "self_verification": {"responses_from": "coder", "judges": ["mixed", "sft", "math"],
                                  "responses": 3},
        },
        config,
    )  # fmt: skip
    judges: dict[str, _Judge] = {}

    @contextmanager
    def engines(model: Any, texts: list[str], max_tokens: int) -> Iterator[_Judge]:
        judges[model.name] = _Judge(model.name)
        yield judges[model.name]

    summary = run_analysis(config, analysis, out, engines=engines)
    report = json.loads((out / "_analysis" / "report.json").read_text())

    # Prediction: cosines with the union gain, by hand.
    p = report["prediction"]
    alg_mixed = cosine([1.0, 0.5, 0.0, 0.0], UNION["alg"])
    assert alg_mixed == pytest.approx(1.25 / math.sqrt(1.5 * 1.25))
    assert p["domains"]["math"]["gainCosine"]["mixed"] == pytest.approx(alg_mixed)
    assert p["domains"]["math"]["gainCosine"]["merged"] == pytest.approx(0.25 / (math.sqrt(1.5) * 0.5))
    assert p["domains"]["code"]["gainCosine"]["mixed"] == pytest.approx(1.0)  # [.5, 0] vs [1, 0]
    every_union = UNION["alg"] + UNION["code"]
    mixed_all = [1.0, 0.5, 0.0, 0.0, 0.5, 0.0]
    assert p["overall"]["gainCosine"]["mixed"] == pytest.approx(cosine(mixed_all, every_union))
    assert p["overall"]["unionGainPrompts"] == 4
    assert summary["gainCosine"]["mixed"] == round(cosine(mixed_all, every_union), 4)

    # Self-verification: coder's first 3 samples per domain. alg: prompt 0 (two wrong), prompt 1
    # (right); code: prompt 0 (two right), prompt 1 (right).
    sv = report["selfVerification"]["judges"]
    assert sv["mixed"]["outcome"]["math"]["accuracy"] == 1.0
    assert sv["mixed"]["reasoning"]["all"] == {
        "responses": 6, "correctResponses": 4, "accuracy": 1.0, "truePositiveRate": 1.0,
        "trueNegativeRate": 1.0, "unparsed": 0,
    }  # fmt: skip
    assert sv["sft"]["outcome"]["all"]["accuracy"] == 0.0  # always wrong
    assert sv["math"]["outcome"]["all"]["unparsed"] == 6 and sv["math"]["outcome"]["all"]["accuracy"] == 0.0
    assert {(a["model"], a["mode"]): a["accuracy"] for a in summary["judgeAccuracy"]}[
        ("mixed", "outcome")
    ] == 1.0
    # One call per judge, all modes and items at once, with the suite's sampling.
    n, params = judges["mixed"].calls[0]
    assert len(judges["mixed"].calls) == 1 and n == 12
    assert (params.n, params.temperature, params.top_p) == (
        1,
        config.sampling.temperature,
        config.sampling.top_p,
    )
    replies = [json.loads(line) for line in (out / "_analysis" / "judgements.jsonl").open()]
    assert len(replies) == 36 and replies[0]["judge"] == "mixed"
    pictures = sorted(p.name for p in (out / "_analysis").glob("*.png"))
    assert pictures == ["prediction-gain-cosine.png", "self-verification-accuracy.png"]


def test_verdicts_outcomes_and_prompts() -> None:
    assert parse_verdict("Let me see.\nVerdict: CORRECT") is True
    assert parse_verdict("verdict: correct ... wait. Verdict: **INCORRECT**") is False  # the last one
    assert parse_verdict("The answer is incorrect.") is None
    assert outcome_of("<think>long</think>\n\\boxed{3}", "3") == ("\\boxed{3}", True)
    assert outcome_of("just \\boxed{3}", "3") == ("3", True)
    assert outcome_of("def f(): pass", None) == ("def f(): pass", False)
    item = Judged("math", "alg", "0", 0, "What is 6*7?", "<think>6*7=42</think>42", "42", True)
    assert "6*7=42" not in judge_prompt(item, "outcome") and "42" in judge_prompt(item, "outcome")
    assert "6*7=42" in judge_prompt(item, "reasoning")
    scored = judge_accuracy([item, item], [True, None])
    assert (scored["accuracy"], scored["unparsed"], scored["trueNegativeRate"]) == (0.5, 1, None)


def test_waiting_for_outputs_times_out_naming_the_models(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text("{}")
    naps: list[float] = []
    with pytest.raises(EvalError, match="outputs of b did not appear"):
        wait_for_outputs(tmp_path, ["a", "b"], wait_s=0.0, poll_s=5.0, sleep=naps.append)
    wait_for_outputs(tmp_path, ["a"], wait_s=0.0, poll_s=5.0, sleep=naps.append)
    assert naps == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sft": "base"}, r"sft: 'base' is not a model of the suite"),
        (
            {"domains": [{"name": "m", "benchmarks": ["aime"]}]},
            r"domains\[0\]\.benchmarks\[0\]: 'aime' is not a benchmark",
        ),
        ({"sft": None}, "sft: required by prediction"),
        ({"prediction": None}, "none is set; nothing to analyse"),
        ({"information": {"samples": 0}}, r"information\.samples: must be at least 1"),
        (
            {"self_verification": {"responses_from": "x"}},
            r"self_verification\.responses_from: 'x' is not a model",
        ),
        (
            {"self_verification": {"responses_from": "sft", "modes": ["both"]}},
            r"modes\[0\]: 'both' is not one of",
        ),
        ({"extra": 1}, "extra: unknown field"),
    ],
    ids=["model", "benchmark", "no-sft", "nothing", "samples", "responses-from", "mode", "unknown"],
)
def test_config_errors_name_the_field(suite, change: dict[str, Any], message: str) -> None:
    config, _ = suite
    raw = {"sft": "sft", "domains": DOMAINS, "prediction": {}, **change}
    with pytest.raises(ConfigError, match=message):
        parse_analysis_config({k: v for k, v in raw.items() if v is not None or k == "sft"}, config)


def test_needed_outputs() -> None:
    import types

    config = types.SimpleNamespace(
        prediction=object(), self_verification=types.SimpleNamespace(responses_from="x"), sft="s",
        experts={"m": "e1", "c": "e2"}, mixed="mix", merged=["t"],
    )  # fmt: skip
    assert needed_outputs(config) == ["s", "e1", "e2", "mix", "t", "x"]  # type: ignore[arg-type]
