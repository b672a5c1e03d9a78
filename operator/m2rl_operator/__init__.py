"""M2RL operator: custom resources, pure builders, thin kopf handlers and a local runner."""

__version__ = "0.1.0"
