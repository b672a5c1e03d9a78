"""One real scorer for the integration tests: warm Python workers and bubblewrap sandboxes.

A secret is put in this process's environment before the pools start: the sandbox tests check
that no program can read it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from m2rl_trainer.rewards import Scorer, ScorerConfig
from tests.integration.rewards.helpers import require_bwrap

SECRET_ENV = "M2RL_TEST_SECRET_TOKEN"
SECRET_VALUE = f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def scorer() -> Iterator[Scorer]:
    require_bwrap()
    os.environ[SECRET_ENV] = SECRET_VALUE
    with Scorer(ScorerConfig(python_workers=2, sandbox_workers=2)) as scorer:
        yield scorer


@pytest.fixture
def clean_sandboxes(scorer: Scorer) -> Iterator[None]:
    """After the test: every sandbox is back to bwrap -> bwrap init -> runner -> fork server (->
    the checker, once an assert test ran), nothing else."""
    from tests.integration.rewards.helpers import children, descendants, wait_until

    yield
    pool = scorer.sandbox_pool
    assert pool is not None

    def idle(bwrap: int) -> bool:
        (init,) = children(bwrap)
        (runner,) = children(init)
        (server,) = children(runner)
        checkers = children(server)
        return len(checkers) <= 1 and all(children(c) == [] for c in checkers)

    def settled() -> bool:
        pids = pool.pids()
        try:
            return len(pids) == pool.size and all(idle(pid) for pid in pids)
        except ValueError:  # not exactly one child where one is expected
            return False

    assert wait_until(settled, 5.0), {pid: descendants(pid) for pid in pool.pids()}
