"""Self-verification: each model as a generative judge of given responses, per domain.

A judge reads a question and a response and says whether the response is correct, in one of two modes:

- outcome: it sees only the response's outcome, the text after the last `</think>` (the study's models
  think first; its format gate requires the tag), or the evaluation's extracted answer when there is no
  tag, or the whole response when neither exists (counted as `withoutOutcome`);
- reasoning: it sees the full response, reasoning included.

Its verdict is the last "Verdict: CORRECT" / "Verdict: INCORRECT" in its reply; a reply without one
counts as a wrong judgement (`unparsed`). The truth is the evaluation's verifier: a response is correct
when its reward is 1. Judge accuracy is the fraction of right judgements; beside it the true-positive
and true-negative rates, since correct and wrong responses are rarely balanced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

THINK_END = "</think>"
_VERDICT = re.compile(r"verdict\s*[:：]\s*\**\s*(correct|incorrect)\b", re.IGNORECASE)

TEMPLATES = {
    "outcome": (
        "You are checking the final answer of a proposed solution.\n\nProblem:\n{question}\n\n"
        "Final answer of the proposed solution:\n{response}\n\n"
        "Is this final answer correct? Reason briefly, then end your reply with exactly one line: "
        '"Verdict: CORRECT" or "Verdict: INCORRECT".'
    ),
    "reasoning": (
        "You are checking a proposed solution, reasoning included.\n\nProblem:\n{question}\n\n"
        "Proposed solution:\n{response}\n\n"
        "Is the solution correct? Reason briefly, then end your reply with exactly one line: "
        '"Verdict: CORRECT" or "Verdict: INCORRECT".'
    ),
}


@dataclass(frozen=True)
class Judged:
    """One response to judge: its domain, ids, texts and the verifier's truth."""

    domain: str
    benchmark: str
    prompt_id: str
    sample: int
    question: str
    response: str
    answer: str | None  # the evaluation's extracted answer, if its verifier has one
    correct: bool


def outcome_of(response: str, answer: str | None) -> tuple[str, bool]:
    """(the text the outcome mode shows, whether an outcome could be told apart from the reasoning)."""
    if THINK_END in response:
        return response.rsplit(THINK_END, 1)[1].strip(), True
    if answer is not None:
        return answer, True
    return response, False


def judge_prompt(item: Judged, mode: str) -> str:
    text = outcome_of(item.response, item.answer)[0] if mode == "outcome" else item.response
    return TEMPLATES[mode].format(question=item.question, response=text)


def parse_verdict(reply: str) -> bool | None:
    """True (CORRECT), False (INCORRECT), or None when the reply gives no verdict."""
    found = _VERDICT.findall(reply)
    return None if not found else found[-1].lower() == "correct"


def question_text(prompt: Any) -> str:
    """A benchmark prompt as text: the string itself, or the chat messages' contents in order."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt if m.get("role") != "system")


def judge_accuracy(items: Sequence[Judged], verdicts: Sequence[bool | None]) -> dict[str, Any]:
    """Accuracy, true-positive and true-negative rates, counts; an unparsed verdict is a wrong one."""
    n = len(items)
    right = sum(v is not None and v == i.correct for i, v in zip(items, verdicts, strict=True))
    positives = [v for i, v in zip(items, verdicts, strict=True) if i.correct]
    negatives = [v for i, v in zip(items, verdicts, strict=True) if not i.correct]
    return {
        "responses": n,
        "correctResponses": len(positives),
        "accuracy": right / n if n else 0.0,
        "truePositiveRate": sum(v is True for v in positives) / len(positives) if positives else None,
        "trueNegativeRate": sum(v is False for v in negatives) / len(negatives) if negatives else None,
        "unparsed": sum(v is None for v in verdicts),
    }


def by_domain(
    items: Sequence[Judged], verdicts: Sequence[bool | None], domains: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """judge_accuracy per domain, plus "all" over every item."""
    out: dict[str, Mapping[str, Any]] = {}
    for domain in domains:
        pairs = [(i, v) for i, v in zip(items, verdicts, strict=True) if i.domain == domain]
        out[domain] = judge_accuracy([i for i, _ in pairs], [v for _, v in pairs])
    out["all"] = judge_accuracy(items, verdicts)
    return out
