"""IFEvalG's instructions beyond IFEval: hand-made cases per instruction (one followed, one not),
worked out from the published definitions (open-instruct / the study's copy of IFEvalG)."""

from __future__ import annotations

from typing import Any

import pytest

from m2rl_trainer.rewards import ConfigError
from m2rl_trainer.rewards.ifeval_verifier import IFEvalOptions, check_reference, registry, verify
from m2rl_trainer.rewards.ifevalg import extra_instructions
from m2rl_trainer.rewards.nltk_data import ensure_nltk_data

# id -> (kwargs, a response that follows it, a response that does not)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "copy:repeat_phrase": (
        {"phrase": "the quick brown fox jumps", "small_n": 2},
        "the quick red fox jumps and then the quick blue fox jumps",
        "the quick brown fox jumps and then the quick brown fox jumps",  # no word changed
    ),
    "copy:copy": ({"prompt_to_repeat": "Say Hello."}, "  say hello. ", "Say Hello. Hi!"),
    "new:copy_span_idx": (
        {"prompt_to_repeat": "abcdefghij", "n_start": 2, "n_end": 5},
        "CDE",
        "cdef",
    ),
    "detectable_format:sentence_hyphens": (
        {},
        "I like tea.-You like coffee.",
        "I like tea. - You like coffee.",
    ),
    "keywords:no_adjacent_consecutive": ({}, "apple cat egg", "apple banana"),
    "detectable_format:square_brackets": ({}, "[Hello] [world]", "[Hello] world"),
    "keywords:word_once": ({"keyword": "moon"}, "The Moon rises.", "moon and MOON"),
    "keywords:word_count_different_numbers": (
        {"keyword": "sun", "frequency": 2, "relation": "at least"},
        "sun here, Sun there",
        "only one sun",
    ),
    "keywords:exclude_word_harder": ({"keyword": "cat"}, "cats and a catalog", "a cat sat"),
    "paragraphs:paragraphs": ({}, "First part. *** Second part.", "One *** two *** three"),
    "paragraphs:paragraphs2": ({}, "First part.\n\nSecond part.", "One.\n\nTwo.\n\nThree."),
    "first_word:first_word_sent": (
        {"first_word": "so"},
        "So it begins. So it ends.",
        "So it begins. It ends.",
    ),
    # the first whitespace-separated word, punctuation included: "yes," would not match
    "first_word:first_word_answer": ({"first_word": "Yes"}, "yes I agree.", "yes, I agree."),
    "last_word:last_word_sent": ({"last_word": "now"}, "Come now. Go now!", "Come now. Go later."),
    "last_word:last_word_answer": ({"last_word": "end"}, "This is the END.", "The end is near"),
    "detectable_format:bigram_wrapping": ({}, "<<I am>> <<at home>>", "<<I am>> at home"),
    "copy:copying_simple": ({"prompt_to_repeat": "Tell me a joke."}, "tell me a joke.", "Here is a joke."),
    "copy:copying_multiple": (
        {"prompt_to_repeat": "Hi there", "N": 3},
        "Hi there******Hi there****** hi there",
        "Hi there******Hi there",
    ),
    "punctuation:punctuation_dot": ({}, "No dots here", "One dot."),
    "punctuation:punctuation_exclamation": ({}, "Calm words.", "Wow!"),
    "count:lowercase_counting": ({"N": 2}, "Hello my Friend and", "one two three"),
    "letters:letter_counting": ({"N": 5, "relation": "less than"}, "abcd 123", "abcde"),
    "letters:letter_counting2": (
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "Zebra zoo",
        "zebra",
    ),
    "count:counting_composition": (
        {"n_sent": 1, "n_words": 2},
        "Birds fly *** Fish swim *** Cats nap",
        "Birds fly *** Fish swim",
    ),
    "count:count_unique": ({}, "every word differs here", "the cat and the dog"),
    "count:count_increment_word": (
        {"keyword1": "red", "keyword2": "blue"},
        "red sky, blue sea, blue eyes",
        "red red blue blue",
    ),
    "keywords:palindrome": ({}, "I saw a racecar", "nothing here fits"),
    "keywords:keyword_specific_position": (
        {"keyword": "apple", "n": 2, "m": 3},
        "Hello there. I like apple pie.",
        "Hello there. I apple like pie.",
    ),
    "keywords:start_end": ({}, "Hello world and hello", "Hello world."),
    "multi-turn:constrained_start": ({"starter": "Sure"}, "Sure, here it is.", "Here it is. Sure."),
}


@pytest.fixture(scope="module", autouse=True)
def _nltk() -> None:
    ensure_nltk_data()  # word tokenisation needs punkt_tab, offline


def test_the_table_is_ifeval_plus_ifevalg() -> None:
    ifeval, ifevalg = registry("ifeval"), registry("ifevalg")
    assert len(ifeval) == 25
    assert set(CASES) == set(extra_instructions())  # every added instruction has cases here
    assert set(ifevalg) == set(ifeval) | set(CASES)
    assert (
        len(ifevalg) == 25 + 29 + 1
    )  # IFEvalG registers 29 new ids; constrained_start is commented out there


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_instruction_followed_and_not(instruction_id: str) -> None:
    kwargs, good, bad = CASES[instruction_id]
    checker = registry("ifevalg")[instruction_id](instruction_id)
    checker.build_description(**kwargs)
    assert checker.get_instruction_args_keys() == list(kwargs)
    assert checker.check_following(good) is True
    assert not checker.check_following(bad)


def test_the_study_copys_repeat_phrase_passes_on_the_first_changed_repetition() -> None:
    """M2RL's vendored IFEvalG returns at the first occurrence with exactly one change; open-instruct's
    head would also require the second one to differ."""
    checker = registry("ifevalg")["copy:repeat_phrase"]("copy:repeat_phrase")
    checker.build_description(phrase="the quick brown fox jumps", small_n=2)
    assert checker.check_following("the quick red fox jumps and then the quick brown fox jumps")


def test_verifier_scores_an_ifevalg_reference() -> None:
    options = IFEvalOptions(registry="ifevalg")
    reference = {
        "instruction_id_list": ["punctuation:punctuation_dot", "keywords:word_once"],
        "kwargs": [{}, {"keyword": "moon"}],
        "prompt": "p",
    }
    check_reference(reference, options)
    assert verify("The moon is bright", reference, options).reward == 1.0
    assert verify("The moon is bright.", reference, options).reward == 0.0
    with pytest.raises(
        ConfigError, match="unknown instruction id 'punctuation:punctuation_dot' in the ifeval table"
    ):
        check_reference(reference, IFEvalOptions())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"missing \['keyword'\]"),
        ({"keyword": "x", "extra": 1}, r"unexpected \['extra'\]"),
    ],
    ids=["missing", "extra"],
)
def test_a_missing_argument_is_an_error_not_a_random_draw(kwargs: dict[str, Any], message: str) -> None:
    reference = {"instruction_id_list": ["keywords:word_once"], "kwargs": [kwargs], "prompt": "p"}
    with pytest.raises(ConfigError, match=message):
        check_reference(reference, IFEvalOptions(registry="ifevalg"))


def test_bad_relation_is_refused() -> None:
    reference = {
        "instruction_id_list": ["letters:letter_counting"],
        "kwargs": [{"N": 3, "relation": "about"}],
        "prompt": "p",
    }
    with pytest.raises(ConfigError, match="relation must be one of"):
        check_reference(reference, IFEvalOptions(registry="ifevalg"))
