"""Domain datasets: the three file formats, field mapping, caps, and errors that point at the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedTokenizerFast

from m2rl_trainer.config import DataConfig, DomainConfig, FieldMapping
from m2rl_trainer.data import DatasetError, Prompt, build_mixer, load_domain, render_prompt

ROWS = [
    {"question": "1+1?", "answer": "2", "uid": "a"},
    {"question": "2+2?", "answer": "4", "uid": "b"},
    {"question": "3+3?", "answer": "6", "uid": "c"},
]
MAPPING = FieldMapping(prompt="question", reference="answer", id="uid")


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
        return path
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def domain(path: Path, **overrides: Any) -> DomainConfig:
    settings: dict[str, Any] = {"name": "math", "dataset": str(path), "verifier": "math", "fields": MAPPING}
    return DomainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_each_format_loads_the_same_prompts(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"data{suffix}", ROWS)
    prompts = load_domain(domain(path, verifier_options={"strict": True}))
    assert prompts == [
        Prompt("math", "a", "1+1?", "2", "math", {"strict": True}),
        Prompt("math", "b", "2+2?", "4", "math", {"strict": True}),
        Prompt("math", "c", "3+3?", "6", "math", {"strict": True}),
    ]


def test_unmapped_id_is_the_record_index_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "p0", "answer": 0}\n\n{"prompt": "p1", "answer": [1, 2]}\n')
    prompts = load_domain(DomainConfig(name="d", dataset=str(path), verifier="code"))
    assert [(p.id, p.prompt, p.reference) for p in prompts] == [("0", "p0", 0), ("1", "p1", [1, 2])]


def test_chat_messages_and_nested_fields_as_in_verl_parquet(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
            "reward_model": {"ground_truth": "2", "style": "rule"},
            "extra_info": {"index": 7},
        }
    ]
    path = write(tmp_path / "verl.parquet", rows)
    fields = FieldMapping(prompt="prompt", reference="reward_model.ground_truth", id="extra_info.index")
    (prompt,) = load_domain(domain(path, fields=fields))
    assert prompt.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    assert (prompt.reference, prompt.id) == ("2", "7")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_max_samples_takes_the_first_records(tmp_path: Path, suffix: str) -> None:
    rows = [{"question": f"q{i}", "answer": str(i), "uid": i} for i in range(2500)]  # > 1 Parquet batch
    path = write(tmp_path / f"data{suffix}", rows)
    prompts = load_domain(domain(path, max_samples=1100))
    assert [p.id for p in prompts] == [str(i) for i in range(1100)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_max_samples_with_a_seed_is_a_seeded_uniform_sample(tmp_path: Path, suffix: str) -> None:
    """The trainer's cap (API: "the first ones after shuffling with the run's seed")."""
    rows = [{"question": f"q{i}", "answer": str(i), "uid": i} for i in range(2500)]
    path = write(tmp_path / f"data{suffix}", rows)
    ids = [int(p.id) for p in load_domain(domain(path, max_samples=1100), sample_seed=7)]
    assert len(ids) == len(set(ids)) == 1100 and ids == sorted(ids)  # a subset, kept in file order
    assert ids == [int(p.id) for p in load_domain(domain(path, max_samples=1100), sample_seed=7)]
    assert ids != list(range(1100))  # not the head of the file...
    assert max(ids) >= 2400 and min(ids) <= 100  # ...but spread over all of it
    in_second_half = sum(i >= 1250 for i in ids)
    assert 450 < in_second_half < 650  # ~550 expected of a uniform sample (about 6 sd either side)
    other = [int(p.id) for p in load_domain(domain(path, max_samples=1100), sample_seed=8)]
    assert other != ids  # another seed, another sample
    assert len(load_domain(domain(path, max_samples=5000), sample_seed=7)) == 2500  # cap above size: all


def test_seeded_cap_reads_and_checks_every_record(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\nnot json\n')
    config = DomainConfig(name="d", dataset=str(path), verifier="math", max_samples=2)
    with pytest.raises(DatasetError, match="line 3: not valid JSON"):
        load_domain(config, sample_seed=0)


def test_cap_stops_reading_before_a_later_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\nnot json\n')
    assert len(load_domain(DomainConfig(name="d", dataset=str(path), verifier="math", max_samples=2))) == 2


def error_of(config: DomainConfig) -> str:
    with pytest.raises(DatasetError) as info:
        load_domain(config)
    return str(info.value)


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], uid=str(i)) for i in range(16)] + [{"question": "q", "uid": "x"}]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    assert error_of(domain(path)) == (
        f"domain 'math': {path} line 17: missing field 'answer' "
        "(the reference; fields present: question, uid)"
    )


@pytest.mark.parametrize(
    ("suffix", "where"), [(".json", "record 2"), (".parquet", "row 2")], ids=["json", "parquet"]
)
def test_missing_field_names_the_record_in_json_and_parquet(tmp_path: Path, suffix: str, where: str) -> None:
    rows = [ROWS[0], {"question": "q", "answer": None, "uid": "z"}]
    path = write(tmp_path / f"x{suffix}", rows)
    assert error_of(domain(path)) == f"domain 'math': {path} {where}: field 'answer' (the reference) is null"


def test_bad_json_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": }\n')
    message = error_of(DomainConfig(name="d", dataset=str(path), verifier="math"))
    assert message.startswith(f"domain 'd': {path} line 2: not valid JSON: Expecting value (column 27)")


def test_bad_json_file_reports_the_line_of_the_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"prompt": "a", "answer": "1"},\n  {"prompt": "b" "answer": "2"}\n]\n')
    message = error_of(DomainConfig(name="d", dataset=str(path), verifier="math"))
    assert message == f"domain 'd': {path} line 3: not valid JSON: Expecting ',' delimiter (column 18)"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "dataset is empty (no records)"),
        ("\n\n", "dataset is empty (no records)"),
        ('"just a string"\n', "line 1: expected a JSON object, got str"),
        ('{"prompt": "  ", "answer": "1"}\n', "line 1: field 'prompt': empty prompt"),
        ('{"prompt": 5, "answer": "1"}\n', "line 1: field 'prompt': expected a non-empty string or list"),
        (
            '{"prompt": [{"role": "user"}], "answer": "1"}\n',
            "line 1: field 'prompt'[0]: a chat message needs",
        ),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2", "id": "0"}\n', None),
    ],
    ids=["empty", "blank", "not-object", "blank-prompt", "number-prompt", "bad-message", "ok"],
)
def test_record_problems(tmp_path: Path, content: str, expected: str | None) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    config = DomainConfig(name="d", dataset=str(path), verifier="math")
    if expected is None:
        assert len(load_domain(config)) == 2
    else:
        assert expected in error_of(config)


def test_duplicate_ids_are_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], dict(ROWS[2], uid="a")])
    assert error_of(domain(path)) == f"domain 'math': {path} line 3: duplicate id 'a' (first at line 1)"


def test_unreadable_files(tmp_path: Path) -> None:
    assert error_of(domain(tmp_path / "nope.jsonl")).endswith("cannot read dataset: file does not exist")
    (tmp_path / "dir.jsonl").mkdir()
    assert error_of(domain(tmp_path / "dir.jsonl")).endswith("cannot read dataset: file is a directory")
    assert "unsupported file type '.csv'" in error_of(domain(tmp_path / "data.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    assert "cannot read Parquet file" in error_of(domain(tmp_path / "broken.parquet"))
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"question": "a", "answer": "1", "uid": 1}\n{"question": "caf\xe9"}\n'
    )
    assert error_of(domain(tmp_path / "latin1.jsonl")).endswith(
        "line 2: not UTF-8 text (invalid continuation byte)"
    )


def test_build_mixer_loads_every_domain_with_its_weight(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", ROWS)
    b = write(tmp_path / "b.parquet", ROWS[:2])
    config = DataConfig(
        domains=[domain(a, name="a", weight=3.0), domain(b, name="b", verifier="code")], mixing="weighted"
    )
    mixer = build_mixer(config, seed=1)
    assert mixer.weights == {"a": 3.0, "b": 1.0}
    assert {p.domain for p in mixer.next_batch(40)} == {"a", "b"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    from m2rl_trainer.models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, default_corpus, train_tokenizer

    raw = train_tokenizer(default_corpus(0, lines=200), 300)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=SPECIAL_TOKENS[0])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_render_raw_and_chat_template(tokenizer: PreTrainedTokenizerFast) -> None:
    text = Prompt("m", "0", "What is 1+1?", "2", "math")
    assert render_prompt(text, tokenizer, chat_template=False, system_prompt=None) == "What is 1+1?"
    assert render_prompt(text, tokenizer, chat_template=True, system_prompt="Think.") == (
        "<|im_start|>system\nThink.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    chat = Prompt(
        "m", "1", [{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"}], "x", "m"
    )
    # The dataset's own system message wins over the configured one.
    assert render_prompt(chat, tokenizer, chat_template=True, system_prompt="Think.") == (
        "<|im_start|>system\nOwn.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_render_refuses_what_it_cannot_render(tokenizer: PreTrainedTokenizerFast) -> None:
    chat = Prompt("m", "1", [{"role": "user", "content": "Hi"}], "x", "m")
    with pytest.raises(DatasetError, match=r"prompt 1: chat messages need data\.chat_template: true"):
        render_prompt(chat, tokenizer, chat_template=False, system_prompt=None)
    with pytest.raises(DatasetError, match=r"system_prompt is only used with data\.chat_template"):
        render_prompt(Prompt("m", "0", "Hi", "x", "m"), tokenizer, chat_template=False, system_prompt="S")
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(DatasetError, match="tokenizer has no chat template"):
        render_prompt(chat, bare, chat_template=True, system_prompt=None)
