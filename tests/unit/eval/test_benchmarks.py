"""Benchmark adapters on hand-made files in each benchmark's published layout (no downloads)."""

from __future__ import annotations

import base64
import csv
import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.data.datasets import DatasetError
from m2rl_trainer.eval.benchmarks import gpqa, livecodebench, math
from m2rl_trainer.eval.cli import main
from m2rl_trainer.eval.config import ConfigError, parse_eval_config
from m2rl_trainer.eval.runner import load_benchmark


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _benchmark(dataset: Path, fmt: str, **extra: Any) -> Any:
    config = parse_eval_config(
        {
            "models": [{"name": "m", "path": "/m"}],
            "benchmarks": [{"name": "b", "dataset": str(dataset), "format": fmt, **extra}],
        }
    )
    return config.benchmarks[0]


def _load(dataset: Path, fmt: str, **extra: Any) -> list[Any]:
    return load_benchmark(_benchmark(dataset, fmt, **extra))


# ---- math ------------------------------------------------------------------------------------------


def test_aime24_as_the_study_reads_it(tmp_path: Path) -> None:
    # math-ai/aime24: the answer is only inside the solution's \boxed{} (the study: solution[7:-1])
    rows = [
        {"id": 60, "problem": "Find $x$.", "solution": "\\boxed{204}", "url": "https://aops/60"},
        {
            "id": 61,
            "problem": "Find $y$.",
            "solution": "So $y=\\frac{1}{2}$, i.e. \\boxed{\\frac{1}{2}}",
            "url": "",
        },
    ]
    prompts = _load(_jsonl(tmp_path / "aime24.jsonl", rows), "aime24")
    assert [(p.id, p.reference, p.verifier) for p in prompts] == [
        ("60", "204", "math"),
        ("61", "\\frac{1}{2}", "math"),
    ]
    assert prompts[0].prompt == (
        "Solve the following math problem step by step. The last line of your response should be of the "
        "form Answer: \\boxed{$Answer} (without quotes) where $Answer is the answer to the problem."
        "\n\nFind $x$."
    )


@pytest.mark.parametrize(
    ("fmt", "row", "expected"),
    [
        ("aime25", {"id": "I-1", "problem": "P", "answer": "70"}, ("I-1", "70")),
        ("amc23", {"id": 3, "question": "Q", "answer": 27.0, "url": "u"}, ("3", "27")),
        ("amc23", {"id": 4, "question": "Q", "answer": 0.5, "url": "u"}, ("4", "0.5")),
        (
            "math500",
            {
                "problem": "P",
                "solution": "s",
                "answer": "\\pi",
                "subject": "Geometry",
                "level": 3,
                "unique_id": "test/geometry/1.json",
            },
            ("test/geometry/1.json", "\\pi"),
        ),
    ],
    ids=["aime25", "amc23-integer", "amc23-fraction", "math500"],
)
def test_math_layouts(tmp_path: Path, fmt: str, row: dict[str, Any], expected: tuple[str, str]) -> None:
    (prompt,) = _load(_jsonl(tmp_path / "b.jsonl", [row]), fmt)
    assert (prompt.id, prompt.reference) == expected
    assert prompt.prompt.startswith(math.TEMPLATE)


def test_last_boxed_balances_braces() -> None:
    assert math.last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert math.last_boxed("no box") is None


def test_a_wrong_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "aime25.jsonl", [{"id": 1, "problem": "P", "answer": "1"}, {"id": 2, "answer": "3"}]
    )
    with pytest.raises(
        DatasetError, match=r"aime25\.jsonl line 2: missing field 'problem' / 'Problem' / 'question'"
    ):
        _load(path, "aime25")
    path.write_text('{"id": 1, "problem": "P", "answer": "1"}\n{"id": 2, "problem": \n')
    with pytest.raises(DatasetError, match=r"aime25\.jsonl line 2: not valid JSON"):
        _load(path, "aime25")


# ---- GPQA ------------------------------------------------------------------------------------------

GPQA_COLUMNS = [
    "Pre-Revision Question",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Explanation",
    "Record ID",
    "High-level domain",
]


def _gpqa_csv(path: Path, count: int = 6) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=GPQA_COLUMNS)
        writer.writeheader()
        for i in range(count):
            writer.writerow(
                {
                    "Pre-Revision Question": "old",
                    # published questions span lines
                    "Question": f"Which particle is number {i}?\nConsider spin.",
                    "Correct Answer": f" right {i} ",
                    "Incorrect Answer 1": f"wrong a{i}",
                    "Incorrect Answer 2": f"wrong b{i}",
                    "Incorrect Answer 3": f"wrong c{i}",
                    "Explanation": "because",
                    "Record ID": f"rec{i:03d}",
                    "High-level domain": "Physics",
                }
            )
    return path


def test_gpqa_shuffles_by_a_seeded_permutation_and_records_it(tmp_path: Path) -> None:
    path = _gpqa_csv(tmp_path / "gpqa_diamond.csv")
    prompts = _load(path, "gpqa")
    again = _load(path, "gpqa")
    other_seed = _load(path, "gpqa", format_options={"shuffle_seed": 1})
    assert [p.prompt for p in prompts] == [p.prompt for p in again]  # the same for every run
    assert [p.meta["choice_order"] for p in prompts] != [p.meta["choice_order"] for p in other_seed]
    letters = {p.reference for p in prompts}
    assert len(letters) > 1  # the correct answer moves between questions
    for i, p in enumerate(prompts):
        order = p.meta["choice_order"]
        assert sorted(order) == sorted(gpqa.ANSWER_COLUMNS)
        assert order == gpqa.choice_order(0, f"rec{i:03d}")
        assert p.reference == "ABCD"[order.index("Correct Answer")] == p.meta["correct_letter"]
        assert f"{p.reference}) right {i}\n" in p.prompt + "\n"  # the letter shows the stripped answer
        assert p.verifier == "multiple_choice" and p.verifier_options == {"num_choices": 4}
    assert prompts[0].prompt.startswith(
        "Answer the following multiple choice question. The last line of your response should be of the "
        "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
        "step before answering.\n\nWhich particle is number 0?\nConsider spin.\n\nA) "
    )


def test_gpqa_errors_name_row_line_and_column(tmp_path: Path) -> None:
    path = _gpqa_csv(tmp_path / "gpqa.csv", 3)
    text = path.read_text().replace("wrong b2", "")
    path.write_text(text)
    # the third record starts on line 6: two-line questions before it
    with pytest.raises(
        DatasetError, match=r"gpqa\.csv row 3 \(line 6\): field 'Incorrect Answer 2' is empty"
    ):
        _load(path, "gpqa")


# ---- MMLU-Redux ------------------------------------------------------------------------------------


def _redux_rows() -> list[dict[str, Any]]:
    base = {"question": "Q?", "choices": ["w", "x", "y", "z"], "source": "s", "potential_reason": ""}
    return [
        {**base, "answer": 2, "error_type": "ok", "correct_answer": None},
        {**base, "answer": 0, "error_type": "wrong_groundtruth", "correct_answer": "D"},
        {**base, "answer": 1, "error_type": "bad_question_clarity", "correct_answer": None},
        {**base, "answer": 3, "error_type": "ok", "correct_answer": None},
    ]


def test_mmlu_redux_keeps_the_rows_its_annotation_allows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "redux.jsonl", _redux_rows())
    assert [(p.id, p.reference) for p in _load(path, "mmlu_redux")] == [("0", "C"), ("3", "D")]
    corrected = _load(
        path,
        "mmlu_redux",
        format_options={"error_types": ["ok", "wrong_groundtruth"], "use_corrected_answer": True},
    )
    assert [(p.id, p.reference, p.meta["error_type"]) for p in corrected] == [
        ("0", "C", "ok"),
        ("1", "D", "wrong_groundtruth"),  # the corrected answer, not the published 'answer' (A)
        ("3", "D", "ok"),
    ]
    assert corrected[0].prompt.endswith("Q?\n\nA) w\nB) x\nC) y\nD) z")


def test_mmlu_redux_option_and_annotation_errors(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "redux.jsonl", _redux_rows())
    with pytest.raises(ConfigError, match="keeping wrong_groundtruth rows needs use_corrected_answer"):
        _benchmark(path, "mmlu_redux", format_options={"error_types": ["wrong_groundtruth"]})
    rows = _redux_rows()
    rows[2]["error_type"] = "typo"
    with pytest.raises(
        DatasetError, match=r"redux\.jsonl line 3: field 'error_type': unknown annotation 'typo'"
    ):
        _load(_jsonl(path, rows), "mmlu_redux")


# ---- LiveCodeBench ---------------------------------------------------------------------------------


def _packed(value: Any) -> str:
    """What LiveCodeBench's private_test_cases hold: base64(zlib(pickle(value)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


def _lcb_row(qid: str, date: str, *, functional: bool, private: str) -> dict[str, Any]:
    if functional:
        starter = "class Solution:\n    def addTwo(self, a: int, b: List[int]) -> int:\n        "
        public = [{"input": "1\n[2, 3]", "output": "6", "testtype": "functional"}]
        metadata = {"func_name": "addTwo"}
    else:
        starter = ""
        public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
        metadata = {}
    return {
        "question_title": f"title {qid}",
        "question_content": f"Problem {qid}.",
        "platform": "leetcode" if functional else "atcoder",
        "question_id": qid,
        "contest_id": "c1",
        "contest_date": date,
        "starter_code": starter,
        "difficulty": "easy",
        "public_test_cases": json.dumps(public),
        "private_test_cases": private,
        "metadata": json.dumps(metadata),
    }


def _lcb_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "lcb"
    stdin_private = json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}])
    functional_private = json.dumps([{"input": "2\n[1]", "output": "3", "testtype": "functional"}])
    _jsonl(
        folder / "test.jsonl",
        [_lcb_row("abc301_a", "2023-07-01T00:00:00", functional=False, private=stdin_private)],
    )
    _jsonl(
        folder / "test2.jsonl",
        [
            _lcb_row("3000", "2024-09-14T19:30:00", functional=True, private=_packed(functional_private)),
            _lcb_row("3001", "2025-02-01T12:00:00", functional=False, private=_packed(stdin_private)),
        ],
    )
    return folder


def test_livecodebench_release_files_tests_and_prompt(tmp_path: Path) -> None:
    folder = _lcb_folder(tmp_path)
    prompts = {p.id: p for p in _load(folder, "livecodebench", format_options={"release": "release_v2"})}
    assert sorted(prompts) == ["3000", "3001", "abc301_a"]
    stdin = prompts["abc301_a"]
    assert stdin.reference == {
        "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10\n"}]
    }
    functional = prompts["3000"]
    assert functional.reference == {
        "tests": [
            {"call": "Solution.addTwo", "args": [1, [2, 3]], "expected": 6},
            {"call": "Solution.addTwo", "args": [2, [1]], "expected": 3},  # decoded from the pickle
        ]
    }
    assert functional.verifier == "code"
    assert functional.verifier_options["output_match"] == "livecodebench"
    assert functional.verifier_options["prelude"].startswith("from string import *")
    system, user = functional.prompt
    assert system == {"role": "system", "content": livecodebench.SYSTEM_MESSAGE}
    assert user["content"] == (
        f"### Question:\nProblem 3000.\n\n### Format: {livecodebench.WITH_STARTER}\n```python\n"
        f"{_lcb_row('3000', '', functional=True, private='')['starter_code']}\n```\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )
    assert "# YOUR CODE HERE" in stdin.prompt[1]["content"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"release": "v2"}, ["3000", "3001"]),
        ({"release": "release_v1"}, ["abc301_a"]),
        # LiveCodeBench compares with midnight of the end date: the 12:00 contest that day is out
        ({"release": "release_v2", "start_date": "2024-08-01", "end_date": "2025-02-01"}, ["3000"]),
        ({"release": "release_v2", "start_date": "2024-09-15"}, ["3001"]),
    ],
    ids=["v2-only", "release_v1", "window", "start-only"],
)
def test_livecodebench_releases_and_date_windows(
    tmp_path: Path, options: dict[str, str], expected: list[str]
) -> None:
    folder = _lcb_folder(tmp_path)
    assert sorted(p.id for p in _load(folder, "livecodebench", format_options=options)) == expected


class _Evil:
    def __reduce__(self) -> Any:
        import os

        return (os.system, ("echo pwned > /tmp/m2rl-pwned",))


@pytest.mark.parametrize(
    ("private", "message"),
    [
        (_packed(_Evil()), "only a pickled string is accepted"),
        (_packed([{"input": "1", "output": "1", "testtype": "stdin"}]), "only a pickled string is accepted"),
        (base64.b64encode(b"not zlib").decode(), "not zlib data"),
        (_packed("not json"), "the pickled string is not JSON"),
        ("%%%", "neither JSON nor base64"),
    ],
    ids=["reduce-gadget", "a-list", "not-zlib", "string-not-json", "garbage"],
)
def test_private_tests_unpickle_only_a_string(private: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        livecodebench.decode_private_tests(private)
    assert not Path("/tmp/m2rl-pwned").exists()


def test_a_bad_private_test_names_the_release_file_and_line(tmp_path: Path) -> None:
    folder = _lcb_folder(tmp_path)
    rows = [json.loads(line) for line in (folder / "test2.jsonl").read_text().splitlines()]
    rows[1]["private_test_cases"] = _packed(_Evil())
    _jsonl(folder / "test2.jsonl", rows)
    with pytest.raises(
        DatasetError, match=r"test2\.jsonl line 2: field 'private_test_cases': the pickle holds"
    ):
        _load(folder, "livecodebench", format_options={"release": "release_v2"})


def test_livecodebench_needs_release_for_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"needs format_options\.release"):
        _load(_lcb_folder(tmp_path), "livecodebench")


# ---- HLE -------------------------------------------------------------------------------------------


def test_hle_keeps_text_only_rows_and_scores_by_answer_type(tmp_path: Path) -> None:
    base = {"image_preview": None, "author_name": "a", "rationale": "r", "raw_subject": "s", "canary": "c"}
    rows = [
        {
            **base,
            "id": "h1",
            "question": "What is 2+2?",
            "image": "",
            "answer": "4",
            "answer_type": "exactMatch",
            "category": "Math",
        },
        {
            **base,
            "id": "h2",
            "question": "Pick.\nA. x\nB. y",
            "image": "",
            "answer": "B",
            "answer_type": "multipleChoice",
            "category": "Other",
        },
        {
            **base,
            "id": "h3",
            "question": "See image",
            "image": "data:image/png;base64,AAAA",
            "answer": "1",
            "answer_type": "exactMatch",
            "category": "Math",
        },
    ]
    prompts = _load(_jsonl(tmp_path / "hle.jsonl", rows), "hle")
    assert [(p.id, p.verifier, p.reference) for p in prompts] == [
        ("h1", "math", "4"),
        ("h2", "multiple_choice", "B"),
    ]
    assert (
        prompts[0]
        .prompt[0]["content"]
        .startswith("Your response should be in the following format:\nExplanation:")
    )
    assert (
        "Exact Answer:" in prompts[0].prompt[0]["content"]
        and "Exact Answer:" not in prompts[1].prompt[0]["content"]
    )
    math_only = _load(_jsonl(tmp_path / "hle.jsonl", rows), "hle", format_options={"categories": ["Math"]})
    assert [p.id for p in math_only] == ["h1"]
    rows[1]["answer_type"] = "freeText"
    with pytest.raises(
        DatasetError,
        match=r"hle\.jsonl line 2: field 'answer_type': unknown type 'freeText'; "
        r"known: \['exactMatch', 'multipleChoice'\]",
    ):
        _load(_jsonl(tmp_path / "hle.jsonl", rows), "hle")


# ---- IFEval / IFBench ------------------------------------------------------------------------------


def test_ifeval_rows_as_google_publishes_them(tmp_path: Path) -> None:
    row = {
        "key": 1000,
        "prompt": "Write a 300+ word summary. Do not use any commas.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{}, {"relation": "at least", "num_words": 300}],
    }
    (prompt,) = _load(_jsonl(tmp_path / "input_data.jsonl", [row]), "ifeval")
    assert (prompt.id, prompt.prompt, prompt.verifier) == ("1000", row["prompt"], "ifeval")
    assert prompt.reference == {k: row[k] for k in ("instruction_id_list", "kwargs", "prompt")}
    assert prompt.verifier_options == {"registry": "ifeval"}


def test_ifbench_rows_exclusions_and_unknown_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from m2rl_trainer.rewards import nltk_data

    monkeypatch.setattr(nltk_data, "tagger_available", lambda: False)  # as on a machine without it
    nulls = {"N": None, "keyword": None, "keyword1": None}
    rows = [
        {"key": "0", "prompt": "p0", "instruction_id_list": ["count:keywords_multiple"],
         "kwargs": [{**nulls, "keyword1": "kaleidoscope", "keyword2": "nebula", "keyword3": "whisper",
                     "keyword4": "labyrinth", "keyword5": "paradox"}]},
        {"key": "1", "prompt": "p1", "instruction_id_list": ["words:start_verb"], "kwargs": [nulls]},
    ]  # fmt: skip
    path = _jsonl(tmp_path / "IFBench_test.jsonl", rows)
    (kept,) = _load(path, "ifbench", format_options={"exclude_instructions": ["words:start_verb"]})
    assert kept.id == "0" and kept.verifier_options == {"registry": "ifbench"}
    with pytest.raises(
        DatasetError, match=r"prompt 1: ifeval reference: instruction 'words:start_verb' needs NLTK"
    ):
        _load(path, "ifbench")
    rows[0]["instruction_id_list"] = ["keywords:word_once"]  # an IFEvalG id, not IFBench's
    with pytest.raises(
        DatasetError, match="unknown instruction id 'keywords:word_once' in the ifbench table"
    ):
        _load(_jsonl(path, rows[:1]), "ifbench")


# ---- `m2rl-eval check` -----------------------------------------------------------------------------


def test_check_prints_counts_per_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    config = {
        "models": [{"name": "m", "path": "/nowhere"}],
        "benchmarks": [
            {"name": "gpqa", "dataset": str(_gpqa_csv(tmp_path / "gpqa.csv", 5)), "format": "gpqa",
             "samples": 4},
            {"name": "redux", "dataset": str(_jsonl(tmp_path / "redux.jsonl", _redux_rows())),
             "format": "mmlu_redux"},
            {"name": "lcb", "dataset": str(_lcb_folder(tmp_path)), "format": "livecodebench",
             "format_options": {"release": "release_v2", "end_date": "2025-01-01"}},
        ],
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)["benchmarks"]
    assert {name: (r["prompts"], r["verifier"]) for name, r in report.items()} == {
        "gpqa": (5, "multiple_choice"),
        "redux": (2, "multiple_choice"),
        "lcb": (2, "code"),
    }
    # a file in the wrong format: file, line and field in the message, exit status 2
    config["benchmarks"][1]["dataset"] = str(_jsonl(tmp_path / "wrong.jsonl", [{"question": "q"}]))
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(path)]) == 2
    assert "wrong.jsonl line 1: missing field 'error_type'" in capsys.readouterr().err


def test_format_config_errors_name_the_field(tmp_path: Path) -> None:
    path = str(tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match=r"benchmarks\[0\]\.format: unknown format 'gpqa2'"):
        _benchmark(Path(path), "gpqa2")
    with pytest.raises(
        ConfigError,
        match=r"benchmarks\[0\]\.verifier: format 'gpqa' is scored by multiple_choice, not 'math'",
    ):
        _benchmark(Path(path), "gpqa", verifier="math")
    with pytest.raises(
        ConfigError, match=r"benchmarks\[0\]\.format_options: format 'livecodebench': unknown option"
    ):
        _benchmark(Path(path), "livecodebench", format_options={"releases": "v6"})
    with pytest.raises(ConfigError, match=r"end_date: expected YYYY-MM-DD"):
        _benchmark(Path(path), "livecodebench", format_options={"end_date": "2025/01/01"})


def test_csv_reader_rejects_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["Question", "Record ID"], ["q", "r", "extra"]])
    path.write_text(buffer.getvalue())
    with pytest.raises(DatasetError, match=r"g\.csv row 1 \(line 2\): more cells than columns"):
        _load(path, "gpqa")
