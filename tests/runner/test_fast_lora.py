"""The CPU LoRA forward: peft's function (dropout, scaling, sum) in fewer passes, reproducible masks."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from olivekube.runner.fast_lora import (
    RESOLUTION,
    FastLoRAForward,
    LoRALinearFunction,
    drop_threshold,
    keep_mask,
    use_fast_lora,
)
from tests.helpers.models import peft_model


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_masks_drop_p_rounded_to_16_bits(p: float) -> None:
    torch.manual_seed(1)
    threshold = drop_threshold(p)
    rounded = threshold / RESOLUTION
    assert abs(rounded - p) <= 0.5 / RESOLUTION
    keep = keep_mask(torch.Size([1000, 1000]), threshold)
    assert keep.dtype == torch.float32 and keep.shape == (1000, 1000)
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    dropped = (keep == 0).double().mean().item()
    assert abs(dropped - rounded) < 6 * math.sqrt(rounded * (1 - rounded) / 1e6)


def test_masks_are_independent_of_each_other_and_of_position() -> None:
    torch.manual_seed(2)
    half = drop_threshold(0.5)
    first, second = (keep_mask(torch.Size([200_001]), half) == 0 for _ in range(2))
    assert abs((first & second).double().mean().item() - 0.25) < 0.006
    quarters = first[:200_000].view(4, -1).double().mean(dim=1)
    assert torch.allclose(quarters, torch.full_like(quarters, 0.5), atol=0.012)


def test_masks_follow_torch_seed() -> None:
    shape, threshold = torch.Size([4, 128, 256]), drop_threshold(0.05)
    masks = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        masks.append(keep_mask(shape, threshold))
    a, b, c = masks
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert keep_mask(shape, threshold, torch.float64).dtype == torch.float64


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("with_mask", [True, False])
def test_the_one_node_backward_is_the_derivative_of_its_forward(with_bias: bool, with_mask: bool) -> None:
    """torch's numerical gradient check, in float64, of every input that takes a gradient."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(2, 5, 6) > 0.3).double() if with_mask else None
    inputs = (x, weight, bias if with_bias else None, a, b, 1.7, keep)
    assert torch.autograd.gradcheck(LoRALinearFunction.apply, inputs)
    expected = x @ weight.T + (bias if with_bias else 0) + ((x * (1 if keep is None else keep)) @ a.T @ b.T) * 1.7
    assert torch.allclose(LoRALinearFunction.apply(*inputs), expected)
    frozen_x = x.detach()  # the first layer's input takes no gradient: only A and B get one
    out = LoRALinearFunction.apply(frozen_x, *inputs[1:])
    only_adapter = lambda a, b: LoRALinearFunction.apply(frozen_x, weight, None, a, b, 1.7, keep)  # noqa: E731
    assert torch.autograd.gradcheck(only_adapter, (a, b))
    out.sum().backward()
    assert frozen_x.grad is None and a.grad is not None


def _lora_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}


def test_one_module_in_training_is_peft_dropout_scaling_and_sum(tiny_models: dict[str, Path]) -> None:
    model = peft_model(tiny_models["llama"]).train()
    module = model.base_model.model.model.layers[0].self_attn.q_proj
    assert use_fast_lora(model) > 0 and isinstance(module.forward, FastLoRAForward)
    x = torch.randn(2, 7, module.in_features, requires_grad=True)
    torch.manual_seed(5)
    out = module(x)
    out.square().sum().backward()
    got_x, got_a, got_b = x.grad, module.lora_A["default"].weight.grad, module.lora_B["default"].weight.grad

    threshold = drop_threshold(0.1)
    torch.manual_seed(5)
    keep = keep_mask(x.shape, threshold)  # the same draw: first after seed 5
    ref_x = x.detach().clone().requires_grad_()
    a = module.lora_A["default"].weight.detach().clone().requires_grad_()
    b = module.lora_B["default"].weight.detach().clone().requires_grad_()
    dropped = ref_x * keep / (1 - threshold / RESOLUTION)
    expected = module.base_layer(ref_x) + (dropped @ a.T @ b.T) * module.scaling["default"]
    expected.square().sum().backward()
    assert torch.allclose(out, expected, atol=1e-5)
    for got, ref in ((got_x, ref_x.grad), (got_a, a.grad), (got_b, b.grad)):
        assert got is not None and ref is not None
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_a_whole_model_matches_peft_where_no_mask_is_drawn(tiny_models: dict[str, Path], dropout: float) -> None:
    """Eval mode (any dropout) and training without dropout: logits, loss and adapter gradients
    equal peft's own forward."""
    reference = peft_model(tiny_models["llama"], lora_dropout=dropout)
    fast = copy.deepcopy(reference)
    layers = reference.config.num_hidden_layers
    assert use_fast_lora(fast) == 2 * layers
    ids = torch.tensor([[1, 5, 9, 14, 20, 7, 3], [2, 8, 8, 30, 11, 4, 6]])
    modes = ["eval"] + (["train"] if dropout == 0 else [])
    for mode in modes:
        results = []
        for model in (reference, fast):
            getattr(model, mode)()
            model.zero_grad()
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            results.append((out.logits.detach(), _lora_grads(model)))
        (ref_logits, ref_grads), (logits, grads) = results
        assert torch.allclose(logits, ref_logits, atol=1e-5), mode
        assert grads.keys() == ref_grads.keys() and len(grads) == 4 * layers
        for name, grad in grads.items():
            assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), (mode, name)


def test_dropout_in_training_keeps_the_expectation(tiny_models: dict[str, Path]) -> None:
    model = peft_model(tiny_models["llama"], lora_dropout=0.3).train()
    module = model.base_model.model.model.layers[1].self_attn.v_proj
    use_fast_lora(model)
    x = torch.randn(1, 3, module.in_features)
    with torch.no_grad():
        base = module.base_layer(x)
        draws = torch.stack([module(x) - base for _ in range(4000)])
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        exact = (x @ a.T @ b.T) * module.scaling["default"]
    assert not torch.allclose(draws[0], draws[1])  # fresh masks every call
    error = (draws.mean(dim=0) - exact).abs().max().item()
    assert error < 6 * draws.std(dim=0).max().item() / math.sqrt(len(draws))


def test_other_adapters_and_calls_keep_peft(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    assert use_fast_lora(peft_model(tiny_models["llama"], use_dora=True)) == 0
    model = peft_model(tiny_models["llama"]).eval()
    use_fast_lora(model)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 14]])
    module = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, module.in_features)
    with torch.no_grad():
        with model.disable_adapter():
            off = model(input_ids=ids).logits
        assert torch.allclose(off, base(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(model(input_ids=ids).logits, off, atol=1e-4)
        # a mixed-adapter batch is peft's own path, and agrees with the fused one
        assert torch.allclose(module(x, adapter_names=["default", "default"]), module(x), atol=1e-6)


def test_activation_checkpointing_recomputes_the_same_masks(tiny_models: dict[str, Path]) -> None:
    """Checkpointing recomputes each layer's forward in the backward: the masks must be the ones the
    forward drew, or the adapter's gradients belong to another function than the loss."""
    plain, checkpointed = (peft_model(tiny_models["llama"], lora_dropout=0.3).train() for _ in range(2))
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.tensor([[1, 5, 9, 14, 20, 7, 3], [2, 8, 8, 30, 11, 4, 6]])
    results = []
    for model in (plain, checkpointed):
        assert use_fast_lora(model) > 0
        torch.manual_seed(11)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), _lora_grads(model)))
    (plain_loss, plain_grads), (loss, grads) = results
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, plain_grads[name], rtol=1e-5, atol=1e-7), name


def test_a_base_that_trains_or_autocast_keeps_peft(tiny_models: dict[str, Path]) -> None:
    model = peft_model(tiny_models["llama"], lora_dropout=0.0).train()
    use_fast_lora(model)
    module = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, module.in_features)
    calls = []
    peft_forward = module.forward.peft_forward
    module.forward.peft_forward = lambda *a, **k: calls.append(1) or peft_forward(*a, **k)
    fused = module(x)
    assert not calls
    module.base_layer.weight.requires_grad_(True)
    assert torch.allclose(module(x), fused, atol=1e-6) and len(calls) == 1
    module.base_layer.weight.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module(x).dtype == torch.bfloat16 and len(calls) == 2
    module(x)
    assert len(calls) == 2
