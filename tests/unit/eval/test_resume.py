"""The per-sample cache: a killed evaluation resumes without regenerating finished samples, an added
model or benchmark does only its own work, and IFEval's four figures are lm-evaluation-harness's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.eval.config import EvalConfig, parse_eval_config
from m2rl_trainer.eval.runner import OutputWriter, RunOptions, evaluate_with_engine, load_benchmarks
from m2rl_trainer.rollout.base import Completion, SamplingParams


class CountingEngine:
    """A fake rollout engine: answers letter A or B, counts every completion it generates.

    kill_at: SIGKILL this process at the start of that generate call (a pod killed mid-way).
    """

    def __init__(self, tag: str, kill_at: int | None = None) -> None:
        self.tag, self.kill_at = tag, kill_at
        self.calls = 0
        self.generated = 0

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.generated += len(prompts) * params.n
        return [
            [
                Completion(i, [1], [2], [0.0], f"{self.tag} {params.seed} {j}\nAnswer: {'AB'[j % 2]}", "stop")
                for j in range(params.n)
            ]
            for i in range(len(prompts))
        ]

    def close(self) -> None:
        pass


def _setup(
    tmp_path: Path, questions: int = 10, samples: int = 2, extra: list[dict[str, Any]] | None = None
) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "model.safetensors").write_bytes(b"weights")
    data = tmp_path / "mc.jsonl"
    data.write_text(
        "".join(json.dumps({"q": f"question {i}?", "a": "AB"[i % 2]}) + "\n" for i in range(questions))
    )
    config = {
        "models": [{"name": "m", "path": str(model), "chat_template": False}],
        "benchmarks": [
            {
                "name": "mc",
                "dataset": str(data),
                "verifier": "multiple_choice",
                "verifier_options": {"num_choices": 2},
                "fields": {"prompt": "q", "reference": "a"},
                "samples": samples,
            },
            *(extra or []),
        ],
        "sampling": {"temperature": 1.0},
    }
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(config))
    return path


def _run(config: EvalConfig, out: Path, engine: CountingEngine, index: int = 0) -> Any:
    prompts = load_benchmarks(config)
    texts = {name: [str(p.prompt) for p in ps] for name, ps in prompts.items()}
    options = RunOptions(engine="hf", output_dir=out, chunk_prompts=2, scorer_workers=1)
    with OutputWriter(out, config.models[index].name) as writer:
        return evaluate_with_engine(config, index, options, engine, prompts, texts, writer)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_killed_evaluation_resumes_without_regenerating(tmp_path: Path) -> None:
    config_path = _setup(tmp_path)
    out = tmp_path / "out"
    # The first run is killed (SIGKILL, no clean-up) as its third generate call starts: the first
    # chunk (2 prompts x 2 samples) is stored by then, the second was being scored.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_resume import CountingEngine, _run
        from m2rl_trainer.eval.config import load_eval_config
        _run(load_eval_config({str(config_path)!r}), Path({str(out)!r}), CountingEngine("first", kill_at=3))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "m").exists()  # no partial outputs under the final name

    config = parse_eval_config(json.loads(config_path.read_text()))
    engine = CountingEngine("second")
    result = _run(config, out, engine)
    assert engine.generated == (10 - 2) * 2  # only the 8 unfinished prompts, 2 samples each
    assert result.results[0].generated == 16
    records = _records(out / "m" / "mc.samples.jsonl")
    assert [(r["prompt_id"], r["sample"]) for r in records] == [
        (str(i), j) for i in range(10) for j in range(2)
    ]
    assert [r["response"].split()[0] for r in records] == ["first"] * 4 + ["second"] * 16
    # A, B alternate per sample and the reference per question: half the samples are right.
    assert result.results[0].metrics == {"avg@k": 0.5}

    # A third run has nothing left to generate and reports the same numbers.
    again = CountingEngine("third")
    assert _run(config, out, again).results[0].metrics == {"avg@k": 0.5}
    assert again.generated == 0


def test_an_added_model_or_benchmark_does_only_its_own_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    raw = json.loads(_setup(tmp_path, questions=4).read_text())
    first = CountingEngine("one")
    _run(parse_eval_config(raw), out, first)
    assert first.generated == 8

    # A second benchmark: only its prompts are generated.
    gpqa = tmp_path / "more.jsonl"
    gpqa.write_text("".join(json.dumps({"q": f"other {i}?", "a": "A"}) + "\n" for i in range(3)))
    extra = [
        {
            "name": "more",
            "dataset": str(gpqa),
            "verifier": "multiple_choice",
            "fields": {"prompt": "q", "reference": "a"},
        }
    ]
    config = parse_eval_config(json.loads(_setup(tmp_path, questions=4, extra=extra).read_text()))
    second = CountingEngine("two")
    _run(config, out, second)
    assert second.generated == 3

    # Another model entry naming the same checkpoint reuses every sample; a changed checkpoint does not.
    raw["models"].append({**raw["models"][0], "name": "same-weights"})
    both = parse_eval_config(raw)
    third = CountingEngine("three")
    _run(both, out, third, index=1)
    assert third.generated == 0
    (tmp_path / "model" / "model.safetensors").write_bytes(b"trained further")
    fourth = CountingEngine("four")
    _run(both, out, fourth, index=1)
    assert fourth.generated == 8

    # More samples per prompt: only the extra ones.
    raw["benchmarks"][0]["samples"] = 3
    fifth = CountingEngine("five")
    _run(parse_eval_config(raw), out, fifth, index=1)
    assert fifth.generated == 4


def test_changed_verifier_options_rescore_without_generating(tmp_path: Path) -> None:
    out = tmp_path / "out"
    raw = json.loads(_setup(tmp_path, questions=4).read_text())
    _run(parse_eval_config(raw), out, CountingEngine("one"))
    raw["benchmarks"][0]["verifier_options"] = {"num_choices": 2, "require_think_close": True}
    engine = CountingEngine("two")
    result = _run(parse_eval_config(raw), out, engine)
    assert engine.generated == 0
    assert result.results[0].metrics == {"avg@k": 0.0}  # no </think>: the gate fails every sample
    assert result.results[0].verdicts == {"format_error": 8}


# ---- IFEval's four figures -----------------------------------------------------------------------


def _lm_eval_figures(rows: list[dict[str, Any]], responses: list[str]) -> dict[str, float]:
    """lm-evaluation-harness's computation (lm_eval/tasks/ifeval/utils.py: process_results,
    test_instruction_following_strict/_loose, agg_inst_level_acc), on IFEval's own checkers."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    from m2rl_trainer.rewards.nltk_data import ensure_nltk_data

    ensure_nltk_data()

    def follows(row: dict[str, Any], response: str, loose: bool) -> list[bool]:
        r = response.split("\n")
        variants = [response]
        if loose:
            first, last, both = (
                "\n".join(r[1:]).strip(),
                "\n".join(r[:-1]).strip(),
                "\n".join(r[1:-1]).strip(),
            )
            variants = [response, response.replace("*", ""), first, last, both]
            variants += [first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]
        result = []
        for index, instruction_id in enumerate(row["instruction_id_list"]):
            instruction = INSTRUCTION_DICT[instruction_id](instruction_id)
            instruction.build_description(**{k: v for k, v in row["kwargs"][index].items() if v})
            args = instruction.get_instruction_args()
            if args and "prompt" in args:
                instruction.build_description(prompt=row["prompt"])
            result.append(any(v.strip() and instruction.check_following(v) for v in variants))
        return result

    out = {}
    for mode in ("strict", "loose"):
        per_prompt = [follows(row, text, mode == "loose") for row, text in zip(rows, responses, strict=True)]
        out[f"prompt_level_{mode}_acc"] = sum(all(x) for x in per_prompt) / len(per_prompt)
        flat = [x for xs in per_prompt for x in xs]
        out[f"inst_level_{mode}_acc"] = sum(flat) / len(flat)
    return out


IFEVAL_ROWS = [
    {"key": 1, "prompt": "Write about cats. Do not use commas. Use at least 5 words.",
     "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "at least", "num_words": 5}]},
    {"key": 2, "prompt": "Answer in lowercase, end with 'bye.'.",
     "instruction_id_list": ["change_case:english_lowercase", "startend:end_checker", "punctuation:no_comma"],
     "kwargs": [{}, {"end_phrase": "bye."}, {}]},
    {"key": 3, "prompt": "Wrap your answer in double quotes.",
     "instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
]  # fmt: skip
RESPONSES = [
    "Cats are small furry animals that purr",  # both followed
    "Title Line\nhello there how are you bye.",  # lowercase only loosely (first line dropped)
    'Sure:\n"cats are great"',  # quotation only after dropping the first line (loose)
    "Cats, dogs.",  # comma: fails no_comma; 2 words: fails number_words
    "hello my friend, this is a very nice day for a walk in the park and then bye.",  # comma only
    "no quotes",
]


def test_four_ifeval_figures_equal_lm_eval_on_fixed_responses(tmp_path: Path) -> None:
    from m2rl_trainer.eval.benchmarks.ifeval import four_figures
    from m2rl_trainer.rewards import Sample, Scorer, ScorerConfig

    rows = IFEVAL_ROWS + IFEVAL_ROWS  # two samples per prompt
    path = tmp_path / "input_data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    config = parse_eval_config(
        {
            "models": [{"name": "m", "path": "/m"}],
            "benchmarks": [{"name": "ifeval", "dataset": str(path), "format": "ifeval"}],
        }
    )
    prompts = {p.id: p for p in load_benchmarks(config)["ifeval"]}
    samples = [
        Sample("ifeval", text, prompts[str(row["key"])].reference, {})
        for row, text in zip(rows, RESPONSES, strict=True)
    ]
    with Scorer(ScorerConfig(verifiers={"ifeval": {}}, python_workers=1)) as scorer:
        results = scorer.score(samples)
    records = [
        {"prompt_id": str(row["key"]), "details": result.details}
        for row, result in zip(rows, results, strict=True)
    ]
    ours = four_figures(records, prompts)
    expected = _lm_eval_figures(rows, RESPONSES)
    assert ours == pytest.approx(expected)
    # the fixed responses separate the four figures (and pooled from per-prompt means)
    assert expected == pytest.approx(
        {
            "prompt_level_strict_acc": 1 / 6,
            "inst_level_strict_acc": 6 / 12,
            "prompt_level_loose_acc": 3 / 6,
            "inst_level_loose_acc": 8 / 12,
        }
    )
