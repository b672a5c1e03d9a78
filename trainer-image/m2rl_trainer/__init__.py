"""M2RL trainer image: GRPO trainer, rollout, verifiers, merge and evaluation."""

__version__ = "0.1.0"
