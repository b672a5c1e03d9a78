"""The chunked LM head equals the full-logits computation (values and gradients), and agrees with the
two maintained chunked implementations it was written after: TRL 1.16's `ChunkedLogProbFunction`
(the head of TRL's GRPOTrainer) and Liger-Kernel's `_ChunkedSelectiveLogProbFunction`."""

from __future__ import annotations

import pytest
import torch

from m2rl_trainer.grpo import selective_log_softmax, token_entropy_from_logits
from m2rl_trainer.train.logprobs import chunk_rows, chunked_logprobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, H, V = 37, 16, 301


def _inputs(dtype: torch.dtype = torch.float64, bias: bool = True, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, H, generator=g) * 2).to(dtype).requires_grad_()
    weight = torch.randn(V, H, generator=g).to(dtype).requires_grad_()
    b = torch.randn(V, generator=g).to(dtype).requires_grad_() if bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    # upstream gradients, as a loss would send them
    return hidden, weight, b, targets, torch.randn(N, generator=g), torch.randn(N, generator=g)


def _full(hidden, weight, bias, targets, temperature):
    """Today's path: the whole logits, then selective log-softmax and entropy."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float() / temperature
    return selective_log_softmax(logits[None], targets[None])[0], token_entropy_from_logits(logits[None])[0]


def _grads(outputs, upstream, inputs):
    total = sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True) if u is not None)
    return torch.autograd.grad(total, [x for x in inputs if x is not None], retain_graph=True)


@pytest.mark.parametrize("chunk", [1, 5, 37, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_chunked_equals_full_values_and_gradients(chunk: int, temperature: float) -> None:
    hidden, weight, bias, targets, g_lp, g_ent = _inputs(torch.float32)
    want = _full(hidden, weight, bias, targets, temperature)
    got = chunked_logprobs(hidden, weight, targets, bias=bias, temperature=temperature, chunk_tokens=chunk)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for upstream in [(g_lp, None), (None, g_ent), (g_lp, g_ent)]:
        ref = _grads(want, upstream, (hidden, weight, bias))
        mine = _grads(got, upstream, (hidden, weight, bias))
        for name, a, b in zip(("hidden", "weight", "bias"), mine, ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)  # fp32 sums of ~300 terms


def test_gradients_match_finite_differences_in_float64() -> None:
    hidden, weight, bias, targets, _, _ = _inputs(torch.float64)
    small = (
        hidden[:5].detach().requires_grad_(),
        weight[:11].detach().requires_grad_(),
        bias[:11].detach().requires_grad_(),
    )

    def f(h, w, b):
        return chunked_logprobs(h, w, targets[:5] % 11, bias=b, temperature=0.7, chunk_tokens=2)

    assert torch.autograd.gradcheck(f, small, eps=1e-6, atol=1e-6)


def test_bf16_matches_the_full_path_and_keeps_fp32_outputs() -> None:
    hidden, weight, _, targets, g_lp, _ = _inputs(torch.bfloat16, bias=False)
    want = _full(hidden, weight, None, targets, 1.0)
    got = chunked_logprobs(hidden, weight, targets, chunk_tokens=8)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)  # same bf16 matmul, fp32 after
    ref = _grads(want, (g_lp, None), (hidden, weight))
    mine = _grads(got, (g_lp, None), (hidden, weight))
    assert mine[1].dtype == torch.bfloat16
    # the weight gradient is accumulated over chunks in fp32, then rounded once: within bf16 rounding
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


def test_agrees_with_trl_and_liger_chunked_heads() -> None:
    from liger_kernel.chunked_loss.fused_linear_ppo import _ChunkedSelectiveLogProbFunction
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    hidden, weight, bias, targets, g_lp, g_ent = _inputs(torch.float32)
    mine = chunked_logprobs(hidden, weight, targets, bias=bias, temperature=0.8, chunk_tokens=7)
    trl = ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 0.8, 64, None, 1.0, ("entropy",))
    liger = _ChunkedSelectiveLogProbFunction.apply(hidden, weight, targets, bias, 0.8, 64)
    torch.testing.assert_close(mine[0], trl[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine[1], trl[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine[0], liger, atol=1e-5, rtol=1e-5)
    inputs = (hidden, weight, bias)
    for a, b in zip(_grads(mine, (g_lp, g_ent), inputs), _grads(trl[:2], (g_lp, g_ent), inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(_grads(mine[:1], (g_lp,), inputs), _grads((liger,), (g_lp,), inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_chunk_rows_bounds_the_tile_and_bad_input_is_named() -> None:
    assert chunk_rows(151_936, 256) == 441  # 441 x 151,936 x 4 bytes <= 256 MiB
    assert chunk_rows(151_936, 0.001) == 1
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_logprobs(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, dtype=torch.long), chunk_tokens=0
        )
    with pytest.raises(ValueError, match=r"hidden must be \[N, H\]"):
        chunked_logprobs(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
