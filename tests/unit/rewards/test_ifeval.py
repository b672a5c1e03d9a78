"""IFEval through if-verifiable: strict and loose cases (data/ifeval_cases.jsonl), offline Punkt data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from m2rl_trainer.rewards import nltk_data
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.types import ConfigError

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "ifeval_cases.jsonl").read_text().splitlines()
]
SPEC = get_verifier("ifeval")


@pytest.mark.parametrize("mode", ["strict", "loose"])
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case, mode):
    options = SPEC.parse_options({"mode": mode})
    SPEC.check_reference(case["reference"], options)
    result = SPEC.verify(case["response"], case["reference"], options)
    assert result.reward == case[mode], result.details
    assert result.verdict == ("correct" if case[mode] else "incorrect")


def test_cases_include_strict_and_loose_disagreeing():
    assert any(c["strict"] != c["loose"] for c in CASES)
    assert len({i for c in CASES for i in c["reference"]["instruction_id_list"]}) >= 20


@pytest.mark.parametrize("case", [c for c in CASES if "fraction_strict" in c], ids=lambda c: c["id"])
def test_fraction_scoring(case):
    result = SPEC.verify(case["response"], case["reference"], SPEC.parse_options({"scoring": "fraction"}))
    assert result.reward == case["fraction_strict"]


def test_think_gate_and_stripping():
    reference = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    gated = SPEC.parse_options({"require_think_close": True})
    assert SPEC.verify("<think>a, b", reference, gated).verdict == "format_error"
    # the reasoning has a comma, the answer after </think> has none
    assert SPEC.verify("<think>a, b</think>fine answer", reference, gated).reward == 1.0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            {"instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]},
            "unknown instruction id 'punctuation:no_semicolon'",
        ),
        ({"instruction_id_list": ["keywords:existence"], "kwargs": [{}]}, "missing ['keywords']"),
        (
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"keywords": ["x"]}]},
            "unexpected ['keywords']",
        ),
        (
            {
                "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"num_words": 5, "relation": "about"}],
            },
            "length_constraints:number_words",
        ),
        (
            {"instruction_id_list": ["punctuation:no_comma", "change_case:english_capital"], "kwargs": [{}]},
            "one object per instruction",
        ),
        ({"instruction_id_list": []}, "non-empty list"),
        ("punctuation:no_comma", "expected an object"),
    ],
    ids=[
        "unknown-id",
        "missing-argument",
        "unexpected-argument",
        "bad-relation",
        "kwargs-length",
        "empty",
        "not-object",
    ],
)
def test_references_the_library_would_silently_mis_score_are_config_errors(reference, message):
    with pytest.raises(ConfigError) as info:
        SPEC.check_reference(reference, SPEC.parse_options({}))
    assert message in str(info.value)


def test_punkt_tab_is_written_offline(tmp_path, monkeypatch):
    root = nltk_data.write_punkt_tab(tmp_path / "nltk")
    model = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in model.iterdir()) == sorted(nltk_data.FILES)
    abbreviations = (model / "abbrev_types.txt").read_text().split("\n")
    assert "dr" in abbreviations and "mr" in abbreviations

    import nltk
    from nltk.tokenize.punkt import PunktTokenizer

    monkeypatch.setattr(nltk.data, "path", [str(root)])
    tokenizer = PunktTokenizer("english")
    assert tokenizer.tokenize("Mr. Jones met Dr. Smith. They talked.") == [
        "Mr. Jones met Dr. Smith.",
        "They talked.",
    ]


def test_punkt_data_goes_to_the_first_writable_place(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    usable = tmp_path / "cache"
    monkeypatch.setattr(nltk_data, "_candidates", lambda: [read_only / "nltk_data", usable])
    if os.geteuid() == 0:  # root writes anywhere: make the first place a file, which cannot hold a folder
        read_only.chmod(0o700)
        (read_only / "nltk_data").write_text("not a folder")
    assert nltk_data.ensure_punkt_tab.__wrapped__() == usable
    assert nltk.data.path[0] == str(usable)
    assert (usable / "tokenizers" / "punkt_tab" / "english" / "sent_starters.txt").is_file()


def test_prepared_data_is_used_as_is(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    nltk_data.write_nltk_data(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.t*")}
    monkeypatch.setenv("M2RL_NLTK_DATA", str(tmp_path))
    assert nltk_data.ensure_punkt_tab.__wrapped__() == tmp_path
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.t*")} == before  # not rewritten


def test_ifbench_nltk_data_offline(tmp_path, monkeypatch):
    """IFBench's NLTK resources are found without a download; its import never reaches the network."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(nltk, "download", nltk.download)  # restored after ensure_nltk_data patches it
    monkeypatch.setenv("M2RL_NLTK_DATA", str(tmp_path))
    root = nltk_data.ensure_nltk_data.__wrapped__()
    assert root == tmp_path
    for resource in ("tokenizers/punkt", "tokenizers/punkt_tab", "corpora/stopwords"):
        nltk.data.find(resource)  # what if-verifiable's IFBench module checks before downloading
    assert nltk.download("stopwords") is False  # replaced: downloads nothing
    from nltk.corpus.reader import WordListCorpusReader

    words = WordListCorpusReader(str(tmp_path / "corpora" / "stopwords"), ["english"]).words("english")
    assert len(words) == 198 and {"the", "he'd", "wouldn't", "ourselves"} <= set(words)
    # the pickle name IFBench's count_sentences loads is served from punkt_tab
    tokenizer = nltk.data.load("nltk:tokenizers/punkt/english.pickle")
    assert tokenizer.tokenize("Dr. Smith left. He came back.") == ["Dr. Smith left.", "He came back."]
    # and the tagger is reported missing rather than fetched
    assert nltk_data.tagger_available() is False
    (tmp_path / nltk_data.TAGGER).mkdir(parents=True)
    for name in nltk_data.TAGGER_FILES:
        (tmp_path / nltk_data.TAGGER / name).write_text("{}")
    assert nltk_data.tagger_available() is True
