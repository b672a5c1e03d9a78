"""Toy tasks with verifiable answers, for tests, the quickstart and benchmarks (no downloads).

Two families:

- `toy_splits("add" | "max3")`: one-line arithmetic, rows `{"prompt": "Q: ... A:", "answer": "7"}`
  whose expected completion is ` \\boxed{7}` (the math verifier scores it).
- `curriculum_splits(domain, ...)`: the quickstart's four-domain curriculum, each domain checked by
  its real verifier: math (word problems: the most or fewest of three quantities, `math`), code
  (one-line functions described in words, run against `call` tests in the sandbox, `code`),
  science (multiple choice over generated facts: which category a word belongs to,
  `multiple_choice`), if (IFEval constraints: lowercase, keywords, word limits, JSON, endings,
  quotation marks, `ifeval`). Rows: `{"id", "prompt", "answer", "completion"}`; `answer` is what
  the verifier reads, `completion` a correct response the supervised warm-up trains on.

Everything is generated from a seed (same seed, same files); the splits never share a prompt.
The tasks are sized for a 0.4M-parameter model on a CPU (calibrated by hand, see
docs/local.md): a short warm-up on a few examples gets each domain partly right, and GRPO then
improves every domain within tens of steps; harder tasks (sums, argmax over options, answers
that point at an option) stayed at chance after the warm-up, and GRPO learned nothing from them.
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

TASKS = ("add", "max3")
DOMAINS = ("math", "code", "science", "if")
VERIFIER = {"math": "math", "code": "code", "science": "multiple_choice", "if": "ifeval"}
"""The verifier type that checks each curriculum domain."""
VERIFIER_OPTIONS: dict[str, dict[str, Any]] = {"science": {"num_choices": 6}}
"""Verifier options the curriculum's references need (six options, A-F)."""


def _question(task: str, rng: random.Random, max_operand: int) -> tuple[str, int]:
    if task == "add":
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        return f"Q: {a}+{b}= A:", a + b
    if task == "max3":
        digits = [rng.randint(0, max_operand) for _ in range(3)]
        return f"Q: max {' '.join(map(str, digits))}= A:", max(digits)
    raise ValueError(f"toy task {task!r} is unknown (known: {', '.join(TASKS)})")


def _distinct(
    what: str, draw: Callable[[random.Random], tuple[str, Any]], n: int, seed: int
) -> list[tuple[str, Any]]:
    """`n` draws with distinct prompts, in draw order; raises if the generator has too few."""
    rng = random.Random(seed)
    seen: dict[str, Any] = {}
    attempts = 0
    while len(seen) < n:
        attempts += 1
        if attempts > 100 * n:
            raise ValueError(f"{what} has fewer than {n} distinct questions")
        prompt, value = draw(rng)
        seen.setdefault(prompt, value)
    return list(seen.items())


def toy_splits(
    task: str, n_train: int, n_heldout: int, seed: int = 0, max_operand: int = 9
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Disjoint train and held-out rows; raises if the task has too few distinct questions."""
    if task not in TASKS:
        raise ValueError(f"toy task {task!r} is unknown (known: {', '.join(TASKS)})")
    pairs = _distinct(
        f"toy task {task!r}", lambda rng: _question(task, rng, max_operand), n_train + n_heldout, seed
    )
    rows = [{"prompt": q, "answer": str(a)} for q, a in pairs]
    return rows[:n_train], rows[n_train:]


def completion_for(row: dict[str, str]) -> str:
    """The reference completion a supervised warm-up trains on."""
    return f" \\boxed{{{row['answer']}}}"


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- the four-domain curriculum --------------------------------------------------------------------

Draw = tuple[str, tuple[Any, str]]  # prompt, (reference, completion)

_NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon")
_THINGS = ("apples", "pens", "cards", "coins", "books", "shells", "stamps", "cups")


def _math(rng: random.Random) -> Draw:
    """A word problem about three quantities: how many has the one with the most (or fewest)."""
    names = rng.sample(_NAMES, 3)
    things = rng.choice(_THINGS)
    values = rng.sample(range(1, 10), 3)
    word, pick = ("the most", max) if rng.random() < 0.5 else ("the fewest", min)
    prompt = (f"Q: {names[0]} has {values[0]} {things}, {names[1]} has {values[1]} and {names[2]} has "
              f"{values[2]}. How many {things} has the one with {word}? A:")  # fmt: skip
    answer = pick(values)
    return prompt, (str(answer), f" \\boxed{{{answer}}}")


_FUNCTIONS = ("f", "g", "h", "calc", "step", "solve", "apply", "combine")
_ARGS = ("x", "n", "a", "k", "v", "y", "m", "t")
_OPERATORS = {"plus": ("+", operator.add), "minus": ("-", operator.sub), "times": ("*", operator.mul)}


def _code(rng: random.Random) -> Draw:
    """A one-line function described in words ("x times 3 plus 2"); three `call` tests check it."""
    name, arg = rng.choice(_FUNCTIONS), rng.choice(_ARGS)
    first, second = rng.choice(list(_OPERATORS)), rng.choice(["plus", "minus"])
    c1, c2 = rng.randint(2, 9), rng.randint(1, 9)
    (s1, f1), (s2, f2) = _OPERATORS[first], _OPERATORS[second]
    prompt = f"Q: Write a Python function {name}({arg}) that returns {arg} {first} {c1} {second} {c2}. A:"
    tests = [{"call": name, "args": [v], "expected": f2(f1(v, c1), c2)} for v in (3, 10, 17)]
    completion = f" ```python\ndef {name}({arg}):\n    return {arg}{s1}{c1}{s2}{c2}\n```"
    return prompt, ({"tests": tests}, completion)


# Science: generated facts. Every word belongs to one category; the options are always the six
# categories in this order, so the answer letter is the word's category.
_CATEGORIES = {
    "metal": ("iron", "copper", "zinc", "tin", "gold", "lead"),
    "gas": ("oxygen", "helium", "neon", "argon", "steam", "ozone"),
    "planet": ("mars", "venus", "saturn", "jupiter", "mercury", "neptune"),
    "mammal": ("whale", "horse", "bat", "mouse", "tiger", "goat"),
    "bird": ("eagle", "crow", "owl", "swan", "duck", "robin"),
    "plant": ("fern", "moss", "oak", "pine", "ivy", "reed"),
}
_PLACES = ("cave", "lab", "shop", "field", "river", "garden", "museum", "market")
_KIND_QUESTIONS = ("What kind of thing is {w}?", "Which group does {w} belong to?", "{W} is a kind of what?")
LETTERS = "ABCDEF"


def _science(rng: random.Random) -> Draw:
    """Which category (A-F) a word mentioned in a sentence belongs to."""
    categories = list(_CATEGORIES)
    category = rng.choice(categories)
    word = rng.choice(_CATEGORIES[category])
    question = rng.choice(_KIND_QUESTIONS).format(w=word, W=word.capitalize())
    options = " ".join(f"{letter}) {c}" for letter, c in zip(LETTERS, categories, strict=True))
    letter = LETTERS[categories.index(category)]
    prompt = (f"Question: {rng.choice(_NAMES)} saw {word} at the {rng.choice(_PLACES)}. {question} {options}"
              "\nAnswer:")  # fmt: skip
    return prompt, (letter, f" {letter}")


_TOPICS = {
    "sea": ("deep", "blue"), "sun": ("hot", "bright"), "moon": ("pale", "round"),
    "cat": ("soft", "quiet"), "dog": ("loyal", "fast"), "tree": ("tall", "green"),
    "river": ("long", "cold"), "rain": ("wet", "gray"), "city": ("busy", "loud"),
    "road": ("long", "dark"), "bird": ("small", "quick"), "fish": ("cold", "fast"),
    "book": ("old", "thick"), "song": ("sweet", "slow"), "snow": ("white", "soft"),
    "wind": ("strong", "cold"), "lake": ("calm", "clear"), "hill": ("steep", "green"),
    "car": ("red", "fast"), "bread": ("warm", "fresh"),
}  # fmt: skip
_KEYWORDS = ("calm", "old", "wild", "cool", "warm", "dark", "bright", "quiet")
# name -> (IFEval instruction id, kwargs, instruction text)
_INSTRUCTIONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "lower": ("change_case:english_lowercase", {}, "Use only lowercase letters."),
    "end": ("startend:end_checker", {"end_phrase": "That is all."}, "End with the words That is all."),
    "short": ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
              "Use fewer than 5 words."),
    "json": ("detectable_format:json_format", {}, "Answer in JSON."),
    "quote": ("startend:quotation", {}, "Wrap the answer in double quotes."),
}  # fmt: skip
# Instruction sets a prompt may carry (a keyword may join any of them, or stand alone).
_SETS = (("lower",), ("end",), ("short",), ("json",), ("quote",), ("lower", "short"), ("lower", "end"),
         ("lower", "quote"), ("lower", "json"), ())  # fmt: skip


def _if(rng: random.Random) -> Draw:
    """Write a sentence about a topic under one to three IFEval constraints."""
    topic = rng.choice(list(_TOPICS))
    first, second = _TOPICS[topic]
    names = list(rng.choice(_SETS))
    keyword = rng.choice(_KEYWORDS) if not names or rng.random() < 0.5 else None
    ids, kwargs, texts = [], [], []
    for name in names:
        instruction_id, kw, text = _INSTRUCTIONS[name]
        ids.append(instruction_id)
        kwargs.append(dict(kw))
        texts.append(text)
    if keyword is not None:
        ids.append("keywords:existence")
        kwargs.append({"keywords": [keyword]})
        texts.append(f"Include the word {keyword}.")
        first, second = keyword, (first if first != keyword else second)
    sentence = f"The {topic} is {first}." if "short" in names else f"The {topic} is {first} and {second}."
    if "end" in names:
        sentence += " That is all."
    if "lower" in names:
        sentence = sentence.lower()
    if "quote" in names:
        sentence = f'"{sentence}"'
    if "json" in names:
        sentence = json.dumps({"text": sentence})
    prompt = f"Q: Write a sentence about the {topic}. {' '.join(texts)} A:"
    return prompt, ({"instruction_id_list": ids, "kwargs": kwargs}, f" {sentence}")


_GENERATORS: dict[str, Callable[[random.Random], Draw]] = {
    "math": _math,
    "code": _code,
    "science": _science,
    "if": _if,
}


def curriculum_splits(
    domain: str, n_sft: int, n_train: int, n_heldout: int, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm-up, RL and held-out rows of one curriculum domain: disjoint prompts, ids `DOMAIN-N`.

    The warm-up and RL prompts are kept apart, as in the study (an SFT model, then RL on other
    data): RL then rewards the skill on prompts the model has not memorised.
    """
    if domain not in _GENERATORS:
        raise ValueError(f"curriculum domain {domain!r} is unknown (known: {', '.join(DOMAINS)})")
    # Each domain draws from its own stream: adding rows to one domain leaves the others unchanged.
    total = n_sft + n_train + n_heldout
    pairs = _distinct(f"curriculum domain {domain!r}", _GENERATORS[domain], total,
                      seed * 1_000 + DOMAINS.index(domain))  # fmt: skip
    rows = [
        {"id": f"{domain}-{i}", "prompt": prompt, "answer": reference, "completion": completion}
        for i, (prompt, (reference, completion)) in enumerate(pairs)
    ]
    return rows[:n_sft], rows[n_sft : n_sft + n_train], rows[n_sft + n_train :]


def curriculum_corpus(rows: list[dict[str, Any]]) -> list[str]:
    """Text the tiny model's tokenizer learns its merges from: every prompt and completion."""
    return [row["prompt"] + row["completion"] for row in rows]
