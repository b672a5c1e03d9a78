"""Weight sync from the trainer to the vLLM rollout servers after each update.

filesystem (works everywhere, the CPU default): rank 0 gathers the full weights (a collective
under ZeRO-3), writes safetensors to `<weight_sync_dir>/.v000012.tmp` and renames it to
`v000012`; then every replica is paused (in-flight requests finish), reloads the folder through
vLLM's `reload_weights` RPC, gets the version stamp `12`, and resumes. The run fails loudly when
a replica did not take the new weights: its version stamp differs, or its log-probability of a
fixed probe differs from the trainer's own forward pass by more than the tolerance.

nccl (GPU clusters): vLLM 0.32's weight-transfer endpoints (`/init_weight_transfer_engine` once,
then `/start_weight_update`, `/update_weights` with the tensor metadata while rank 0 broadcasts
the tensors over NCCL, `/finish_weight_update` with the version). `nccl_update_requests` builds
those requests (unit-tested here); the broadcast itself needs GPUs and vLLM's
`NCCLTrainerWeightTransferEngine`.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import torch
import torch.distributed as dist

from m2rl_trainer.train.engine import full_state_dict

if TYPE_CHECKING:
    from m2rl_trainer.train.loop import GRPOTrainer

PROBE_PROMPT = "Q: max 1 7 3= A:"
PROBE_CONTINUATION = " \\boxed{7}"


class WeightSyncError(RuntimeError):
    """A replica did not take the new weights; the message names it."""


def version_dir(root: Path, version: int) -> Path:
    return root / f"v{version:06d}"


def write_weights(
    module: Any, state: dict[str, torch.Tensor], root: Path, version: int, keep: int = 2
) -> Path:
    """Write `state` as a Hugging Face folder, atomically (tmp + rename); keep the newest `keep`."""
    final = version_dir(root, version)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("v[0-9]*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def probe_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Tokenised exactly as `VLLMServerRollout.probe_logprobs` does."""
    prompt = tokenizer(PROBE_PROMPT)["input_ids"]
    continuation = tokenizer(PROBE_CONTINUATION, add_special_tokens=False)["input_ids"]
    return list(prompt), list(continuation)


@torch.no_grad()
def trainer_probe_logprob(model: Any, tokenizer: Any, device: torch.device) -> float:
    """log p(continuation | prompt) at T = 1 under the trainer's weights (collective under ZeRO-3)."""
    prompt, continuation = probe_token_ids(tokenizer)
    ids = torch.tensor([prompt + continuation], device=device)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(
        -1, torch.tensor(continuation, device=device)[:, None]
    )
    return float(logprobs.sum())


def probe_tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance on the summed probe logprob: engines differ in kernels and reductions."""
    return 0.02 if dtype == torch.float32 else 0.25


def set_version(url: str, version: int, timeout_s: float = 30.0) -> None:
    response = httpx.post(
        f"{url}/update_weight_version", json={"new_version": str(version)}, timeout=timeout_s
    )
    response.raise_for_status()


def get_version(url: str, timeout_s: float = 30.0) -> str | None:
    response = httpx.get(f"{url}/weight_info", timeout=timeout_s)
    response.raise_for_status()
    value = response.json().get("weight_version")
    return None if value is None else str(value)


def check_replicas(
    versions: dict[str, str | None], probes: dict[str, float], version: int, expected: float, tolerance: float
) -> None:
    """Raise WeightSyncError naming every replica that kept old or wrong weights (pure)."""
    problems = []
    for url, got in versions.items():
        if got != str(version):
            problems.append(f"{url}: weight version {got!r}, expected {version}")
    for url, value in probes.items():
        if not math.isfinite(value) or abs(value - expected) > tolerance:
            problems.append(
                f"{url}: probe logprob {value:.4f}, trainer {expected:.4f} (tolerance {tolerance})"
            )
    if problems:
        raise WeightSyncError("rollout replicas did not take the new weights: " + "; ".join(problems))


def sync_to_servers(trainer: GRPOTrainer, version: int) -> None:
    """Filesystem sync of the trainer's weights to every replica (call on every rank)."""
    config = trainer.config
    if config.rollout.weight_sync != "filesystem":
        raise NotImplementedError(
            "rollout.weight_sync=nccl needs GPUs and vLLM's NCCL engine; this machine has none "
            "(the requests are built by nccl_update_requests)"
        )
    state = full_state_dict(trainer.engine, config.deepspeed.zero_stage)
    expected = trainer_probe_logprob(trainer.engine.module, trainer.tokenizer, trainer.device)
    error = ""
    if trainer.is_main:
        assert state is not None
        root = Path(config.rollout.weight_sync_dir or Path(config.output_dir) / "weights")
        path = write_weights(trainer.engine.module, state, root, version)
        rollout = trainer.rollout
        rollout.pause("wait")
        try:
            rollout.reload_weights(path)
            for replica in rollout.replicas:
                set_version(replica.url, version)
        finally:
            rollout.resume()
        versions = {replica.url: get_version(replica.url) for replica in rollout.replicas}
        probes = rollout.probe_logprobs(PROBE_PROMPT, PROBE_CONTINUATION)
        try:
            check_replicas(
                versions,
                probes,
                version,
                expected,
                probe_tolerance(next(trainer.engine.module.parameters()).dtype),
            )
        except WeightSyncError as failure:
            error = str(failure)
    # Every rank learns of a failure, so all stop together instead of hanging in a collective.
    flag = [error]
    dist.broadcast_object_list(flag, src=0)
    if flag[0]:
        raise WeightSyncError(flag[0])


def nccl_update_requests(
    state_meta: list[tuple[str, str, list[int]]], version: int
) -> list[tuple[str, dict[str, Any] | None]]:
    """The HTTP calls of one NCCL weight update, in order: (path, JSON body).

    `state_meta` lists (name, dtype name, shape) of every tensor rank 0 will broadcast, in order.
    """
    names = [name for name, _, _ in state_meta]
    return [
        ("/pause?mode=wait", None),
        ("/start_weight_update", None),
        (
            "/update_weights",
            {
                "update_info": {
                    "names": names,
                    "dtype_names": [dtype for _, dtype, _ in state_meta],
                    "shapes": [list(shape) for _, _, shape in state_meta],
                }
            },
        ),
        ("/finish_weight_update", {"weight_version": str(version)}),
        ("/resume", None),
    ]


def nccl_init_request(
    master_address: str, master_port: int, replica_index: int, replicas: int, tensor_parallel: int
) -> dict[str, Any]:
    """Body of `/init_weight_transfer_engine` for one replica: the NCCL world is the trainer's rank 0
    (the sender, rank 0) plus every replica's workers; replica i's workers start at rank
    1 + i * tensor_parallel. Packed transfer, as vLLM's trainer side defaults to."""
    return {
        "init_info": {
            "master_address": master_address,
            "master_port": master_port,
            "rank_offset": 1 + replica_index * tensor_parallel,
            "world_size": 1 + replicas * tensor_parallel,
            "packed": True,
        }
    }
