"""Domain datasets: local .jsonl / .json / .parquet files -> validated `Prompt` records.

Everything is read and checked when the run starts, before a model is loaded or a GPU touched,
so a typo in a field mapping costs seconds, not a queued GPU job. Errors name the domain, the
file, the line (JSONL, and JSON syntax errors) or row (JSON list, Parquet) and the field.

Field names in the mapping may be dotted paths into nested objects ("reward_model.ground_truth",
verl's Parquet layout); a key that itself contains a dot is found first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2rl_trainer.config import DomainConfig
from m2rl_trainer.data.shuffle import permutation

Message = dict[str, str]
_SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the domain, file, line or row and field."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of one domain, with what its verifier needs.

    id: the mapped id column as a string, or the record's 0-based index in the file when unmapped.
    prompt: raw text, or chat messages [{"role": ..., "content": ...}] for the chat template.
    reference: the verifier's gold data (answer string, tests, instructions); never None.
    meta: what a dataset format records about how it built the prompt (e.g. GPQA's choice order);
        copied into each evaluation sample's record.
    """

    domain: str
    id: str
    prompt: str | list[Message]
    reference: Any
    verifier: str
    verifier_options: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def read_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    """(location, record) of a .jsonl / .json / .parquet file; `where` starts every error message."""
    if path.suffix not in _SUFFIXES:
        raise DatasetError(f"{where}: unsupported file type {path.suffix!r} (use {', '.join(_SUFFIXES)})")
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise DatasetError(f"{where}: cannot read dataset: file {reason}")
    reader = {".jsonl": _jsonl_records, ".json": _json_records, ".parquet": _parquet_records}[path.suffix]
    return reader(path, where)


def load_domain(domain: DomainConfig, sample_seed: int | None = None) -> list[Prompt]:
    """Read, map and validate one domain's dataset; at most `max_samples` records.

    sample_seed None: the first `max_samples` records of the file (later ones are never read; the
    evaluator's benchmarks). An integer (the trainer passes the run's seed): every record is read and
    checked, then the first `max_samples` of a permutation seeded by (sample_seed, domain name) are
    kept, in file order, as the RLVRRun API promises ("the first ones after shuffling with the run's
    seed"): a capped domain is a uniform sample of the file, not its head.
    """
    if domain.format != "jsonl":
        from m2rl_trainer.data.formats import load_formatted_domain

        # With a seed every row is read, then sampled (the format's own cap takes the first ones).
        whole = domain if sample_seed is None else dataclasses.replace(domain, max_samples=None)
        return _sample(load_formatted_domain(whole), domain, sample_seed)
    path = Path(domain.dataset)
    where = f"domain {domain.name!r}: {path}"
    prompts: list[Prompt] = []
    seen_ids: dict[str, str] = {}
    head = domain.max_samples if sample_seed is None else None
    try:
        # sample_seed None: the first N records (deterministic, no RNG); later ones are never read.
        for index, (location, record) in enumerate(itertools.islice(read_records(path, where), head)):
            prompt = _to_prompt(domain, index, record, f"{where} {location}")
            if prompt.id in seen_ids:
                raise DatasetError(
                    f"{where} {location}: duplicate id {prompt.id!r} (first at {seen_ids[prompt.id]})"
                )
            seen_ids[prompt.id] = location
            prompts.append(prompt)
    except OSError as error:
        raise DatasetError(f"{where}: cannot read dataset ({error.strerror or error})") from error
    except UnicodeDecodeError as error:  # .json files; JSONL reports its line itself
        raise DatasetError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not prompts:
        raise DatasetError(f"{where}: dataset is empty (no records)")
    return _sample(prompts, domain, sample_seed)


def _sample(prompts: list[Prompt], domain: DomainConfig, sample_seed: int | None) -> list[Prompt]:
    """The first `max_samples` prompts of a permutation seeded by (sample_seed, domain name), in file
    order; unchanged when there is no seed or no cap."""
    if sample_seed is not None and domain.max_samples is not None and domain.max_samples < len(prompts):
        chosen = permutation(len(prompts), "m2rl-max-samples", sample_seed, domain.name)[: domain.max_samples]
        prompts = [prompts[i] for i in sorted(chosen)]
    return prompts


def load_domains(domains: list[DomainConfig], sample_seed: int | None = None) -> dict[str, list[Prompt]]:
    """Load every domain (in config order), failing on the first bad one."""
    return {domain.name: load_domain(domain, sample_seed) for domain in domains}


def render_prompt(
    prompt: Prompt, tokenizer: Any, chat_template: bool, system_prompt: str | None = None
) -> str:
    """The text sent to the rollout engine.

    chat_template=True: `tokenizer.apply_chat_template(..., add_generation_prompt=True)`; a plain
    string prompt becomes one user message; `system_prompt` is prepended as a system message unless
    the dataset's messages already start with one (the dataset's own wins).
    chat_template=False: the prompt text as is; message lists and a system prompt are errors there,
    because there is no template to render them with.
    """
    if not chat_template:
        if not isinstance(prompt.prompt, str):
            raise DatasetError(
                f"domain {prompt.domain!r} prompt {prompt.id}: chat messages need data.chat_template: true"
            )
        if system_prompt:
            raise DatasetError("data.system_prompt is only used with data.chat_template: true")
        return prompt.prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise DatasetError("data.chat_template is true but the tokenizer has no chat template")
    messages = (
        [{"role": "user", "content": prompt.prompt}] if isinstance(prompt.prompt, str) else prompt.prompt
    )
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(text, str)
    return text


def _jsonl_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    # Bytes, decoded line by line, so a bad encoding is reported with its line number too.
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(f"{where} line {number}: not UTF-8 text ({error.reason})") from error
            if not line.strip():
                continue  # blank lines (a trailing newline, hand-edited files) are not records
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{where} line {number}: not valid JSON: {error.msg} (column {error.colno})"
                ) from error
            yield f"line {number}", record


def _json_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{where} line {error.lineno}: not valid JSON: {error.msg} (column {error.colno})"
        ) from error
    if not isinstance(data, list):
        raise DatasetError(f"{where}: a .json dataset must be a list of records, got {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        yield f"record {number}", record


def _parquet_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        parquet = pq.ParquetFile(path)
        # Batches keep memory bounded on large files and let a max_samples cap stop reading early.
        batches = parquet.iter_batches(batch_size=1024)
        for batch in batches:
            for record in batch.to_pylist():
                number += 1
                yield f"row {number}", record
    except pa.ArrowException as error:
        raise DatasetError(f"{where}: cannot read Parquet file (after row {number}): {error}") from error


_MISSING = object()


def _lookup(record: Mapping[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _to_prompt(domain: DomainConfig, index: int, record: Any, where: str) -> Prompt:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    fields = domain.fields

    def required(name: str, role: str) -> Any:
        value = _lookup(record, name)
        if value is _MISSING:
            present = ", ".join(map(str, record)) or "none"
            raise DatasetError(f"{where}: missing field {name!r} ({role}; fields present: {present})")
        if value is None:
            raise DatasetError(f"{where}: field {name!r} ({role}) is null")
        return value

    prompt = required(fields.prompt, "the prompt")
    prompt = _check_prompt(prompt, f"{where}: field {fields.prompt!r}")
    reference = required(fields.reference, "the reference")
    if fields.id is None:
        prompt_id = str(index)
    else:
        raw_id = required(fields.id, "the id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise DatasetError(f"{where}: field {fields.id!r} (the id) must be a string or an integer")
        prompt_id = str(raw_id)
    return Prompt(
        domain=domain.name,
        id=prompt_id,
        prompt=prompt,
        reference=reference,
        verifier=domain.verifier,
        verifier_options=dict(domain.verifier_options),
    )


def _check_prompt(value: Any, where: str) -> str | list[Message]:
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{where}: empty prompt")
        return value
    # Parquet stores message lists as numpy-free Python lists after to_pylist(); JSON as lists.
    if isinstance(value, list) and value:
        messages: list[Message] = []
        for i, message in enumerate(value):
            if (
                not isinstance(message, Mapping)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise DatasetError(f"{where}[{i}]: a chat message needs string 'role' and 'content'")
            messages.append({"role": message["role"], "content": message["content"]})
        return messages
    raise DatasetError(f"{where}: expected a non-empty string or list of chat messages, got {value!r:.60}")
