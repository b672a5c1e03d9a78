"""Log-probabilities and entropies through the LM head in chunks of tokens, never the whole logits.

The plain path (`model(...).logits.float()`, then a log-softmax) keeps fp32 logits [B, R, V] and
their gradient for the backward pass: at 32k response tokens and Qwen's 151,936-token vocabulary
that is 20 GB per sequence. Here the head runs on the selected hidden states [N, H] in chunks of
`chunk_tokens` rows: each chunk's logits [C, V] live only inside the chunk (forward and backward),
and the backward recomputes them from the saved hidden states (one extra [C, H] x [H, V] matmul per
chunk) instead of keeping them. Memory: O(N (H + 2)) saved + O(C V) transient, linear in tokens.

Prior art, read for this: TRL 1.16 `trl/kernels/chunked_logprob.py` (`ChunkedLogProbFunction`, the
head of TRL's GRPOTrainer: tiles of 4096 tokens x 32768 vocabulary columns, online logsumexp) and
Liger-Kernel 0.8.5 `liger_kernel/chunked_loss/fused_linear_ppo.py` (`_ChunkedSelectiveLogProbFunction`,
used by `LigerFusedLinearGRPOLoss`). Why not call them: Liger's public GRPO loss computes its own
loss (TRL's loss types) inside the chunks and its gradients during the forward, so our loss
(aggregation modes with global normalisers, KL, entropy bonus, the mismatch corrections of
grpo/losses.py) would have to be written twice; its chunked log-prob function is private and gives
no entropy. TRL's function is a private module of the trainer we benchmark against. The tests check
this function against both (values and gradients), and against the plain full-logits computation.

Numerics follow the plain path exactly: the matmul in the weights' dtype, then fp32, then / T
(`selective_log_softmax` of today's trainer); the head's weight gradient is accumulated over chunks
in fp32 (TRL and Liger do the same), so bf16 training does not add one rounding per chunk.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.utils import ModelOutput

FP32_BYTES = 4
# `torch.addmm(..., out_dtype=torch.float32)` from bf16/fp16 inputs: CUDA, torch >= 2.8 (TRL's guard)
_MM_OUT_DTYPE = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 8)


def chunk_rows(vocab_size: int, chunk_mib: float) -> int:
    """Rows per chunk so that one fp32 [rows, V] logits tile takes about `chunk_mib` MiB."""
    return max(1, int(chunk_mib * 2**20) // (vocab_size * FP32_BYTES))


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    # Same rounding as the model's own head followed by `.float() / T`; in place after the cast.
    logits = F.linear(hidden, weight, bias)
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).div_(temperature)


class ChunkedHeadFunction(torch.autograd.Function):
    """(log p(target), entropy) per row of `hidden` [N, H] under softmax((hidden W^T + b) / T)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        temperature: float,
        chunk_tokens: int,
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # entropy is usually a metric: no zero gradient for it
        n, dtype = hidden.shape[0], torch.promote_types(hidden.dtype, torch.float32)
        logprobs = torch.empty(n, dtype=dtype, device=hidden.device)
        entropy = torch.empty(n, dtype=dtype, device=hidden.device)
        log_norm = torch.empty(n, dtype=dtype, device=hidden.device)
        for start in range(0, n, chunk_tokens):
            end = min(start + chunk_tokens, n)
            z = _chunk_logits(hidden[start:end], weight, bias, temperature)  # [C, V] fp32
            lse = torch.logsumexp(z, dim=-1)
            log_norm[start:end] = lse
            logprobs[start:end] = z.gather(-1, targets[start:end, None]).squeeze(-1) - lse
            # H = -sum_v p_v log p_v; two [C, V] buffers at a time (log p, then p log p)
            z.sub_(lse[:, None])
            entropy[start:end] = -z.exp().mul_(z).sum(-1)
            del z
        ctx.save_for_backward(hidden, weight, bias, targets, log_norm, entropy)
        ctx.temperature = temperature
        ctx.chunk_tokens = chunk_tokens
        return logprobs, entropy

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_logprobs: Tensor | None, grad_entropy: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, log_norm, entropy = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None, None
        t, n = ctx.temperature, hidden.shape[0]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        grad_bias = (
            torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_bias and bias is not None else None
        )
        for start in range(0, n, ctx.chunk_tokens):
            end = min(start + ctx.chunk_tokens, n)
            h = hidden[start:end]
            # Two [C, V] fp32 buffers, updated in place: log p (then the entropy term) and p.
            log_p = _chunk_logits(h, weight, bias, t).sub_(log_norm[start:end, None])
            p = log_p.exp()
            if grad_entropy is not None:
                # dH/dz_v = -p_v (log p_v + H): kept negated in the log p buffer
                ge = grad_entropy[start:end, None].to(p.dtype)
                log_p.add_(entropy[start:end, None]).mul_(p).mul_(ge)
            if grad_logprobs is not None:
                # d log p_y / dz_v = 1[v = y] - p_v
                g = grad_logprobs[start:end, None].to(p.dtype)
                grad = p.mul_(-g).scatter_add_(-1, targets[start:end, None], g)
                if grad_entropy is not None:
                    grad.sub_(log_p)
            else:
                grad = log_p.neg_()
            del p, log_p
            grad = grad.div_(t).to(hidden.dtype)  # d/d(logits), in the weights' dtype as autograd would
            if grad_hidden is not None:
                grad_hidden[start:end] = grad @ weight
            if grad_weight is not None:
                _addmm_fp32(grad_weight, grad.t(), h)
            if grad_bias is not None:
                grad_bias.add_(grad.sum(0, dtype=acc))
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
            None,
        )


def _addmm_fp32(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b in fp32 without rounding a @ b to bf16 first (TRL's `_addmm_fp32`, chunked_logprob.py)."""
    if _MM_OUT_DTYPE and acc.device.type == "cuda" and a.dtype in (torch.float16, torch.bfloat16):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


def chunked_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
) -> tuple[Tensor, Tensor]:
    """(log p(targets) [N], entropy [N]) of hidden [N, H] through the head W [V, H] (+ b); fp32
    (fp64 for fp64 input)."""
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be [N, H] and targets [N], got {tuple(hidden.shape)}, {tuple(targets.shape)}"
        )
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    result: tuple[Tensor, Tensor] = ChunkedHeadFunction.apply(
        hidden, weight, bias, targets, temperature, chunk_tokens
    )
    return result


# ------------------------------------------------------------------------ the model's chunked head
@dataclass
class HeadRequest:
    """What the chunked head computes in a forward call: rows `select(last_hidden_state)` [N, H]
    scored against `targets` [N]."""

    select: Callable[[Tensor], Tensor]
    targets: Tensor
    temperature: float
    chunk_mib: float


@dataclass
class HeadOutput(ModelOutput):
    logprobs: Tensor | None = None
    entropy: Tensor | None = None
    past_key_values: Any = None


def add_chunked_head(model: torch.nn.Module) -> None:
    """Let `model(..., head=HeadRequest(...))` return a `HeadOutput` instead of logits (idempotent).

    The decoder runs inside the model's own forward call, so a DeepSpeed engine wrapping the model
    sees an ordinary forward (its output hooks are registered), and the head runs as the LM head
    module's forward, so ZeRO-3 gathers the head's weight for the forward and again before its
    backward through its module hooks (`deepspeed/runtime/zero/parameter_offload.py`, the pre/post
    forward hooks on every module). Without `head`, both forwards are the originals (generation is
    unchanged). Like TRL's `add_fused_lm_head` (trl/trainer/utils.py), which patches the same way.
    """
    if getattr(model, "_m2rl_chunked_head", False):
        return
    model_forward = model.forward
    lm_head = model.get_output_embeddings()
    head_forward = lm_head.forward

    def lm_head_forward(self: Any, hidden: Tensor, request: HeadRequest | None = None) -> Any:
        if request is None:
            return head_forward(hidden)
        rows = chunk_rows(self.weight.shape[0], request.chunk_mib)
        return chunked_logprobs(
            request.select(hidden),
            self.weight,
            request.targets,
            bias=self.bias,
            temperature=request.temperature,
            chunk_tokens=rows,
        )

    def forward(self: Any, *args: Any, head: HeadRequest | None = None, **kwargs: Any) -> Any:
        if head is None:
            return model_forward(*args, **kwargs)
        out = self.base_model(*args, **kwargs)  # the decoder stack (TRL: `backbone_attr`)
        logprobs, entropy = self.get_output_embeddings()(out.last_hidden_state, head)
        return HeadOutput(logprobs=logprobs, entropy=entropy, past_key_values=out.past_key_values)

    lm_head.forward = types.MethodType(lm_head_forward, lm_head)
    model.forward = types.MethodType(forward, model)
    model._m2rl_chunked_head = True
