"""A short supervised warm-up (SFT) on prompt/completion pairs, so RL starts from a model that is
sometimes right: GRPO learns nothing from groups that are all wrong.

Single process, plain PyTorch AdamW: it is a test and quickstart utility for tiny models, not the
production SFT path (the study starts from an SFT checkpoint made elsewhere).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch


def supervised_warmup(
    model_dir: Path,
    out_dir: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fine-tune on (prompt, completion + EOS) with the loss on completion tokens only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    encoded = []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((p, c))
    pad = tokenizer.pad_token_id
    for step in range(steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        length = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((batch_size, length), pad)
        labels = torch.full((batch_size, length), -100)
        attention = torch.zeros((batch_size, length), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            seq = p + c
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(c)
            attention[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for group in optimizer.param_groups:  # linear decay to 10%: a stable end point
            group["lr"] = learning_rate * (1.0 - 0.9 * (step + 1) / steps)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def greedy_accuracy(model_dir: Path, rows: Sequence[dict[str, str]], max_new_tokens: int = 8) -> float:
    """Fraction of rows whose greedy completion has `\\boxed{answer}` right (the math verifier's rule,
    checked here by exact string match because answers are integers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    correct = 0
    for start in range(0, len(rows), 128):
        chunk = rows[start : start + 128]
        inputs = tokenizer(
            [r["prompt"] for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(f"\\boxed{{{r['answer']}}}" in t for r, t in zip(chunk, texts, strict=True))
    return correct / len(rows)
