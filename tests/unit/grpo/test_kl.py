"""KL estimators: closed forms, signs, exact expectations, and verl's clamps."""

import math

import pytest
import torch

from m2rl_trainer.grpo import kl_penalty
from tests.unit.grpo import reference

LOGPROBS = [-0.1, -0.7, -2.3, -1.0, -4.0]
REF_LOGPROBS = [-0.4, -0.7, -1.1, -3.5, -3.2]  # log r = ref - logp spans -2.5 .. +1.2


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_matches_closed_form(estimator):
    got = kl_penalty(
        torch.tensor(LOGPROBS, dtype=torch.float64),
        torch.tensor(REF_LOGPROBS, dtype=torch.float64),
        estimator,
    )
    want = [reference.kl(lp, ref, estimator) for lp, ref in zip(LOGPROBS, REF_LOGPROBS, strict=True)]
    assert got.tolist() == pytest.approx(want, abs=1e-12)


def test_k1_sign_is_verls_logp_minus_ref():
    # The policy puts more mass on the sample than the reference: a positive KL estimate.
    assert kl_penalty(torch.tensor([-0.5]), torch.tensor([-1.5]), "k1").item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_k3_is_non_negative_and_zero_only_at_equality(dtype):
    # 361,201 pairs, many with log r within rounding of 0, where exp(x) - 1 - x can round below 0.
    grid = torch.linspace(-15.0, 15.0, 601, dtype=dtype)
    logp, ref = torch.meshgrid(grid / 3 - 5, grid, indexing="ij")
    k3 = kl_penalty(logp, ref, "k3")
    assert (k3 >= 0).all()
    assert kl_penalty(torch.tensor([-1.3]), torch.tensor([-1.3]), "k3").item() == 0.0


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_unbiased_estimators_average_to_the_true_kl(estimator):
    # E_{y ~ p}[k(y)] = KL(p || q) exactly, summing over a 5-token vocabulary with weights p(y).
    p = reference.softmax([0.3, -1.0, 2.0, 0.0, -0.5])
    q = reference.softmax([1.0, 0.2, 0.5, -1.0, 0.1])
    true_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    logp, logq = torch.tensor(p, dtype=torch.float64).log(), torch.tensor(q, dtype=torch.float64).log()
    expectation = (torch.tensor(p, dtype=torch.float64) * kl_penalty(logp, logq, estimator)).sum().item()
    assert expectation == pytest.approx(true_kl, abs=1e-12)
    assert true_kl > 0.1  # the distributions are far enough apart for the check to mean something


def test_k3_is_clamped_like_verl():
    # log r = 30 is clamped to 20, and e^20 - 21 to 10; the gradient there is zero.
    logp = torch.tensor([-31.0], requires_grad=True)
    out = kl_penalty(logp, torch.tensor([-1.0]), "k3")
    out.sum().backward()
    assert out.item() == 10.0
    assert logp.grad is not None and logp.grad.item() == 0.0


def test_k3_gradient_matches_closed_form():
    # d/d logp [e^(ref - logp) - (ref - logp) - 1] = 1 - e^(ref - logp)
    logp = torch.tensor(LOGPROBS, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(REF_LOGPROBS, dtype=torch.float64)
    kl_penalty(logp, ref, "k3").sum().backward()
    want = [1 - math.exp(r - lp) for lp, r in zip(LOGPROBS, REF_LOGPROBS, strict=True)]
    assert logp.grad is not None and logp.grad.tolist() == pytest.approx(want, abs=1e-12)


def test_unknown_estimator_names_itself():
    with pytest.raises(ValueError, match="'k4'"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")
