"""Dynamic sampling across ranks: the groups kept after filtering, balanced over the ranks.

DAPO's dynamic sampling drops groups whose verifier outcomes are all equal (no advantage, no
signal) and refills the step with fresh prompts. Each rank generates its own slice of every round
(`batch[rank::world]`), so after filtering one rank may hold many kept groups and another none.
Every rank then takes part in the same decision, made from the kept groups' keys only:

1. Keys: (round, index of the prompt in that round's global batch): the order in which the mixer
   drew the prompts, the same on every rank.
2. The first `target` kept groups in key order are the step's batch (later ones are left over:
   the step is full).
3. Shares are balanced (they differ by at most one; the larger ones go to the ranks that hold the
   most selected groups, ties to the lower rank, so that fewer groups move): a rank keeps its own
   selected groups up to its share, and the surplus of the others moves to the ranks short of
   theirs, in key order. Only moved groups cross the network (one all-gather of objects), not the
   whole batch.

A step with fewer kept groups than ranks leaves some ranks without groups: they run zero-weight
micro-batches so collectives stay matched (see `update.py`); with no kept group at all the update
is skipped on every rank, since all ranks see the same total.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from m2rl_trainer.train.collectives import all_gather_objects

Key = tuple[int, int]  # (round, index in the round's global batch)
Move = tuple[Key, int, int]  # (key, source rank, destination rank)
T = TypeVar("T")


def rebalance_plan(keys_by_rank: Sequence[Sequence[Key]], target: int) -> tuple[list[list[Key]], list[Move]]:
    """Which kept groups each rank trains on (pure; identical on every rank).

    keys_by_rank[r]: the keys of rank r's kept groups. Returns (stay, moves): stay[r] the keys rank
    r keeps (key order), moves the groups that change rank, in key order.
    """
    world = len(keys_by_rank)
    selected = sorted((key, rank) for rank, keys in enumerate(keys_by_rank) for key in keys)[:target]
    own: list[list[Key]] = [[] for _ in range(world)]
    for key, rank in selected:
        own[rank].append(key)
    base, extra = divmod(len(selected), world)
    larger = sorted(range(world), key=lambda rank: (-len(own[rank]), rank))[:extra]
    share = [base + (rank in larger) for rank in range(world)]
    stay = [own[rank][: share[rank]] for rank in range(world)]
    surplus = sorted((key, rank) for rank in range(world) for key in own[rank][share[rank] :])
    short = [rank for rank in range(world) for _ in range(share[rank] - len(stay[rank]))]
    moves = [(key, source, dest) for (key, source), dest in zip(surplus, short, strict=True)]
    return stay, moves


def rebalance(items: list[T], key: Callable[[T], Key], target: int, rank: int, world: int) -> list[T]:
    """This rank's share of the step's kept groups (collective: every rank calls it, same target).

    items: this rank's kept groups; key(item): its draw key. Returns the groups this rank trains on,
    in key order.
    """
    by_key = {key(item): item for item in items}
    if world == 1:
        return [by_key[k] for k in sorted(by_key)[:target]]
    keys_by_rank = all_gather_objects(sorted(by_key))
    stay, moves = rebalance_plan(keys_by_rank, target)
    mine = {k: by_key[k] for k in stay[rank]}
    if moves:  # the same on every rank, so either all ranks gather or none does
        outgoing = {k: by_key[k] for k, source, _ in moves if source == rank}
        gathered = all_gather_objects(outgoing)
        mine.update({k: gathered[source][k] for k, source, dest in moves if dest == rank})
    return [mine[k] for k in sorted(mine)]
