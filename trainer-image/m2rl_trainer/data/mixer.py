"""Domain mixing: which prompts go into each batch, deterministic from a seed and resumable exactly.

Two modes (config `data.mixing`):
- "concat_shuffle" (what the M2RL study did): all domains concatenated in config order, shuffled
  once per epoch, read front to back; a batch may straddle two epochs. Each domain's share is its
  share of the data, and every prompt is seen once per epoch.
- "weighted": each prompt's domain is drawn with probability weight / sum(weights); the prompt is
  then the next one of that domain's own stream (shuffled per pass over the domain), so small
  domains repeat sooner than large ones.

Randomness comes from SHA-256 of (seed, purpose, counter), not from a stateful RNG, so the whole
state is a handful of integers (JSON in a checkpoint) and it does not depend on Python's or
NumPy's RNG versions (`data.shuffle`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from m2rl_trainer.data.datasets import Prompt
from m2rl_trainer.data.shuffle import hash64, permutation

Mode = Literal["weighted", "concat_shuffle"]
_STATE_VERSION = 1


def _permutation(size: int, *key: object) -> list[int]:
    return permutation(size, "m2rl-mixer-shuffle", *key)


class _Stream:
    """Endless reader over `size` items, reshuffled each epoch from (seed, name, epoch)."""

    def __init__(self, size: int, seed: int, name: str) -> None:
        self.size, self.seed, self.name = size, seed, name
        self.epoch, self.position = 0, 0
        self._order = _permutation(size, seed, name, 0)

    def next(self) -> int:
        if self.position == self.size:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = _permutation(self.size, self.seed, self.name, self.epoch)
        index = self._order[self.position]
        self.position += 1
        return index

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: Mapping[str, int]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if not 0 <= position <= self.size or epoch < 0:
            raise ValueError(f"mixer state: stream {self.name!r} position {position} outside 0..{self.size}")
        self.epoch, self.position = epoch, position
        self._order = _permutation(self.size, self.seed, self.name, epoch)


class DomainMixer:
    """Yields batches of prompts across domains; see the module docstring for the two modes.

    domains: prompts per domain name; the dict's order is the concatenation order.
    weights: relative weight per domain ("weighted" mode; must cover every domain, each > 0);
        ignored by "concat_shuffle", where each domain's share is its dataset size.
    """

    def __init__(
        self,
        domains: Mapping[str, Sequence[Prompt]],
        weights: Mapping[str, float] | None = None,
        mode: Mode = "concat_shuffle",
        seed: int = 0,
    ) -> None:
        if not domains:
            raise ValueError("DomainMixer needs at least one domain")
        empty = [name for name, prompts in domains.items() if not prompts]
        if empty:
            raise ValueError(f"DomainMixer: domain {empty[0]!r} has no prompts")
        if mode not in ("weighted", "concat_shuffle"):
            raise ValueError(f"DomainMixer: unknown mode {mode!r} (weighted, concat_shuffle)")
        self.mode: Mode = mode
        self.seed = seed
        self.names = list(domains)
        self._domains = {name: list(prompts) for name, prompts in domains.items()}
        self.weights = self._check_weights(weights) if mode == "weighted" else None
        self._draws = 0  # prompts handed out so far (the counter of the domain draws)
        if mode == "concat_shuffle":
            self._all = [p for name in self.names for p in self._domains[name]]
            self._streams = {"*": _Stream(len(self._all), seed, "*")}
        else:
            self._streams = {name: _Stream(len(self._domains[name]), seed, name) for name in self.names}
            total = sum(self.weights.values())  # type: ignore[union-attr]
            cumulative, running = [], 0.0
            for name in self.names:
                running += self.weights[name] / total  # type: ignore[index]
                cumulative.append(running)
            cumulative[-1] = 1.0  # no float gap at the top end
            self._cumulative = cumulative

    def _check_weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            return {name: 1.0 for name in self.names}
        missing, unknown = set(self.names) - set(weights), set(weights) - set(self.names)
        if missing or unknown:
            raise ValueError(
                f"DomainMixer weights: missing {sorted(missing)}, unknown {sorted(unknown)} "
                f"(domains: {self.names})"
            )
        bad = [name for name in self.names if not weights[name] > 0]
        if bad:
            raise ValueError(f"DomainMixer weights: weight of {bad[0]!r} must be > 0, got {weights[bad[0]]}")
        return {name: float(weights[name]) for name in self.names}

    def _draw_domain(self) -> str:
        # A uniform in [0, 1) from (seed, draw counter): the draw sequence is a pure function of the
        # seed, so resuming needs only the counter.
        u = hash64("m2rl-mixer-domain", self.seed, self._draws) / 2**64
        return self.names[bisect.bisect_right(self._cumulative, u)]

    def next_batch(self, n: int) -> list[Prompt]:
        """The next `n` prompts."""
        if n < 1:
            raise ValueError(f"next_batch: n must be at least 1, got {n}")
        batch = []
        for _ in range(n):
            if self.mode == "concat_shuffle":
                batch.append(self._all[self._streams["*"].next()])
            else:
                name = self._draw_domain()
                batch.append(self._domains[name][self._streams[name].next()])
            self._draws += 1
        return batch

    @property
    def epoch(self) -> int:
        """Full passes completed: over the concatenation, or over the least-read domain ("weighted")."""
        return min(s.epoch + (s.position == s.size) for s in self._streams.values())

    def state_dict(self) -> dict[str, Any]:
        """Position as plain JSON data, plus what it is only valid for (mode, seed, sizes, weights)."""
        return {
            "version": _STATE_VERSION,
            "mode": self.mode,
            "seed": self.seed,
            "sizes": {name: len(prompts) for name, prompts in self._domains.items()},
            "weights": self.weights,
            "draws": self._draws,
            "streams": {name: stream.state() for name, stream in self._streams.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where `state` left off; a state from different data or settings is an error."""
        expected = self.state_dict()
        for key in ("version", "mode", "seed", "sizes", "weights"):
            if state.get(key) != expected[key]:
                raise ValueError(
                    f"mixer state does not match this run: {key} is {state.get(key)!r} in the checkpoint, "
                    f"{expected[key]!r} now (resuming needs the same datasets, caps, weights, mode and seed)"
                )
        if set(state["streams"]) != set(self._streams):
            raise ValueError(f"mixer state: streams {sorted(state['streams'])} != {sorted(self._streams)}")
        for name, stream in self._streams.items():
            stream.restore(state["streams"][name])
        self._draws = int(state["draws"])
