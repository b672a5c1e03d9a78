"""Prompt data: domain datasets, prompt rendering and domain mixing."""

from __future__ import annotations

from m2rl_trainer.config import DataConfig
from m2rl_trainer.data.datasets import DatasetError, Prompt, load_domain, load_domains, render_prompt
from m2rl_trainer.data.mixer import DomainMixer

__all__ = [
    "DatasetError",
    "DomainMixer",
    "Prompt",
    "build_mixer",
    "load_domain",
    "load_domains",
    "render_prompt",
]


def build_mixer(data: DataConfig, seed: int) -> DomainMixer:
    """Load every domain of `data` (all errors before any model work; max_samples caps after a
    shuffle seeded by `seed`, as the trainer does) and mix them as configured."""
    return DomainMixer(
        load_domains(data.domains, seed), {d.name: d.weight for d in data.domains}, data.mixing, seed
    )
