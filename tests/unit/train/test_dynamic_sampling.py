"""Dynamic sampling across ranks: the plan (pure), then the real collective with 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from m2rl_trainer.train.dynamic_sampling import rebalance_plan
from m2rl_trainer.utils.processes import free_port


def k(round_: int, index: int) -> tuple[int, int]:
    return (round_, index)


def test_a_rank_without_kept_groups_receives_its_share():
    # Round 0 gave rank 0 nothing (all its groups had equal rewards); rank 1 kept 3, round 1 added 2.
    stay, moves = rebalance_plan([[], [k(0, 1), k(0, 3), k(0, 5), k(1, 1)]], target=4)
    assert stay == [[], [k(0, 1), k(0, 3)]]
    assert moves == [(k(0, 5), 1, 0), (k(1, 1), 1, 0)]


def test_the_first_target_groups_in_draw_order_are_kept():
    # 7 kept, target 4: the 4 with the smallest keys, whoever holds them; rank 0 keeps its 2.
    stay, moves = rebalance_plan([[k(0, 0), k(1, 0), k(1, 2)], [k(0, 1), k(0, 3), k(1, 1), k(2, 1)]], 4)
    assert stay == [[k(0, 0), k(1, 0)], [k(0, 1), k(0, 3)]]
    assert moves == []


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("total", [0, 1, 5, 11])
def test_shares_are_balanced_and_every_kept_group_is_placed_once(world: int, total: int):
    keys = [k(i // 4, i) for i in range(total)]
    by_rank = [keys[r::world] if r else [] for r in range(world)]  # rank 0 kept nothing
    by_rank[world - 1] += keys[0::world]  # ... its groups ended up with the last rank
    target = 8
    stay, moves = rebalance_plan(by_rank, target)
    final = [sorted(stay[r] + [key for key, _, dest in moves if dest == r]) for r in range(world)]
    placed = sorted(key for keys_ in final for key in keys_)
    assert placed == sorted(keys)[:target]
    counts = [len(f) for f in final]
    assert max(counts) - min(counts) <= 1
    assert all(source != dest for _, source, dest in moves)


SCRIPT = """
import json, sys
import torch.distributed as dist
from m2rl_trainer.train.dynamic_sampling import rebalance
rank, world, port = (int(a) for a in sys.argv[1:4])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
# Rank 0's groups all had zero variance; rank 1 kept 3 in round 0 and 2 in the refill round.
kept = [] if rank == 0 else [{"key": [0, 1], "text": "a"}, {"key": [0, 3], "text": "b"},
                             {"key": [0, 5], "text": "c"}, {"key": [1, 1], "text": "d"},
                             {"key": [1, 3], "text": "e"}]
key = lambda g: tuple(g["key"])
mine = {t: [g["text"] for g in rebalance(kept, key, t, rank, world)] for t in (4, 3, 1, 8)}
print(json.dumps(mine))
dist.destroy_process_group()
"""


def test_two_gloo_ranks_agree_on_the_rebalanced_batch():
    """Each rank runs the real collective with its own kept groups; rank 0 has none."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, str(rank), "2", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    rank0, rank1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    # target 4: a full step, 2 groups each; rank 1 keeps its first two, sends the next two.
    assert (rank0["4"], rank1["4"]) == (["c", "d"], ["a", "b"])
    # target 3: rank 1 holds all three, so it keeps the larger share and sends one.
    assert (rank0["3"], rank1["3"]) == (["c"], ["a", "b"])
    # target 1: fewer groups than ranks; both agree that rank 0 trains on none.
    assert (rank0["1"], rank1["1"]) == ([], ["a"])
    # target 8 with 5 kept: a short step, every kept group used once.
    assert (rank0["8"], rank1["8"]) == (["d", "e"], ["a", "b", "c"])
