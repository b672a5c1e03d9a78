"""The M2RL study's merge variants, added to mergekit's own method table (no fork of mergekit).

One module per method, each a mergekit `GroupMergeMethod` with its parameters declared as data:

- `mergelm_ties`: TIES, optionally after DARE, with MergeLM's trim (per tensor or over the whole model)
- `mergelm_sce`: SCE without mergekit's near-zero equal-weights fallback
- `mergelm_task_arithmetic`: task arithmetic, optionally after DARE rescaled by 1/density

`register_study_methods()` registers them with `mergekit.merge_methods.registry.register`, after
which mergekit configs name them like its own methods (`merge_method: mergelm_ties`).
"""

from __future__ import annotations

STUDY_METHODS = ("mergelm_ties", "mergelm_sce", "mergelm_task_arithmetic")
INTERNAL_PARAMETERS = frozenset({"seed", "majority_sign", "trim_threshold"})
"""Parameters m2rl-merge fills in (merge.trim.study_config): the run's --seed for DARE's drops, and
the whole-model trim's thresholds and majority sign. Not part of the MergeJob API."""


def register_study_methods() -> None:
    """Add the study's methods to mergekit's registry (once per process)."""
    from mergekit.merge_methods import registry

    from m2rl_trainer.merge.methods.mergelm_sce import mergelm_sce
    from m2rl_trainer.merge.methods.mergelm_task_arithmetic import mergelm_task_arithmetic
    from m2rl_trainer.merge.methods.mergelm_ties import mergelm_ties

    known = {method.spec.name for method in registry.registered_methods()}
    for method in (mergelm_ties, mergelm_sce, mergelm_task_arithmetic):
        if method.spec.name not in known:
            registry.register(method)
