"""The CPU LoRA dropout: the same inverted dropout as torch's, with reproducible masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from olivekube.runner.dropout import FastLoRADropout, use_fast_lora_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keeps_one_minus_p_and_keeps_the_expectation(p: float) -> None:
    dropout = FastLoRADropout(p, np.random.default_rng(1)).train()
    x = torch.ones(1000, 1000)
    y = dropout(x)
    kept = (y != 0).double().mean().item()
    n = x.numel()
    assert abs(kept - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    assert abs(dropout.p - p) <= 0.5 / 65536
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - dropout.p)))
    assert abs(y.double().mean().item() - 1.0) < 6 * math.sqrt(p / (1 - p) / n)


def test_masks_are_independent_of_each_other_and_of_position() -> None:
    dropout = FastLoRADropout(0.5, np.random.default_rng(2)).train()
    first = dropout(torch.ones(200_000)) != 0
    second = dropout(torch.ones(200_000)) != 0
    both = (first & second).double().mean().item()
    assert abs(both - 0.25) < 0.006
    halves = first.view(2, -1).double().mean(dim=1)
    assert torch.allclose(halves, torch.full_like(halves, 0.5), atol=0.006)


def test_eval_mode_is_the_identity_and_the_gradient_is_the_mask() -> None:
    dropout = FastLoRADropout(0.3, np.random.default_rng(3))
    x = torch.randn(64, 32, requires_grad=True)
    assert dropout.eval()(x) is x
    y = dropout.train()(x)
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, (y != 0).float() / (1 - dropout.p))


def test_same_seed_same_masks() -> None:
    x = torch.ones(4, 128, 256)
    a = FastLoRADropout(0.05, np.random.default_rng(7)).train()(x)
    b = FastLoRADropout(0.05, np.random.default_rng(7)).train()(x)
    c = FastLoRADropout(0.05, np.random.default_rng(8)).train()(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_replaces_the_lora_dropouts_of_a_peft_model(tiny_models: dict[str, Path]) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    layers = base.config.num_hidden_layers
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config)
    assert use_fast_lora_dropout(model, seed=0) == 2 * layers
    replaced = [m for m in model.modules() if isinstance(m, FastLoRADropout)]
    assert len(replaced) == 2 * layers and all(abs(m.p - 0.1) < 1e-5 for m in replaced)
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    model.train()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)
    no_dropout = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"]),
    )
    assert use_fast_lora_dropout(no_dropout, seed=0) == 0
