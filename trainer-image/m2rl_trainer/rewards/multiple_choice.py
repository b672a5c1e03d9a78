"""Multiple choice (GPQA, MMLU style): extract the answer letter, compare it with the reference.

Patterns are tried from the most explicit to the least, and within a pattern the last match in
the text wins (models restate options while reasoning, then conclude):
  1. "Answer: X" / "Final answer: (X)" / "**Answer:** X"
  2. "the answer is X" / "the correct answer is (X)" / "the correct option is X"
  3. \\boxed{X}
  4. "(X)" (a parenthesised letter)
  5. a last standalone capital letter (when `fallback_last_letter`), skipping the pronoun "I"
     and the article "A" when a lower-case word that is not a verb follows ("I think", "A key").
Letters outside the allowed options (A.. the `num_choices`-th letter, at most J) never count.
Reference: the correct letter, e.g. "C".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards.common import apply_think_gate, binary
from m2rl_trainer.rewards.options import CommonOptions, opt
from m2rl_trainer.rewards.types import CORRECT, INCORRECT, NO_ANSWER, ConfigError, Result

NAME = "multiple_choice"
ALL_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MultipleChoiceOptions(CommonOptions):
    num_choices: int = opt(
        10, "Number of options; the letters A.. up to the n-th (at most J) count.", min=2, max=10
    )
    fallback_last_letter: bool = opt(
        True, "When no explicit pattern matches, take the last standalone capital letter."
    )

    @property
    def letters(self) -> str:
        return ALL_LETTERS[: self.num_choices]


def check_reference(reference: Any, options: MultipleChoiceOptions) -> None:
    letter = reference.strip().upper() if isinstance(reference, str) else ""
    if len(letter) != 1 or letter not in options.letters:
        raise ConfigError(
            f"multiple_choice reference: expected one letter of {options.letters!r}, got {reference!r}"
        )


_L = r"[A-Ja-j]"
_EXPLICIT = [
    # 1. "Answer: X", "Final Answer: (X)", "**Answer**: X", "answer - X"
    re.compile(
        rf"(?i)\banswer\s*(?:\*\*)?\s*(?:is)?\s*[:：\-]\s*(?:\*\*)?\s*(?:option\s*)?[\(\[]?\s*(?P<l>{_L})\s*[\)\]]?(?![A-Za-z])"
    ),
    # 2. "the answer is X", "the correct answer is (X)", "the correct option is X", "the best choice is X"
    re.compile(
        rf"(?i)\b(?:answer|option|choice)\s+(?:is|would\s+be|must\s+be|should\s+be)\s*:?\s*(?:option\s*)?"
        rf"(?:\*\*)?[\(\[]?\s*(?P<l>{_L})\s*[\)\]]?(?:\*\*)?(?![A-Za-z])"
    ),
    # 3. \boxed{X} (reasoning models box letters too), also \boxed{\text{X}}
    re.compile(rf"\\boxed\s*\{{\s*(?:\\text(?:bf)?\{{)?\s*\(?(?P<l>{_L})\)?\s*\}}?\s*\}}"),
    # 4. "(X)"
    re.compile(r"\((?P<l>[A-J])\)"),
]
_STANDALONE = re.compile(r"(?<![A-Za-z0-9_'])(?P<l>[A-J])(?![A-Za-z0-9_'])")
# After "I" or "A", these lower-case words still mean the option letter ("A is correct").
_VERBS = {
    "is",
    "was",
    "seems",
    "appears",
    "would",
    "should",
    "must",
    "can",
    "could",
    "looks",
    "matches",
    "fits",
}
_NEXT_WORD = re.compile(r"\s+([a-z]+)")


def _is_prose(text: str, match: re.Match[str]) -> bool:
    """True for the pronoun "I" or the article "A" used as words, not as option letters."""
    if match["l"] not in "IA":
        return False
    following = _NEXT_WORD.match(text, match.end())
    return following is not None and following.group(1) not in _VERBS


def extract_letter(text: str, options: MultipleChoiceOptions) -> tuple[str | None, str | None]:
    """(letter, pattern that found it) or (None, None)."""
    allowed = options.letters
    for index, pattern in enumerate(_EXPLICIT, start=1):
        letters = [
            m["l"].upper()
            for m in pattern.finditer(text)
            # a lower-case letter followed by a word is prose ("Answer: a bit later"), not an option
            if not (m["l"].islower() and _NEXT_WORD.match(text, m.end()))
        ]
        letters = [letter for letter in letters if letter in allowed]
        if letters:
            return letters[-1], f"pattern{index}"
    if options.fallback_last_letter:
        for match in reversed(list(_STANDALONE.finditer(text))):
            if match["l"] in allowed and not _is_prose(text, match):
                return match["l"], "last_letter"
    return None, None


def verify(response: str, reference: Any, options: MultipleChoiceOptions) -> Result:
    """1 if the extracted letter is the reference letter."""
    text, gated = apply_think_gate(response, options)
    if gated is not None:
        return gated
    assert text is not None
    letter, how = extract_letter(text, options)
    if letter is None:
        return Result(0.0, NO_ANSWER, {"reason": f"no answer letter among {options.letters!r} found"})
    ok = letter == reference.strip().upper()
    return binary(ok, CORRECT, INCORRECT, {"extracted": letter, "pattern": how})
