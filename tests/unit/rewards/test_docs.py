"""docs/verifiers.md documents every verifier option with its real default."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2rl_trainer.rewards.registry import VERIFIERS

DOC = (Path(__file__).parents[3] / "docs" / "verifiers.md").read_text()


def _default(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", '"')


@pytest.mark.parametrize("name", list(VERIFIERS))
def test_every_option_is_in_the_docs_with_its_default(name):
    section = DOC.split(f"### `{name}` options", 1)[1].split("###", 1)[0]
    for row in VERIFIERS[name].describe()["options"]:
        if row["name"] in ("require_think_close", "strip_think"):
            assert f"| `{row['name']}` | {row['type']} | `{_default(row['default'])}` |" in DOC
            continue
        assert f"| `{row['name']}` | {row['type']} | `{_default(row['default'])}` |" in section, row["name"]


def test_the_reward_hacking_corpus_is_documented():
    """The threat model's table lists the corpus the tests run, in its order."""
    from tests.integration.rewards.reward_hacks import HACKS

    table = DOC.split("**The corpus**", 1)[1].split("**Hygiene metrics.**", 1)[0]
    rows = [line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")]
    assert rows == [hack.name for hack in HACKS]
    assert f"{len(HACKS)} wrong programs" in table
