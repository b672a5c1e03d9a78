"""The trainer's process group has a backend for every device it reduces tensors on.

On GPUs the loop all-reduces small CPU float64 tensors (loss normalisers, statistics, the
non-finite flag) and gathers Python objects; a NCCL-only group has no backend for the CPU device
("No backend type associated with device type cpu") and the first multi-GPU step dies. No GPU is
needed to see it: the group's device -> backend map comes from torch's own parser
(`distributed_c10d.BackendConfig`, what `init_process_group` uses), and the devices from the
tensors the loop's collectives actually build.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import Backend, BackendConfig

from m2rl_trainer.train import collectives
from m2rl_trainer.train.engine import init_distributed


def _backend_the_trainer_starts(monkeypatch: pytest.MonkeyPatch, on_gpu: bool) -> str:
    import deepspeed

    started: list[str] = []
    monkeypatch.setattr(deepspeed, "init_distributed", lambda dist_backend: started.append(dist_backend))
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29999"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    init_distributed(on_gpu)
    (backend,) = started
    return backend


def _devices_the_loop_reduces_on(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    devices: set[str] = set()
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None, **_: devices.add(tensor.device.type))
    collectives.all_reduce([1.0, 2.0])
    collectives.all_reduce([0.0], dist.ReduceOp.MAX)
    return devices


def test_gpu_group_serves_the_cpu_tensors_the_loop_reduces(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend_the_trainer_starts(monkeypatch, on_gpu=True)
    device_map = BackendConfig(Backend(backend)).get_device_backend_map()
    devices = _devices_the_loop_reduces_on(monkeypatch)
    assert devices == {"cpu"}
    missing = devices - set(device_map)
    assert not missing, f"process group {backend!r} has no backend for {missing} (map: {device_map})"
    assert device_map == {"cpu": "gloo", "cuda": "nccl"}  # NCCL still carries the gradients


def test_cpu_runs_use_gloo(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend_the_trainer_starts(monkeypatch, on_gpu=False)
    assert BackendConfig(Backend(backend)).get_device_backend_map() == {"cpu": "gloo", "cuda": "gloo"}


def test_a_nccl_only_group_would_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the check above guards against: the map of the group the trainer used to start."""
    assert "cpu" not in BackendConfig(Backend("nccl")).get_device_backend_map()
    assert torch.tensor([1.0], dtype=torch.float64).device.type == "cpu"  # what collectives.all_reduce builds
