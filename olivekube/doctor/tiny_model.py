"""Tiny random causal LMs (Phi-3, Llama, Qwen2 configs) with a byte-level BPE tokenizer trained here.

`olivekube doctor` builds one to check a node end to end without a model hub; the tests build theirs
the same way (tools/tiny_models.py). The weights are random; the architectures, files and tokenizer
are the real thing, so training, merging, export and generation run the same code as for a hub model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer trained on `texts`, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def model_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4):  # type: ignore[no-untyped-def]
    """A small config of the given architecture: phi3, llama or qwen2."""
    from transformers import LlamaConfig, Phi3Config, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
        "tie_word_embeddings": False,
    }
    if arch == "phi3":
        # Equal original and current max positions keep the builder off the long-RoPE path.
        return Phi3Config(**common | {"original_max_position_embeddings": 512, "rope_scaling": None})
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False)
    raise ValueError(f"unknown architecture {arch!r}; use phi3, llama or qwen2")


def pretrain(model, tokenizer, texts: list[str], steps: int, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """A short full-parameter language-model pretraining on `texts`, so that the base knows the
    words and a LoRA adapter has something to build on (as it has with a real base model)."""
    import random

    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 16), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def make_model(
    out: Path,
    arch: str,
    texts: Iterable[str],
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    pretrain_texts: list[str] | None = None,
    pretrain_steps: int = 0,
) -> Path:
    """Write a random (optionally briefly pretrained) model of `arch` with a tokenizer trained on `texts`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(list(texts))
    config = model_config(arch, len(tokenizer), hidden, layers, heads)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    if pretrain_steps:
        pretrain(model, tokenizer, pretrain_texts or list(texts), pretrain_steps, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
