"""Tiny peft models for tests of the LoRA code."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peft_model(path: Path, **lora: Any) -> Any:
    """A peft LoRA model of a tiny model (r 4 on q_proj and v_proj unless given), B drawn at random."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    options = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"], **lora}
    model = get_peft_model(base, LoraConfig(**options))
    with torch.no_grad():  # B starts at zero in peft: make the adapter do something
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    return model
