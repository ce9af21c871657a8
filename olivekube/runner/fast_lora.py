"""The LoRA branch of a CPU training step in fewer passes over memory.

peft's LoRA Linear computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`. On the CPU, with LoRA
on the projections of a small model, the parts other than the matrix products are a large share of
a training step: torch draws each dropout mask element from one Mersenne Twister, builds a float
mask, and then scales and adds whole activations, forward and backward. `use_fast_lora` gives each
plain LoRA Linear the same function computed as

    base(x) + (drop(x) A^T) (c s B)^T      with c = 1 / (1 - p) in training, 1 in eval

where drop() zeroes each element with probability p, the dropout and LoRA scales fold into B (a
rank x out matrix) instead of scaling the output, and the addition is the matrix product's own
accumulate (addmm). The gradients of A and B are the same functions as peft's. Masks come from
numpy's PCG64, 16 random bits per element: p is rounded to a multiple of 1/65536 and c uses that p,
so the expectation is kept. Modules with a variant (DoRA, ...), bias on B, fan_in_fan_out, several
active adapters or a base other than nn.Linear keep peft's forward, as does any call with extra
arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

RESOLUTION = 1 << 16


class DropMasks:
    """Boolean dropout masks (True = dropped), reproducible for a seed."""

    def __init__(self, seed: int) -> None:
        self.bits = np.random.PCG64(seed)

    @staticmethod
    def threshold(p: float) -> int:
        """p as a count of 1/65536ths: an element is dropped when its 16 random bits are below it."""
        return round(p * RESOLUTION)

    def draw(self, shape: torch.Size, threshold: int) -> torch.Tensor:
        count = math.prod(shape)
        bits = self.bits.random_raw((count + 3) // 4).view(np.uint16)[:count]
        return torch.from_numpy(bits < threshold).view(shape)


class FastLoRAForward:
    """The forward of one peft LoRA Linear, installed on the module as its `forward`."""

    def __init__(self, module: Any, masks: DropMasks) -> None:
        self.module = module
        self.masks = masks
        self.peft_forward: Callable[..., torch.Tensor] = type(module).forward.__get__(module)
        self.thresholds = {
            name: DropMasks.threshold(d.p if isinstance(d, torch.nn.Dropout) else 0.0)
            for name, d in module.lora_dropout.items()
        }

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        module = self.module
        active = module.active_adapters
        if args or kwargs or module.disable_adapters or module.merged or len(active) != 1:
            return self.peft_forward(x, *args, **kwargs)
        name = active[0]
        if name not in self.thresholds or not plain_adapter(module, name):
            return self.peft_forward(x, *args, **kwargs)
        out = module.base_layer(x)
        a = module.lora_A[name].weight
        scale = module.scaling[name]
        threshold = self.thresholds[name]
        if module.training and threshold:
            x = x.masked_fill(self.masks.draw(x.shape, threshold), 0.0)
            scale = scale * RESOLUTION / (RESOLUTION - threshold)
        h = F.linear(x.to(a.dtype), a)
        b = module.lora_B[name].weight * scale
        summed = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.t())
        return summed.view(out.shape)


def plain_adapter(module: Any, name: str) -> bool:
    """Vanilla LoRA for this adapter: no variant, no bias on B, weights in the base's dtype."""
    return (
        name not in module.lora_variant
        and not module.lora_bias.get(name, False)
        and module.lora_A[name].weight.dtype == module.base_layer.weight.dtype
    )


def use_fast_lora(model: Any, seed: int) -> int:
    """Give the model's plain LoRA Linear modules the fused forward; returns how many. Masks are
    reproducible for a given seed."""
    from peft.tuners.lora.layer import Linear

    masks = DropMasks(seed)
    installed = 0
    for module in model.modules():
        if (
            type(module) is Linear
            and type(module.base_layer) is torch.nn.Linear
            and not module.fan_in_fan_out
            and any(plain_adapter(module, name) for name in module.lora_A)
        ):
            module.forward = FastLoRAForward(module, masks)  # type: ignore[method-assign]
            installed += 1
    return installed
