"""Seeded permutations that depend only on their key, never on a global RNG or library version.

A SHA-256 of the key seeds a `random.Random`, whose integer seeding and Fisher-Yates `shuffle`
have been stable across Python 3 releases; so the order is reproducible from the key alone (no
RNG state to checkpoint) and the same on every rank.
"""

from __future__ import annotations

import hashlib
import random


def hash64(*parts: object) -> int:
    """A 64-bit integer from the parts' string forms (joined with ':')."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def permutation(size: int, *key: object) -> list[int]:
    """A permutation of range(size), a pure function of (size, key)."""
    order = list(range(size))
    random.Random(hash64(*key)).shuffle(order)
    return order
