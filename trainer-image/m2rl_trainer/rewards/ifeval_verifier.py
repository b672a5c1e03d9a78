"""Instruction following: IFEval, IFEvalG or IFBench instructions, strict or loose.

Three instruction tables (option `registry`):
  ifeval   Google's IFEval, 25 ids, as packaged by if-verifiable (Apache-2.0)
  ifevalg  IFEval plus AllenAI's IFEvalG additions (`rewards/ifevalg`): the M2RL study's IF reward
  ifbench  IFBench's 58 ids, as packaged by if-verifiable (its NLTK data: `rewards/nltk_data`)
This module only validates references and picks the reward. Strict checks the response as is;
loose also accepts it after dropping the first and/or last line or markdown asterisks (IFEval's
loose variants).
Reward: 1 when every instruction is followed (`scoring: all`, the M2RL study) or the fraction.

Reference (the fields of an IFEval row):
  {"instruction_id_list": ["punctuation:no_comma", ...], "kwargs": [{...}, ...], "prompt": "..."}
`kwargs` holds one object per instruction (null values are ignored, as in the IFEval data).

Two silent failure modes of the library are turned into configuration errors here: an unknown
instruction id (the library skips it) and a missing argument (the library then draws a random
one, so the reward would check a constraint nobody asked for).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards.common import apply_think_gate
from m2rl_trainer.rewards.options import CommonOptions, opt
from m2rl_trainer.rewards.types import CORRECT, INCORRECT, NO_ANSWER, ConfigError, Result

NAME = "ifeval"


REGISTRIES = ("ifeval", "ifevalg", "ifbench")
# IFBench instructions that need NLTK data no registry package ships (see rewards/nltk_data.py).
NEEDS_TAGGER = frozenset({"words:start_verb"})


@dataclass(frozen=True)
class IFEvalOptions(CommonOptions):
    registry: str = opt(
        "ifeval",
        "Instruction table: ifeval (Google's 25), ifevalg (IFEval + AllenAI's IFEvalG additions, "
        "the M2RL study's IF reward) or ifbench (IFBench's 58).",
        choices=REGISTRIES,
    )
    mode: str = opt(
        "strict",
        "strict: the response as is; loose: IFEval's loose variants also count.",
        choices=("strict", "loose"),
    )
    scoring: str = opt(
        "all",
        "all: 1 only if every instruction is followed (the study); fraction: share followed.",
        choices=("all", "fraction"),
    )
    timeout_s: float = opt(
        10.0,
        "Wall-clock limit of one check in seconds (language detection on long "
        "texts is the slow part); past it the verdict is timeout.",
        min=0.1,
        max=120.0,
    )


@functools.cache
def registry(name: str = "ifeval") -> Mapping[str, Any]:
    """Instruction id -> checker class of table `name` (imports take 2-5 s, hence lazy)."""
    if name == "ifbench":
        from m2rl_trainer.rewards.nltk_data import ensure_nltk_data

        ensure_nltk_data()  # before the import: it calls nltk.download for anything it cannot find
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as IFBENCH

        return IFBENCH
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    if name == "ifevalg":
        from m2rl_trainer.rewards.ifevalg import extra_instructions

        return {**INSTRUCTION_DICT, **extra_instructions()}
    if name != "ifeval":
        raise ConfigError(f"ifeval: unknown instruction registry {name!r}; known: {list(REGISTRIES)}")
    return INSTRUCTION_DICT


def register_checkers_only_package() -> None:
    """In a worker process we own: import if-verifiable's checkers without its package __init__.

    The package __init__ imports its Hugging Face dataset loader (`datasets`, 1.3-3 s of imports),
    which checking never uses. Registering the bare package first skips that. Only for worker
    processes: elsewhere `import if_verifiable` must keep its full API.
    """
    if "if_verifiable" in sys.modules:
        return
    spec = importlib.util.find_spec("if_verifiable")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("if_verifiable")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["if_verifiable"] = package


def _normalise(reference: Any) -> tuple[list[str], list[dict[str, Any]], str]:
    if not isinstance(reference, Mapping):
        raise ConfigError(
            f"ifeval reference: expected an object with 'instruction_id_list', got {reference!r}"
        )
    unknown = sorted(set(reference) - {"instruction_id_list", "kwargs", "prompt", "key"})
    if unknown:
        raise ConfigError(f"ifeval reference: unknown field(s) {unknown}")
    ids = reference.get("instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError("ifeval reference: 'instruction_id_list' must be a non-empty list of strings")
    kwargs = reference.get("kwargs")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if (
        not isinstance(kwargs, list)
        or len(kwargs) != len(ids)
        or not all(isinstance(k, Mapping) for k in kwargs)
    ):
        raise ConfigError("ifeval reference: 'kwargs' must be a list with one object per instruction")
    prompt = reference.get("prompt", "")
    if not isinstance(prompt, str):
        raise ConfigError("ifeval reference: 'prompt' must be a string")
    cleaned = [{k: v for k, v in kw.items() if v is not None} for kw in kwargs]
    return ids, cleaned, prompt


def check_reference(reference: Any, options: IFEvalOptions) -> None:
    ids, kwargs, _prompt = _normalise(reference)
    table = registry(options.registry)
    for instruction_id, kw in zip(ids, kwargs, strict=True):
        checker_class = table.get(instruction_id)
        if checker_class is None:
            raise ConfigError(
                f"ifeval reference: unknown instruction id {instruction_id!r} in the "
                f"{options.registry} table; known: {sorted(table)}"
            )
        if options.registry == "ifbench" and instruction_id in NEEDS_TAGGER:
            from m2rl_trainer.rewards.nltk_data import TAGGER, tagger_available

            if not tagger_available():
                raise ConfigError(
                    f"ifeval reference: instruction {instruction_id!r} needs NLTK's {TAGGER} data, "
                    "which no installable package ships; copy that folder from an NLTK installation "
                    "into $M2RL_NLTK_DATA (docs/verifiers.md), or leave such rows out (benchmark "
                    "format_options.exclude_instructions)"
                )
        checker = checker_class(instruction_id)
        expected = checker.get_instruction_args_keys()
        missing = [key for key in expected if key not in kw]
        extra = sorted(set(kw) - set(expected))
        if missing or extra:
            raise ConfigError(
                f"ifeval reference: instruction {instruction_id!r} takes arguments {expected}; "
                f"missing {missing}, unexpected {extra}"
            )
        try:
            checker.build_description(**kw)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"ifeval reference: instruction {instruction_id!r}: {exc}") from exc


@functools.cache
def _prepare_process() -> None:
    from langdetect import DetectorFactory

    from m2rl_trainer.rewards.nltk_data import ensure_nltk_data

    ensure_nltk_data()
    # langdetect is randomised; a fixed seed makes the language checks reproducible across processes.
    DetectorFactory.seed = 0


def warm_up() -> None:
    """Import the checkers and load the data they use (Punkt, language profiles) now."""
    from langdetect import detect

    registry()
    _prepare_process()
    detect("This sentence loads the language profiles.")


def verify(response: str, reference: Any, options: IFEvalOptions) -> Result:
    """Check every instruction of the reference; reward per `scoring`, strict or loose per `mode`."""
    text, gated = apply_think_gate(response, options)
    if gated is not None:
        return gated
    assert text is not None
    if not text.strip():
        return Result(0.0, NO_ANSWER, {"reason": "empty response"})
    _prepare_process()
    from if_verifiable.common import evaluate_instructions

    ids, kwargs, prompt = _normalise(reference)
    results, _scores = evaluate_instructions(
        response=text,
        instruction_id_list=ids,
        kwargs_list=kwargs,
        prompt=prompt,
        instruction_registry=dict(registry(options.registry)),
    )
    followed = [r.loose_pass if options.mode == "loose" else r.strict_pass for r in results]
    fraction = sum(followed) / len(ids)  # len(ids): a skipped instruction must count as not followed
    all_followed = len(results) == len(ids) and all(followed)
    reward = fraction if options.scoring == "fraction" else float(all_followed)
    details = {
        "instructions": [
            {"id": r.instruction_id, "strict": r.strict_pass, "loose": r.loose_pass} for r in results
        ],
        "followed": sum(followed),
        "total": len(ids),
    }
    return Result(reward, CORRECT if all_followed else INCORRECT, details)
