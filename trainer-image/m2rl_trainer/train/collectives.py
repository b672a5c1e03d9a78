"""The few collectives the loop runs itself (DeepSpeed runs the gradient ones).

They use CPU tensors and Python objects; the process group has a CPU backend on GPUs too (see
`engine.process_group_backend`). A lone rank skips the round trip (gloo costs ~2 ms even alone).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def all_reduce(values: list[float], op: dist.ReduceOp = dist.ReduceOp.SUM) -> list[float]:
    """Element-wise reduction of a list of floats over all ranks (float64 on the CPU)."""
    if dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order."""
    if dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
