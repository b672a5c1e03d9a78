"""LiveCodeBench code generation: release files, date windows, stdin and function-call problems.

Published layout (livecodebench/code_generation_lite): JSONL release files `test.jsonl`,
`test2.jsonl` ... `test6.jsonl`, one problem per line: question_title, question_content, platform,
question_id, contest_id, contest_date (ISO), starter_code, difficulty, public_test_cases (a JSON
string), private_test_cases (a JSON string, or base64 of zlib of a pickle of that JSON string),
metadata (a JSON string; `func_name` for function-call problems). Each test is
{"input", "output", "testtype": "stdin" | "functional"}.

The dataset is one release file or the folder holding them; `release` picks files as LiveCodeBench's
`version_tag` does (`release_vN`: test.jsonl .. testN.jsonl; `vN`: testN.jsonl only), and
`start_date` / `end_date` keep problems with start <= contest_date <= end, compared as LiveCodeBench
does (`load_code_generation_dataset`: dates parsed as midnight, so an end date excludes that day's
later contests). "LiveCodeBench v5 / v6" in reports are such windows.

Private tests are decoded without unpickling anything but a string: LiveCodeBench pickles one
JSON string (`pickle.loads(zlib.decompress(base64.b64decode(...)))` in its `CodeGenerationProblem`);
here the pickle's opcodes are checked against a list that can only build strings, the unpickler
refuses every global, and the result must be a `str` (`decode_private_tests`).

Tests become the code verifier's: stdin -> {"stdin", "stdout"}; functional -> {"call": func_name
(or "Solution.func_name" when the starter code defines `class Solution`), "args": one JSON value
per input line, "expected": the JSON output} (LiveCodeBench `grade_call_based`). The verifier
compares as LiveCodeBench does (`output_match: livecodebench`, exact call results) and runs
LiveCodeBench's import prelude before the code. Prompt: LiveCodeBench's generic chat prompt
(`lcb_runner/prompts/code_generation.py`, `get_generic_question_template_answer` with
`SYSTEM_MESSAGE_GENERIC`).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import pickletools
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt
from m2rl_trainer.eval.benchmarks.base import Adapter, collect, field_of, make_prompt, records, where_of
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.lcb_compare import PRELUDE
from m2rl_trainer.rewards.options import opt

SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests."
)
WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)
WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
    "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
)
RELEASE_FILES = ["test.jsonl", *(f"test{n}.jsonl" for n in range(2, 7))]
RELEASES = (
    *(f"release_v{n}" for n in range(1, 7)),
    *(f"v{n}" for n in range(1, 7)),
    "release_latest",
)
MAX_PRIVATE_BYTES = 1 << 30  # decompressed private tests of one problem (the largest are ~100 MiB)
# Opcodes that can only build a str (plus protocol framing and the memo): nothing callable.
_STRING_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "MEMOIZE",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
    }
)


@dataclass(frozen=True)
class LiveCodeBenchOptions:
    release: str | None = opt(
        None,
        "With a folder of release files: release_vN (test.jsonl .. testN.jsonl), vN (testN.jsonl) or "
        "release_latest (all); null: the dataset is one file.",
        choices=(*RELEASES, None),
    )
    start_date: str | None = opt(None, "Keep problems whose contest_date is on or after YYYY-MM-DD.")
    end_date: str | None = opt(
        None, "Keep problems whose contest_date is on or before YYYY-MM-DD (midnight)."
    )

    def check(self) -> str | None:
        for name in ("start_date", "end_date"):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                return f"{name}: expected YYYY-MM-DD, got {value!r}"
        return None


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} refused")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent id refused")


def decode_private_tests(text: str) -> Any:
    """LiveCodeBench's private_test_cases: JSON, or base64(zlib(pickle(JSON string))); ValueError else."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as error:
        raise ValueError("neither JSON nor base64") from error
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, MAX_PRIVATE_BYTES)
    except zlib.error as error:
        raise ValueError(f"not zlib data ({error})") from error
    if inflater.unconsumed_tail:
        raise ValueError(f"decompresses to more than {MAX_PRIVATE_BYTES} bytes")
    try:
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name not in _STRING_OPCODES:
                raise ValueError(f"the pickle holds {opcode.name}; only a pickled string is accepted")
        value = _StringsOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"not a pickled string ({error})") from error
    if not isinstance(value, str):
        raise ValueError(f"the pickle holds a {type(value).__name__}, not a JSON string")
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"the pickled string is not JSON ({error.msg})") from error


def _files(benchmark: BenchmarkConfig, options: LiveCodeBenchOptions) -> list[Path]:
    path = Path(benchmark.dataset)
    where = where_of(benchmark, path)
    if options.release is None:
        if path.is_dir():
            raise DatasetError(
                f"{where}: a folder of release files needs format_options.release (e.g. release_v6)"
            )
        return [path]
    if not path.is_dir():
        raise DatasetError(
            f"{where}: format_options.release {options.release!r} needs the folder of release files"
        )
    if options.release == "release_latest":
        names = [name for name in RELEASE_FILES if (path / name).is_file()]
    elif options.release.startswith("release_v"):
        names = RELEASE_FILES[: int(options.release.removeprefix("release_v"))]
    else:
        names = [RELEASE_FILES[int(options.release.removeprefix("v")) - 1]]
    missing = [name for name in names if not (path / name).is_file()]
    if missing or not names:
        raise DatasetError(f"{where}: release {options.release!r} needs {names}; missing: {missing}")
    return [path / name for name in names]


def _tests(raw: Any, where: str, name: str, func: str | None) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise DatasetError(f"{where}: field {name!r} must hold a list of tests")
    tests = []
    for i, test in enumerate(raw):
        at = f"{where}: field {name!r}[{i}]"
        if (
            not isinstance(test, dict)
            or not isinstance(test.get("input"), str)
            or not isinstance(test.get("output"), str)
        ):
            raise DatasetError(f"{at}: a test needs string 'input' and 'output'")
        kind = test.get("testtype")
        if kind == "stdin":
            tests.append({"stdin": test["input"], "stdout": test["output"]})
        elif kind == "functional":
            if func is None:
                raise DatasetError(f"{at}: a functional test needs metadata.func_name")
            try:
                args = [json.loads(line) for line in test["input"].split("\n")]
                expected = json.loads(test["output"])
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{at}: functional input/output must be JSON lines ({error.msg})"
                ) from error
            tests.append({"call": func, "args": args, "expected": expected})
        else:
            raise DatasetError(f"{at}: field 'testtype' must be 'stdin' or 'functional', got {kind!r}")
    return tests


def question_prompt(content: str, starter_code: str) -> list[dict[str, str]]:
    text = f"### Question:\n{content}\n\n"
    if starter_code:
        text += f"### Format: {WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        text += f"### Format: {WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    text += "### Answer: (use the provided format with backticks)\n\n"
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": text}]


def load(benchmark: BenchmarkConfig, options: LiveCodeBenchOptions) -> list[Prompt]:
    start = datetime.strptime(options.start_date, "%Y-%m-%d") if options.start_date else None
    end = datetime.strptime(options.end_date, "%Y-%m-%d") if options.end_date else None

    def rows() -> Any:
        for file in _files(benchmark, options):
            for location, row in records(file, where_of(benchmark, file)):
                yield f"{file.name} {location}", row

    def convert(index: int, location: str, row: Any) -> Prompt | None:
        at = f"{where_of(benchmark, Path(benchmark.dataset))} {location}"
        raw_date = field_of(row, "contest_date", at)
        try:
            contest = datetime.fromisoformat(raw_date)
        except ValueError as error:
            raise DatasetError(f"{at}: field 'contest_date': not an ISO date ({error})") from error
        contest = contest.replace(tzinfo=None)
        if (start is not None and contest < start) or (end is not None and contest > end):
            return None
        question_id = field_of(row, "question_id", at)
        content = field_of(row, "question_content", at)
        starter = field_of(row, "starter_code", at, allow_empty=True)
        try:
            metadata = json.loads(field_of(row, "metadata", at, allow_empty=True) or "{}")
        except json.JSONDecodeError as error:
            raise DatasetError(f"{at}: field 'metadata': not JSON ({error.msg})") from error
        func = metadata.get("func_name") if isinstance(metadata, dict) else None
        if func is not None and "class Solution" in starter:
            func = f"Solution.{func}"
        try:
            public = json.loads(field_of(row, "public_test_cases", at))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{at}: field 'public_test_cases': not JSON ({error.msg})") from error
        try:
            private = decode_private_tests(field_of(row, "private_test_cases", at, allow_empty=True))
        except ValueError as error:
            raise DatasetError(f"{at}: field 'private_test_cases': {error}") from None
        tests = _tests(public, at, "public_test_cases", func) + _tests(
            private, at, "private_test_cases", func
        )
        if not tests:
            raise DatasetError(f"{at}: no tests")
        meta = {
            "platform": row.get("platform"),
            "difficulty": row.get("difficulty"),
            "contest_date": raw_date,
            "tests": len(tests),
        }
        return make_prompt(
            benchmark,
            str(question_id),
            question_prompt(content, starter),
            {"tests": tests},
            "code",
            {"output_match": "livecodebench", "prelude": PRELUDE, "float_tolerance": 0.0, "memory_mb": 4096},
            meta,
        )

    return collect(benchmark, rows(), convert)


ADAPTER = Adapter(
    "livecodebench",
    "LiveCodeBench code generation release files (date windows; stdin and function-call tests)",
    ("code",),
    LiveCodeBenchOptions,
    load,
)
