"""Math: extract the final answer, then check it against the reference with math-verify.

The answer is extracted by the strategies named in `extract`, in order: the last `\\boxed{}` (or
`\\fbox{}`) with balanced braces, the last "Answer: ..." / "the final answer is ..." line, and
optionally the last number. A custom regex (`answer_regex`, one capture group) is tried first when
set. The extracted text and each gold answer are parsed by math-verify (LaTeX first, then plain
expressions) and compared symbolically; both being plain words compares them as text.

math-verify's own timeouts use `signal.alarm`, which fails outside the main thread. So this
function runs its own interval timer only on the main thread, and the scorer runs it in worker
processes (main thread) with a wall-clock limit that kills a worker stuck in C code.
Reference: a string or number, or a list of them (any one may match).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards.common import apply_think_gate, binary
from m2rl_trainer.rewards.options import CommonOptions, opt
from m2rl_trainer.rewards.types import CORRECT, INCORRECT, NO_ANSWER, TIMEOUT, ConfigError, Result

NAME = "math"
EXTRACTORS = ("boxed", "answer_line", "last_number")


@dataclass(frozen=True)
class MathOptions(CommonOptions):
    extract: tuple[str, ...] = opt(
        ("boxed", "answer_line"),
        "Answer extraction strategies, tried in order: boxed (last \\boxed{}), answer_line "
        "(last 'Answer: X' / 'the answer is X'), last_number (last number in the text).",
        choices=EXTRACTORS,
    )
    answer_regex: str | None = opt(
        None, "A regex with one capture group, tried before `extract`; its last match is the answer."
    )
    timeout_s: float = opt(
        5.0, "Wall-clock limit of one check in seconds; past it the verdict is timeout.", min=0.1, max=120.0
    )
    float_rounding: int = opt(6, "Decimal places numbers are rounded to before comparison.", min=0, max=15)

    def check(self) -> str | None:
        if not self.extract and self.answer_regex is None:
            return "option 'extract' is empty and no 'answer_regex' is set: no answer could ever be found"
        if self.answer_regex is not None:
            try:
                pattern = re.compile(self.answer_regex)
            except re.error as exc:
                return f"option 'answer_regex' does not compile: {exc}"
            if pattern.groups < 1:
                return "option 'answer_regex' needs one capture group around the answer"
        return None


def check_reference(reference: Any, options: MathOptions) -> None:
    golds = reference if isinstance(reference, list) else [reference]
    if not golds:
        raise ConfigError("math reference: empty list of answers")
    for gold in golds:
        if isinstance(gold, bool) or not isinstance(gold, str | int | float):
            raise ConfigError(
                f"math reference: expected a string or number (or a list of them), got {gold!r}"
            )
        if isinstance(gold, str) and not gold.strip():
            raise ConfigError("math reference: empty answer string")


# --- extraction -----------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(
    r"(?i)(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is\s*:?|:|=)\s*(?:\*\*)?\s*(?P<ans>.+?)\s*$"
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces (None if absent or unterminated)."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{" and text[i - 1] != "\\":
                depth += 1
            elif text[i] == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def _clean(answer: str) -> str:
    """Drop what surrounds an answer in prose: math delimiters, bold, a final period."""
    answer = answer.strip().strip("*").strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right):
            answer = answer[len(left) : -len(right)].strip()
    return answer.rstrip(".").strip()


def extract_answer(text: str, options: MathOptions) -> tuple[str | None, str | None]:
    """(answer, strategy that found it); (None, None) when no strategy finds one."""
    if options.answer_regex is not None:
        matches = list(re.finditer(options.answer_regex, text))
        if matches:
            return _clean(matches[-1].group(1)), "answer_regex"
    for strategy in options.extract:
        if strategy == "boxed":
            found = last_boxed(text)
            if found:
                return found, strategy
        elif strategy == "answer_line":
            for line in reversed(text.splitlines()):
                match = _ANSWER_LINE.search(line)
                if match:
                    inner = last_boxed(match["ans"])
                    answer = inner if inner else _clean(match["ans"])
                    if answer:
                        return answer, strategy
        elif strategy == "last_number":
            numbers = _NUMBER.findall(text)
            if numbers:
                return numbers[-1], strategy
    return None, None


# --- comparison -----------------------------------------------------------------------------------


class _CheckTimeout(BaseException):
    """BaseException: math-verify and sympy catch `Exception` and would turn a timeout into False."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """An interval timer on the main thread (signals only work there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _CheckTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_WORDS = re.compile(r"[A-Za-z][A-Za-z ]*[A-Za-z]")
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\{(.*)\}$")


def _as_words(answer: str) -> str | None:
    """The answer as lower-case words if it is only words (e.g. 'Monday', '\\text{yes}'), else None."""
    inner = answer.strip()
    match = _TEXT_WRAP.match(inner)
    if match:
        inner = match.group(1).strip()
    return inner.lower() if _WORDS.fullmatch(inner) else None


class _DropDisabledTimeoutWarning(logging.Filter):
    """math-verify warns on every process's first check that its timeouts are off: ours are on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropDisabledTimeoutWarning())


# LaTeX spellings math-verify does not know, mapped to ones it does.
_SYNONYMS = ((r"\varnothing", r"\emptyset"),)


def _parse(expr: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    for spelling, known in _SYNONYMS:
        expr = expr.replace(spelling, known)
    # Wrapped in \boxed{} so math-verify takes exactly this span; timeouts are ours (parsing_timeout=None).
    return parse(
        "\\boxed{" + expr + "}",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,  # type: ignore[arg-type]  # None disables math-verify's signal.alarm
    )


def equivalent(gold: str, answer: str, options: MathOptions) -> bool:
    """Symbolic equivalence by math-verify (words compare as case-insensitive text)."""
    from math_verify import verify

    gold_words, answer_words = _as_words(gold), _as_words(answer)
    if gold_words is not None and answer_words is not None:
        return gold_words == answer_words
    parsed_gold, parsed_answer = _parse(gold), _parse(answer)
    if not parsed_gold or not parsed_answer:
        return False
    return bool(
        verify(parsed_gold, parsed_answer, float_rounding=options.float_rounding, timeout_seconds=None)
    )


_INTEGER = re.compile(r"-?\d+")


def _decide_early(response: str, reference: Any, options: MathOptions) -> Result | tuple[str, str, list[str]]:
    """The verdict when it needs no math-verify (a format gate, no answer, an integer answer equal to
    an integer reference: math-verify says the same), else (answer, strategy, gold answers)."""
    text, gated = apply_think_gate(response, options)
    if gated is not None:
        return gated
    assert text is not None
    answer, strategy = extract_answer(text, options)
    if answer is None:
        return Result(0.0, NO_ANSWER, {"reason": f"no answer found by {list(options.extract)}"})
    assert strategy is not None
    golds = [str(g) for g in (reference if isinstance(reference, list) else [reference])]
    if _INTEGER.fullmatch(answer) and any(
        _INTEGER.fullmatch(g.strip()) and int(g) == int(answer) for g in golds
    ):
        return Result(1.0, CORRECT, {"extracted": answer, "strategy": strategy})
    return answer, strategy, golds


def quick_verdict(response: str, reference: Any, options: MathOptions) -> Result | None:
    """`verify`'s result when it is decided without math-verify, else None. The scorer calls this in
    its own process first: on RL batches with integer answers most checks end here, and only the
    rest go to the worker processes (where math-verify's parsing runs under a wall-clock limit).
    A user's `answer_regex` is never run here: only in a worker can a pathological one be stopped."""
    if options.answer_regex is not None:
        return None
    decided = _decide_early(response, reference, options)
    return decided if isinstance(decided, Result) else None


def verify(response: str, reference: Any, options: MathOptions) -> Result:
    """Score one math response: 1 if its extracted final answer equals a reference answer."""
    decided = _decide_early(response, reference, options)
    if isinstance(decided, Result):
        return decided
    answer, strategy, golds = decided
    details: dict[str, Any] = {"extracted": answer, "strategy": strategy}
    try:
        with _time_limit(options.timeout_s):
            ok = any(equivalent(gold, answer, options) for gold in golds)
    except _CheckTimeout:
        return Result(0.0, TIMEOUT, {**details, "reason": f"check exceeded {options.timeout_s} s"})
    return binary(ok, CORRECT, INCORRECT, details)
