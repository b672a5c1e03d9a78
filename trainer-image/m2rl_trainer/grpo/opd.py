"""Multi-teacher on-policy distillation (MT-OPD): per-token advantages from each domain's teacher.

The student samples responses to its prompts as in GRPO; each response is routed by its domain to
that domain's teacher (an expert of the run's domain, e.g. the math expert for math prompts), which
scores the student's tokens (the log-probability of each given token, in one forward pass; no
sampling). The advantage of response token t is

    A_t = log pi_teacher(y_t | x, y_<t) - log pi_student(y_t | x, y_<t)

the negative of the per-token reverse-KL estimate log pi_student / pi_teacher at the sampled token.
Fed to the clipped policy loss unchanged (losses.policy_loss accepts [B, T] advantages), its gradient
at ratio 1 is E[(log pi_student - log pi_teacher) grad log pi_student] per token: the score-function
gradient of KL(pi_student || pi_teacher), so the update moves the student toward the teacher where
the student samples (mode-seeking; Agarwal et al. 2024, "On-Policy Distillation of Language
Models", arXiv 2306.13649; Thinking Machines' "On-Policy Distillation", 2025).

As the M2RL study runs it (Mosi-AI/M2RL `slime/on_policy_distillation.py` and slime's
`compute_advantages_and_returns`, estimator "on_policy_distillation"; `scripts/multi_teacher_opd.sh`):

- the teacher's log-probs are its prompt log-probs of the whole sequence (prompt + response), of
  which the last `response_length` are kept (`align_response_logprobs`);
- the student's are the trainer's own log-probs of the sampled tokens before the update (pi_old),
  not the rollout engine's; advantages are computed once per step and stay fixed across updates;
- no reward, no group baseline, no advantage normalisation, KL-to-reference coefficient 0;
- routing by the sample's domain: math, code, science and IF rows to their experts, the rest
  (the agent rows) to the agent expert (`route_by_domain`).

Deviation: where the study's teacher sequence and the student's differ in length it truncates
both to the shorter; here they must have the same length (`ValueError`), since both score the
same token ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def opd_advantages(teacher_logprobs: Tensor, student_logprobs: Tensor, mask: Tensor) -> Tensor:
    """A_t = teacher - student on response tokens, 0 elsewhere.

    teacher_logprobs, student_logprobs: [B, T] log-probabilities of the same sampled tokens (the
    student's without a graph: advantages are constants of the loss); mask: [B, T], 1 on tokens the
    loss trains (model tokens; 0 on padding, prompt and tool-result tokens) -> advantages [B, T],
    float32, detached.
    """
    if teacher_logprobs.shape != student_logprobs.shape or teacher_logprobs.shape != mask.shape:
        raise ValueError(
            f"teacher {tuple(teacher_logprobs.shape)}, student {tuple(student_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} log-probs must have the same [batch, tokens] shape"
        )
    if teacher_logprobs.ndim != 2:
        raise ValueError(f"log-probs must be [batch, tokens], got {teacher_logprobs.ndim} dimensions")
    difference = teacher_logprobs.detach().float() - student_logprobs.detach().float()
    return torch.where(mask.bool(), difference, torch.zeros_like(difference))


def reverse_kl_per_sequence(teacher_logprobs: Tensor, student_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Mean over each response's masked tokens of log pi_student - log pi_teacher: the k1 estimate of
    the per-token reverse KL on the student's own samples, [B] (the distillation metric; 0 for an
    empty response)."""
    per_token = -opd_advantages(teacher_logprobs, student_logprobs, mask)  # [B, T]
    counts = mask.float().sum(dim=1)
    return per_token.sum(dim=1) / counts.clamp(min=1.0)


def route_by_domain(domains: Sequence[str], teachers: Mapping[str, str]) -> dict[str, list[int]]:
    """Which samples each teacher scores: teacher -> indices into `domains`, in order.

    teachers maps a domain name to its teacher's name (several domains may share one teacher). A
    sample whose domain has no teacher is an error naming the domain (an MT-OPD run needs one per
    domain; the config check says so before anything runs).
    """
    routes: dict[str, list[int]] = {}
    for index, domain in enumerate(domains):
        teacher = teachers.get(domain)
        if teacher is None:
            raise ValueError(f"domain {domain!r} has no teacher; teachers are set for {sorted(teachers)}")
        routes.setdefault(teacher, []).append(index)
    return routes


def align_response_logprobs(sequence_logprobs: Sequence[float | None], response_length: int) -> list[float]:
    """The response's entries of a teacher's per-position log-probs of a whole sequence.

    sequence_logprobs[i] is log p(token_i | tokens_<i) for every position of prompt + response (an
    engine's prompt log-probs: vLLM's `prompt_logprobs`, sglang's `input_token_logprobs`, whose
    first entry is None, there being no context), so the response's are the last `response_length`,
    as the study's `post_process_rewards` takes them. A None among them is an error.
    """
    if response_length < 0 or response_length > len(sequence_logprobs) - 1:
        raise ValueError(
            f"response_length {response_length} does not fit a sequence of {len(sequence_logprobs)} "
            "positions (the first has no log-prob)"
        )
    tail = list(sequence_logprobs[len(sequence_logprobs) - response_length :])
    if any(value is None for value in tail):
        raise ValueError("the teacher returned no log-prob for a response token")
    return [float(v) for v in tail]  # type: ignore[arg-type]
