"""The M2RL study's training data as it ships: rows of NVIDIA's Nemotron-3-Nano RL blend.

The study trains on `train_complete.jsonl` of nvidia/Nemotron-3-Nano-RL-Training-Blend and turns
each row into a prompt, a label and a reward type in Mosi-AI/M2RL `data/process_rl_data.py`
(`process`). This module does the same for a domain whose config says `format: nemotron`:

  row field                                   used as
  responses_create_params.input               the chat messages (the prompt)
  dataset                                     the route: study domain, verifier, prompt prefix
  expected_answer                             math answer / science letter
  prompt, instruction_id_list, kwargs         instruction-following reference (IFEvalG)
  verifier_metadata.unit_tests.inputs/outputs code tests (stdin -> stdout)
  ground_truth, responses_create_params.tools agent tasks: reference tool calls and the tools shown

Routes (`DATASETS`) and prompt prefixes are the study's: math rows get "Solve the following math
problem step by step. The last line of your response should be of the form Answer: $Answer ..."
before the first message; science rows have "Answer the following multiple choice question." turned
into "... question step by step."; IF and code rows are used as they are. The study drops
`structured_outputs` rows, and so does this format. `workbench` (agent) rows are tasks of NeMo Gym's
workplace assistant (m2rl_trainer.agent): the prompt is the row's messages (system and user turn),
the reference holds the ground-truth tool calls (`ground_truth`, checked against the environment's
tools) and the tools the prompt shows (`responses_create_params.tools`; the environment's own when
the row has none); the domain's verifier is the environment, `workplace_assistant`.

A domain takes the rows of the study domains in `format_options.domains` (default: every study
domain scored by the domain's verifier), in file order; rows routed elsewhere are skipped, so one
blend file serves every domain of a mixed run. Verifier defaults follow the study (IF: the IFEvalG
instruction table; code: 20 sampled tests per problem); the domain's own `verifier_options` win.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2rl_trainer.config import DomainConfig
from m2rl_trainer.data.datasets import DatasetError, Message, Prompt, read_records

MATH_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
MCQA_OPENING = "Answer the following multiple choice question."
MCQA_STEP_BY_STEP = "Answer the following multiple choice question step by step."


@dataclass(frozen=True)
class Route:
    """Where a row of one `dataset` value goes."""

    domain: str  # the study's domain: math, science, if, code, agent, structured_outputs
    verifier: str | None  # None: no verifier here (agent, structured_outputs)
    verifier_defaults: dict[str, Any] = field(default_factory=dict)


DATASETS: dict[str, Route] = {
    "nano_v3_sft_profiled_dapo17k": Route("math", "math"),
    "nano_v3_sft_profiled_skywork_no_omni": Route("math", "math"),
    "nano_v3_sft_profiled_stem_mcqa": Route("science", "multiple_choice"),
    # study: rm_type "ifevalg" (slime/rewards/IFEvalG)
    "nano_v3_sft_profiled_instruction_following": Route("if", "ifeval", {"registry": "ifevalg"}),
    # study: rm_type "unit_test", 20 tests sampled when there are more (slime/rewards/code.py)
    "nano_v3_sft_profiled_comp_coding_50tests": Route("code", "code", {"max_tests": 20}),
    # study: rm_type "workbench", rewarded by the workplace assistant's state replay (agent/)
    "nano_v3_sft_profiled_workbench": Route("agent", "workplace_assistant"),
    "nano_v3_sft_profiled_structured_outputs": Route("structured_outputs", None),
}
STUDY_DOMAINS = ("math", "science", "if", "code", "agent", "structured_outputs")
OPTION_KEYS = ("domains",)


def _chosen_domains(domain: DomainConfig) -> list[str]:
    chosen = domain.format_options.get("domains")
    if chosen is None:
        return sorted({r.domain for r in DATASETS.values() if r.verifier == domain.verifier})
    return list(chosen)


def option_problems(domain: DomainConfig) -> list[str]:
    """What is wrong with a nemotron domain's format options (messages without the field path)."""
    problems = [
        f"unknown option {k!r} (known: {', '.join(OPTION_KEYS)})"
        for k in domain.format_options
        if k not in OPTION_KEYS
    ]
    chosen = domain.format_options.get("domains")
    if chosen is not None and (
        not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen)
    ):
        return [*problems, "domains: must be a non-empty list of study domains"]
    names = _chosen_domains(domain)
    if not names:
        problems.append(
            f"no study domain is scored by verifier {domain.verifier!r}; the blend's verifiers are "
            "math, multiple_choice, ifeval, code and workplace_assistant (agent)"
        )
    for name in names:
        if name not in STUDY_DOMAINS:
            problems.append(f"domains: unknown study domain {name!r}; known: {', '.join(STUDY_DOMAINS)}")
        elif name == "structured_outputs":
            problems.append("domains: the study drops structured_outputs rows; there is no verifier for them")
        else:
            verifier = next(r.verifier for r in DATASETS.values() if r.domain == name)
            if verifier != domain.verifier:
                problems.append(
                    f"domains: {name!r} rows are scored by verifier {verifier!r}, not {domain.verifier!r}"
                )
    return problems


# ---- rows ------------------------------------------------------------------------------------------


def routed_rows(path: Path, where: str) -> Iterator[tuple[str, int, Mapping[str, Any], Route]]:
    """(location, 0-based record index, row, route) for every row; unknown `dataset` is an error."""
    for index, (location, row) in enumerate(read_records(path, where)):
        if not isinstance(row, Mapping):
            raise DatasetError(f"{where} {location}: expected a JSON object, got {type(row).__name__}")
        name = row.get("dataset")
        if not isinstance(name, str):
            raise DatasetError(f"{where} {location}: field 'dataset' (the route) is missing or not a string")
        route = DATASETS.get(name)
        if route is None:
            raise DatasetError(
                f"{where} {location}: field 'dataset': unknown value {name!r}; known: {sorted(DATASETS)}"
            )
        yield location, index, row, route


def _field(row: Mapping[str, Any], path: str, where: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise DatasetError(f"{where}: field {path!r} is missing or null")
        value = value[part]
    return value


def _messages(row: Mapping[str, Any], where: str) -> list[Message]:
    raw = _field(row, "responses_create_params.input", where)
    if not isinstance(raw, list) or not raw:
        raise DatasetError(
            f"{where}: field 'responses_create_params.input' must be a non-empty list of messages"
        )
    messages: list[Message] = []
    for i, item in enumerate(raw):
        at = f"{where}: field 'responses_create_params.input[{i}]'"
        if not isinstance(item, Mapping) or not isinstance(item.get("role"), str):
            raise DatasetError(f"{at}: a message needs a string 'role'")
        content = item.get("content")
        if isinstance(content, list):  # Responses API content parts: [{"type": "input_text", "text": ...}]
            texts = [p.get("text") for p in content if isinstance(p, Mapping)]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise DatasetError(f"{at}.content: only text parts are supported")
            content = "".join(texts)  # type: ignore[arg-type]
        if not isinstance(content, str):
            raise DatasetError(f"{at}.content: must be a string or a list of text parts")
        messages.append({"role": item["role"], "content": content})
    return messages


_TOOL_LISTS: dict[str, list[dict[str, Any]]] = {}  # one shared list per distinct tool set (rows repeat it)


def _agent_reference(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """{"ground_truth": [{"name", "arguments": {...}}], "tools": [schemas]} of a workbench row."""
    import json

    from m2rl_trainer.agent import parse_ground_truth
    from m2rl_trainer.agent.workplace import schemas

    try:
        calls = parse_ground_truth(_field(row, "ground_truth", where), "field 'ground_truth'")
    except ValueError as error:
        raise DatasetError(f"{where}: {error}") from None
    tools = row["responses_create_params"].get("tools")
    if tools is None:
        tools = schemas()
    if not isinstance(tools, list) or not all(
        isinstance(t, Mapping) and isinstance(t.get("name"), str) for t in tools
    ):
        raise DatasetError(
            f"{where}: field 'responses_create_params.tools' must be a list of tool schemas with a name"
        )
    key = json.dumps(tools, sort_keys=True)
    return {
        "ground_truth": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "tools": _TOOL_LISTS.setdefault(key, [dict(t) for t in tools]),
    }


def to_prompt(domain: DomainConfig, index: int, row: Mapping[str, Any], route: Route, where: str) -> Prompt:
    """One row as the study uses it: prefixed messages and the reference of its reward type."""
    messages = _messages(row, where)
    first = messages[0]["content"]
    reference: Any
    if route.domain == "math":
        first = MATH_PREFIX + first
        reference = str(_field(row, "expected_answer", where)).strip()
    elif route.domain == "science":
        if not first.startswith(MCQA_OPENING):
            raise DatasetError(
                f"{where}: field 'responses_create_params.input[0].content': a stem_mcqa prompt must start "
                f"with {MCQA_OPENING!r} (the study replaces it with {MCQA_STEP_BY_STEP!r})"
            )
        first = MCQA_STEP_BY_STEP + first[len(MCQA_OPENING) :]
        reference = str(_field(row, "expected_answer", where)).strip()
    elif route.domain == "if":
        reference = {
            "instruction_id_list": _field(row, "instruction_id_list", where),
            "kwargs": _field(row, "kwargs", where),
            "prompt": _field(row, "prompt", where),
        }
    elif route.domain == "code":
        tests = _field(row, "verifier_metadata.unit_tests", where)
        if not isinstance(tests, Mapping):
            raise DatasetError(f"{where}: field 'verifier_metadata.unit_tests' must be an object")
        if tests.get("fn_name") is not None:
            raise DatasetError(
                f"{where}: field 'verifier_metadata.unit_tests.fn_name': function-call tests are not "
                "used by the study (its sandbox runs every test as stdin -> stdout)"
            )
        reference = {
            "inputs": _field(row, "verifier_metadata.unit_tests.inputs", where),
            "outputs": _field(row, "verifier_metadata.unit_tests.outputs", where),
        }
    elif route.domain == "agent":
        reference = _agent_reference(row, where)
    else:  # option_problems keeps structured_outputs from getting here
        raise DatasetError(f"{where}: {route.domain} rows cannot be used for training")
    messages[0] = {"role": messages[0]["role"], "content": first}
    return Prompt(
        domain=domain.name,
        id=str(index),
        prompt=messages,
        reference=reference,
        verifier=domain.verifier,
        verifier_options={**route.verifier_defaults, **domain.verifier_options},
        meta={
            "dataset": row["dataset"],
            **(
                {"category": row["category"]}
                if route.domain == "agent" and isinstance(row.get("category"), str)
                else {}
            ),
        },
    )


def load_domain(domain: DomainConfig) -> list[Prompt]:
    """The domain's rows of a blend file, as prompts; at most `max_samples` (the first ones)."""
    path = Path(domain.dataset)
    where = f"domain {domain.name!r}: {path}"
    problems = option_problems(domain)
    if problems:
        raise DatasetError(f"{where}: format_options: {'; '.join(problems)}")
    chosen = set(_chosen_domains(domain))
    rows = (
        (location, index, row, route)
        for location, index, row, route in routed_rows(path, where)
        if route.domain in chosen
    )
    try:
        prompts = [
            to_prompt(domain, index, row, route, f"{where} {location}")
            for location, index, row, route in itertools.islice(rows, domain.max_samples)
        ]
    except OSError as error:
        raise DatasetError(f"{where}: cannot read dataset ({error.strerror or error})") from error
    if not prompts:
        raise DatasetError(f"{where}: no rows of the study domain(s) {sorted(chosen)}")
    return prompts


# ---- `m2rl-train data` -----------------------------------------------------------------------------


def inspect(path: Path) -> dict[str, Any]:
    """Rows per `dataset` value with their study domain and verifier, and the fields seen."""
    where = str(path)
    datasets: dict[str, int] = {}
    fields: dict[str, int] = {}
    total = 0
    for _location, _index, row, _route in routed_rows(path, where):
        name = str(row["dataset"])
        datasets[name] = datasets.get(name, 0) + 1
        for key in row:
            fields[key] = fields.get(key, 0) + 1
        total += 1
    domains: dict[str, int] = {}
    for name, count in datasets.items():
        domains[DATASETS[name].domain] = domains.get(DATASETS[name].domain, 0) + count
    return {
        "file": where,
        "rows": total,
        "datasets": {
            name: {"rows": n, "domain": DATASETS[name].domain, "verifier": DATASETS[name].verifier}
            for name, n in sorted(datasets.items())
        },
        "domains": dict(sorted(domains.items())),
        "fields": dict(sorted(fields.items())),
    }


def split(path: Path, out: Path) -> dict[str, int]:
    """Write OUT/<study domain>.jsonl with the file's rows unchanged, as M2RL's process_rl_data splits them.

    Math is dapo17k + skywork_no_omni in file order; structured_outputs rows are dropped (the study
    does); agent rows go to agent.jsonl. Every row is checked as training would read it first, and
    the files appear only when all are complete (written to hidden names, then renamed).
    """
    import json
    import os

    where = str(path)
    probe = {name: DomainConfig(name=name, dataset=str(path), verifier="") for name in STUDY_DOMAINS}
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    files: dict[str, Any] = {}  # study domain -> open hidden file (streamed: the blend is large)
    try:
        for location, index, row, route in routed_rows(path, where):
            if route.domain == "structured_outputs":
                continue
            if route.verifier is not None:  # the same checks training does, so a split file loads
                to_prompt(probe[route.domain], index, row, route, f"{where} {location}")
            if route.domain not in files:
                files[route.domain] = (out / f".{route.domain}.jsonl.partial").open("w", encoding="utf-8")
            files[route.domain].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[route.domain] = counts.get(route.domain, 0) + 1
        for handle in files.values():
            handle.close()
        for name in files:
            os.replace(out / f".{name}.jsonl.partial", out / f"{name}.jsonl")
    finally:
        for name, handle in files.items():
            handle.close()
            (out / f".{name}.jsonl.partial").unlink(missing_ok=True)
    return dict(sorted(counts.items()))
