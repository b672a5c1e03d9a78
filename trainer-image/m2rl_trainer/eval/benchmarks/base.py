"""What every benchmark adapter shares: the adapter record, reading files, row fields, ids.

An adapter turns the rows of a benchmark as it is published into `Prompt`s (prompt text in the
study's template, the reference its verifier needs, the verifier and its options), checks every
row it uses and names file, line or row, and field in each error. Its options are a frozen
dataclass of documented `opt()` fields, parsed like verifier options (unknown keys, types,
choices and ranges are errors that name the field).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt, read_records
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.options import parse_options
from m2rl_trainer.rewards.types import ConfigError

# Records larger than this many bytes in one CSV field are refused (csv's default is 128 KiB;
# GPQA's longest question is far below this, LiveCodeBench ships JSONL, not CSV).
_CSV_FIELD_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class NoOptions:
    """Adapters without options still reject unknown keys."""


def parse_format_options(adapter_name: str, options_type: type[Any], raw: Mapping[str, Any]) -> Any:
    """The adapter's options from `format_options`; ValueError names the option."""
    try:
        return parse_options(options_type, raw, adapter_name)
    except ConfigError as error:
        raise ValueError(
            str(error).replace(f"verifier {adapter_name!r}: ", f"format {adapter_name!r}: ")
        ) from None


@dataclass(frozen=True)
class Adapter:
    """One published benchmark format.

    verifiers: the verifiers its references are written for; the first is the default (a
        benchmark's `verifier` may be left empty).
    load: (benchmark config, parsed options) -> prompts, every row checked.
    figures: extra per-benchmark figures from the scored sample records and the prompts by id
        (e.g. IFEval's four), or None.
    """

    name: str
    summary: str
    verifiers: tuple[str, ...]
    options_type: type[Any]
    load: Callable[[BenchmarkConfig, Any], list[Prompt]]
    figures: Callable[[list[dict[str, Any]], dict[str, Prompt]], dict[str, float]] | None = None


def where_of(benchmark: BenchmarkConfig, path: Path | str | None = None) -> str:
    return f"benchmark {benchmark.name!r}: {path if path is not None else benchmark.dataset}"


def records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    """(location, record) of a .jsonl / .json / .parquet / .csv file ("line N" / "row N ...")."""
    if path.suffix != ".csv":
        yield from read_records(path, where)
        return
    if not path.is_file():
        raise DatasetError(
            f"{where}: cannot read dataset: file {'is a directory' if path.is_dir() else 'does not exist'}"
        )
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            start = 2  # line 1 holds the header
            for number, row in enumerate(reader, start=1):
                if None in row:  # more cells than header names
                    raise DatasetError(f"{where} row {number} (line {start}): more cells than columns")
                # csv rows may span lines (GPQA's questions hold newlines): name both.
                yield f"row {number} (line {start})", row
                start = reader.line_num + 1
    except csv.Error as error:
        raise DatasetError(f"{where}: not valid CSV: {error}") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from error


_MISSING = object()


def field_of(
    record: Any, name: str, where: str, *, kind: type | tuple[type, ...] = str, allow_empty: bool = False
) -> Any:
    """`record[name]`, checked: present, not null, of `kind`, not an empty string."""
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
    value = record.get(name, _MISSING)
    if value is _MISSING:
        present = ", ".join(map(str, record)) or "none"
        raise DatasetError(f"{where}: missing field {name!r} (fields present: {present})")
    if value is None:
        raise DatasetError(f"{where}: field {name!r} is null")
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise DatasetError(f"{where}: field {name!r} must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise DatasetError(f"{where}: field {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    if isinstance(value, str) and not allow_empty and not value.strip():
        raise DatasetError(f"{where}: field {name!r} is empty")
    return value


def first_field(record: Any, names: tuple[str, ...], where: str, **kwargs: Any) -> Any:
    """The first of `names` the record has (published copies of one benchmark spell columns differently)."""
    if isinstance(record, Mapping):
        for name in names:
            if name in record:
                return field_of(record, name, where, **kwargs)
    present = ", ".join(map(str, record)) if isinstance(record, Mapping) else type(record).__name__
    raise DatasetError(f"{where}: missing field {' / '.join(map(repr, names))} (fields present: {present})")


def choice_field(record: Any, name: str, where: str, known: Collection[str], what: str) -> str:
    """`field_of`, and one of `known`; `what` names the kind of value in the error ("type")."""
    value = field_of(record, name, where)
    if value not in known:
        raise DatasetError(f"{where}: field {name!r}: unknown {what} {value!r}; known: {list(known)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "a boolean",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def id_text(value: Any, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{where}: field {name!r} (the id) must be a string or an integer")
    return str(value)


def seeded_int(*parts: object) -> int:
    """A stable 64-bit integer from the parts (SHA-256), independent of Python's hash seed."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def collect(
    benchmark: BenchmarkConfig,
    rows: Iterator[tuple[str, Any]],
    convert: Callable[[int, str, Any], Prompt | None],
) -> list[Prompt]:
    """Prompts from (location, row); `convert(index, location, row)` (index: 0-based record number,
    the id of rows without one) returns None for rows a filter leaves out.

    Ids must be unique; the result must not be empty (a filter that removes every row is an error).
    """
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    where = where_of(benchmark)
    for index, (location, row) in enumerate(rows):
        prompt = convert(index, location, row)
        if prompt is None:
            continue
        if prompt.id in seen:
            raise DatasetError(f"{where} {location}: duplicate id {prompt.id!r} (first at {seen[prompt.id]})")
        seen[prompt.id] = location
        prompts.append(prompt)
    if not prompts:
        raise DatasetError(f"{where}: no prompts (an empty file, or every row filtered out)")
    return prompts


def make_prompt(
    benchmark: BenchmarkConfig,
    prompt_id: str,
    text: str | list[dict[str, str]],
    reference: Any,
    verifier: str,
    verifier_defaults: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Prompt:
    """A benchmark prompt; the benchmark's verifier options win over the adapter's defaults.

    A row scored by another verifier than the benchmark's (HLE's two answer types) gets only the
    benchmark's format-gate options, which every verifier has.
    """
    if verifier == (benchmark.verifier or verifier):
        options = {**(verifier_defaults or {}), **benchmark.verifier_options}
    else:
        common = {
            k: v for k, v in benchmark.verifier_options.items() if k in ("require_think_close", "strip_think")
        }
        options = {**(verifier_defaults or {}), **common}
    return Prompt(
        domain=benchmark.name,
        id=prompt_id,
        prompt=text,
        reference=reference,
        verifier=verifier,
        verifier_options=options,
        meta=dict(meta or {}),
    )
