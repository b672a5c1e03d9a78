"""MT-OPD's core on fixed tensors, against an independent computation (plain Python over ragged lists,
log-probabilities computed from probabilities), and its gradient against the exact reverse KL."""

from __future__ import annotations

import math

import pytest
import torch

from m2rl_trainer.grpo.losses import policy_loss
from m2rl_trainer.grpo.opd import (
    align_response_logprobs,
    opd_advantages,
    reverse_kl_per_sequence,
    route_by_domain,
)

# Two responses (lengths 3 and 2, padded to 3), their tokens' probabilities under teacher and student.
TEACHER_P = [[0.9, 0.5, 0.05], [0.2, 0.7]]
STUDENT_P = [[0.6, 0.5, 0.30], [0.4, 0.1]]
# Response 0's last token is a tool result (loss mask 0) in the multi-turn case.
MASKS = [[1, 1, 0], [1, 1]]


def _padded(rows: list[list[float]], fill: float) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.float64)


def reference_advantages(teacher_p, student_p, masks) -> list[list[float]]:
    """A_t = log(p_teacher / p_student) on trained tokens, 0 on the others."""
    return [
        [math.log(t / s) if m else 0.0 for t, s, m in zip(tr, sr, mr, strict=True)]
        for tr, sr, mr in zip(teacher_p, student_p, masks, strict=True)
    ]


def test_advantages_are_teacher_minus_student_on_trained_tokens():
    teacher = _padded([[math.log(p) for p in r] for r in TEACHER_P], -7.0)
    student = _padded([[math.log(p) for p in r] for r in STUDENT_P], -3.0).requires_grad_()
    mask = _padded([[float(m) for m in r] for r in MASKS], 0.0)
    got = opd_advantages(teacher, student, mask)
    want = reference_advantages(TEACHER_P, STUDENT_P, MASKS)
    assert got.dtype == torch.float32 and not got.requires_grad
    for row, expected in zip(got.tolist(), want, strict=True):
        assert row[: len(expected)] == pytest.approx(expected, abs=1e-6)
        assert row[len(expected) :] == [0.0] * (len(row) - len(expected))  # padding
    # the numbers themselves, so the test cannot pass on a sign error shared by both sides
    assert got[0].tolist() == pytest.approx([math.log(1.5), 0.0, 0.0], abs=1e-6)
    assert got[1].tolist() == pytest.approx([math.log(0.5), math.log(7.0), 0.0], abs=1e-6)
    kl = reverse_kl_per_sequence(teacher, student, mask)
    assert kl.tolist() == pytest.approx([-math.log(1.5) / 2, -(math.log(0.5) + math.log(7.0)) / 2], abs=1e-6)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [(((2, 3), (2, 4), (2, 3)), "same"), (((2, 3, 1), (2, 3, 1), (2, 3, 1)), "dimensions")],
    ids=["mismatched", "not-2d"],
)
def test_shapes_are_checked(shapes, message):
    with pytest.raises(ValueError, match=message):
        opd_advantages(*(torch.zeros(s) for s in shapes))


def test_policy_gradient_with_opd_advantages_is_the_reverse_kl_gradient():
    """At ratio 1 the clipped loss with A = log pi_T - log pi_S descends KL(pi_S || pi_T): enumerate
    every token of a one-step distribution, weight each by V * pi_S(y) (so the mean over the V
    'sequences' is the expectation under the student) and compare with autograd of the exact KL."""
    torch.manual_seed(0)
    vocab = 7
    logits = torch.randn(vocab, dtype=torch.float64, requires_grad=True)
    teacher_logp = torch.log_softmax(torch.randn(vocab, dtype=torch.float64), dim=0)

    student_logp = torch.log_softmax(logits, dim=0)  # [V]
    exact_kl = (student_logp.exp() * (student_logp - teacher_logp)).sum()
    (want,) = torch.autograd.grad(exact_kl, logits)

    logp = torch.log_softmax(logits, dim=0).unsqueeze(1)  # [V sequences, 1 token]
    old = logp.detach()
    advantages = opd_advantages(teacher_logp.unsqueeze(1), old, torch.ones_like(old)).double()
    weights = vocab * old.exp()  # importance weights of the enumeration, constants
    loss, _ = policy_loss(
        logp,
        old,
        advantages * weights,
        torch.ones_like(old),
        clip_low=0.2,
        clip_high=0.2,
        aggregation="seq-mean-token-sum",
    )
    (got,) = torch.autograd.grad(loss, logits)
    assert got.tolist() == pytest.approx(want.tolist(), rel=1e-5, abs=1e-8)  # float32 advantages
    assert want.abs().max() > 1e-3  # a real gradient, not two zeros


def test_routing_by_domain_groups_samples_per_teacher():
    teachers = {"math": "math-expert", "code": "code-expert", "science": "stem-expert", "if": "stem-expert"}
    routes = route_by_domain(["code", "math", "science", "math", "if"], teachers)
    assert routes == {"code-expert": [0], "math-expert": [1, 3], "stem-expert": [2, 4]}
    with pytest.raises(
        ValueError, match=r"domain 'agent' has no teacher; teachers are set for \['code', 'if'"
    ):
        route_by_domain(["math", "agent"], teachers)


def test_teacher_logprobs_of_the_response_are_the_sequence_tail():
    # prompt of 3 tokens (the first has no log-prob) and a response of 2
    assert align_response_logprobs([None, -0.1, -0.2, -0.3, -0.4], 2) == [-0.3, -0.4]
    assert align_response_logprobs([None, -0.1], 0) == []
    with pytest.raises(ValueError, match="does not fit"):
        align_response_logprobs([None, -0.1, -0.2], 3)
    with pytest.raises(ValueError, match="no log-prob for a response token"):
        align_response_logprobs([None, -0.1, None, -0.3], 2)
