"""IFEvalG: IFEval's 25 instructions plus the ones AllenAI's IFEvalG adds (the M2RL study's IF reward).

`INSTRUCTIONS` maps the ids IFEvalG registers beyond IFEval (its `instructions_registry.py`,
`INSTRUCTION_DICT`: 29 ids) plus `multi-turn:constrained_start`, which IFEvalG's table lists but
comments out (IFEval's own checker is used for it), to checker classes. `letters:letter_counting2`
is IFEval's letter-frequency checker under a second id, as in IFEvalG. The 25 IFEval ids come from
if-verifiable's IFEval registry, whose checkers are the same as IFEvalG's copies of them (compared
statement by statement; they differ only in formatting).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from m2rl_trainer.rewards.ifevalg import instructions as ins


@functools.cache
def extra_instructions() -> Mapping[str, Any]:
    """IFEvalG's ids beyond IFEval -> checker class (imports if-verifiable's IFEval module)."""
    from if_verifiable.ifeval import instructions as ifeval

    return {
        "copy:repeat_phrase": ins.RepeatPhraseChecker,
        "copy:copy": ins.CopyChecker,
        "new:copy_span_idx": ins.CopySpanIdxChecker,
        "detectable_format:sentence_hyphens": ins.SentenceHyphenChecker,
        "keywords:no_adjacent_consecutive": ins.AdjacentLetterChecker,
        "detectable_format:square_brackets": ins.SquareBracketChecker,
        "keywords:word_once": ins.KeywordFrequencyOnceChecker,
        "keywords:word_count_different_numbers": ins.KeywordFrequencyCheckerDifferent,
        "keywords:exclude_word_harder": ins.ExcludeWordHarderChecker,
        "paragraphs:paragraphs": ins.ParagraphBasicChecker,
        "paragraphs:paragraphs2": ins.ParagraphBasicChecker2,
        "first_word:first_word_sent": ins.FirstWordSentChecker,
        "first_word:first_word_answer": ins.FirstWordAnswerChecker,
        "last_word:last_word_sent": ins.LastWordSentChecker,
        "last_word:last_word_answer": ins.LastWordAnswerChecker,
        "detectable_format:bigram_wrapping": ins.BiGramWrappingChecker,
        "copy:copying_simple": ins.CopyingSimpleChecker,
        "copy:copying_multiple": ins.CopyingMultipleChecker,
        "punctuation:punctuation_dot": ins.PunctuationDotChecker,
        "punctuation:punctuation_exclamation": ins.PunctuationExclamationChecker,
        "count:lowercase_counting": ins.LowercaseCountingChecker,
        "letters:letter_counting": ins.LetterCountingChecker,
        "letters:letter_counting2": ifeval.LetterFrequencyChecker,
        "count:counting_composition": ins.CountingCompositionChecker,
        "count:count_unique": ins.CountUniqueChecker,
        "count:count_increment_word": ins.CountIncrementWordChecker,
        "keywords:palindrome": ins.PalindromeBasicChecker,
        "keywords:keyword_specific_position": ins.KeywordSpecificPositionChecker,
        "keywords:start_end": ins.StartEndChecker,
        "multi-turn:constrained_start": ifeval.ConstrainedStartChecker,
    }
