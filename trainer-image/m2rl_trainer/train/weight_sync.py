"""Weight sync from the trainer to the vLLM rollout servers after each update.

filesystem (works everywhere, the CPU default): rank 0 gathers the full weights (a collective
under ZeRO-3), writes safetensors to `<weight_sync_dir>/.v000012.tmp` and renames it to
`v000012`; then every replica is paused (in-flight requests finish), reloads the folder through
vLLM's `reload_weights` RPC, gets the version stamp `12`, and resumes. The run fails loudly when
a replica did not take the new weights: its version stamp differs, or its log-probability of a
fixed probe differs from the trainer's own forward pass by more than the tolerance.

nccl (GPU clusters): vLLM 0.32's own trainer-side engine (`NCCLTrainerWeightTransferEngine`)
drives the replica's weight-transfer endpoints (`/init_weight_transfer_engine` once, then
`/start_weight_update`, `/update_weights`, `/finish_weight_update` per round) while rank 0
broadcasts the tensors, fed by `DeepSpeedWeightSource`. The same version and probe checks follow.
The NCCL rendezvous needs GPUs; the source and the configuration are tested on CPU.
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
    nccl = config.rollout.weight_sync == "nccl"
    if nccl:
        if not torch.cuda.is_available():
            raise WeightSyncError("rollout.weight_sync=nccl needs GPUs; use filesystem on CPU machines")
        if trainer.nccl_engine is None:
            trainer.nccl_engine = nccl_engine(trainer)
    state = None if nccl else full_state_dict(trainer.engine, config.deepspeed.zero_stage)
    expected = trainer_probe_logprob(trainer.engine.module, trainer.tokenizer, trainer.device)
    error = ""
    if nccl:
        if trainer.is_main:
            trainer.rollout.pause("wait")
        try:
            trainer.nccl_engine.send_weights()  # every rank: ZeRO-3 gathers are collective
        finally:
            if trainer.is_main:
                trainer.rollout.resume()
    if trainer.is_main:
        rollout = trainer.rollout
        if not nccl:
            assert state is not None
            root = Path(config.rollout.weight_sync_dir or Path(config.output_dir) / "weights")
            path = write_weights(trainer.engine.module, state, root, version)
            rollout.pause("wait")
            try:
                rollout.reload_weights(path)
            finally:
                rollout.resume()
        for replica in rollout.replicas:
            set_version(replica.url, version)
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


class DeepSpeedWeightSource:
    """vLLM `WeightSource` over a DeepSpeed engine's module, for the NCCL path.

    `metadata()` reads full shapes without gathering (ZeRO-3 keeps them as `ds_shape`); iteration
    yields each full parameter, gathering it from its ZeRO-3 partitions first (a collective: every
    rank iterates in the same order).
    """

    def __init__(self, module: torch.nn.Module, zero_stage: int) -> None:
        self.module = module
        self.zero_stage = zero_stage

    def metadata(self) -> list[Any]:
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [
            ParamMeta(name, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
            for name, p in self.module.named_parameters()
        ]

    def __iter__(self) -> Any:
        import deepspeed

        for name, param in self.module.named_parameters():
            if self.zero_stage == 3:
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    yield name, param.detach().clone()
            else:
                yield name, param.detach()


def nccl_engine(trainer: GRPOTrainer) -> Any:
    """Rendezvous with the (single) rollout replica over NCCL; call on every trainer rank.

    vLLM 0.32's trainer-side engine places the replica's workers right after the trainer's
    sender rank, so one NCCL group serves one replica (`validate` refuses more).
    """
    from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerInitInfo,
        NCCLTrainerWeightTransferEngine,
    )

    rollout = trainer.config.rollout
    init_info = NCCLTrainerInitInfo(
        master_address=str(rollout.nccl_master_address),
        master_port=rollout.nccl_port,
        world_size=1 + rollout.nccl_workers_per_replica,
        rank=trainer.dist.rank,
    )
    return NCCLTrainerWeightTransferEngine.trainer_init(
        init_info,
        client=HTTPVLLMWeightSyncClient(rollout.server_urls[0], timeout=rollout.request_timeout_s),
        source=DeepSpeedWeightSource(trainer.engine.module, trainer.config.deepspeed.zero_stage),
    )
