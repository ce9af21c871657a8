"""The LoRA Linear of a CPU training step as one autograd node.

peft's LoRA Linear computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` from separate modules,
each a node of the autograd graph. On the CPU, with LoRA on the projections of a small model, the
parts other than the matrix products are a large share of a training step: torch draws each
dropout mask element from one Mersenne Twister, the mask and the scales pass over whole
activations forward and backward, and the engine sums the base and LoRA gradients of x in a pass
of its own. `use_fast_lora` gives each plain LoRA Linear the same function computed as

    y = x W^T + bias + ((x * k) A^T) (c s B)^T      k: keep mask, c = 1 / (1 - p) in training

in one `LoRALinearFunction`: the dropout and LoRA scales fold into B (a rank x out matrix), the
sum is the matrix product's own accumulate, and the backward is written out:

    g_B = c s g^T h        g_A = (g c s B)^T (x * k)        g_x = g W + ((g c s B) A) * k

with h = (x * k) A^T. The base weights are frozen (the node gives them no gradient; a base that
trains keeps peft's forward). Keep masks are float 0/1 tensors, which multiply at the speed of an
add, where a boolean mask's masked_fill is seven times slower here. They come from numpy's PCG64,
16 random bits per element, seeded from torch's generator: p is rounded to a multiple of 1/65536
and c uses that p, so the expectation is kept. Modules with a variant (DoRA, ...), bias on B,
fan_in_fan_out, several active adapters, a base other than nn.Linear, autocast, or an input dtype
other than the base's keep peft's forward, as does any call with extra arguments.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

RESOLUTION = 1 << 16
WORD = (1 << 64) - 1
_local = threading.local()


def drop_threshold(p: float) -> int:
    """p as a count of 1/65536ths: an element is dropped when its 16 random bits are below it."""
    return round(p * RESOLUTION)


def keep_mask(shape: torch.Size, threshold: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A float keep mask (1 = kept, 0 = dropped). Its bits come from a PCG64 whose 128-bit state and
    stream are drawn from torch's generator, so that torch.manual_seed reproduces the mask and
    activation checkpointing, which restores torch's generator before it recomputes a forward,
    recomputes the same one. (The state is set directly: seeding through numpy's SeedSequence at
    each call costs more than the draw.)"""
    count = math.prod(shape)
    words = [w & WORD for w in torch.randint(-(2**63), 2**63 - 1, (4,), dtype=torch.int64).tolist()]
    generator = _pcg64()
    generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": words[0] << 64 | words[1], "inc": words[2] << 64 | words[3] | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    bits = generator.random_raw((count + 3) // 4).view(np.uint16)[:count]
    keep = torch.from_numpy((bits >= threshold).astype(np.float32)).view(shape)
    return keep if dtype == torch.float32 else keep.to(dtype)


def _pcg64() -> np.random.PCG64:
    """This thread's PCG64, reseeded at every mask."""
    generator: np.random.PCG64 | None = getattr(_local, "pcg64", None)
    if generator is None:
        generator = _local.pcg64 = np.random.PCG64(0)
    return generator


class LoRALinearFunction(torch.autograd.Function):
    """y = x W^T + bias + ((x * keep) A^T)(scale B)^T with a frozen W and bias; keep may be None."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: float,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        kept = rows if keep is None else rows * keep.view(rows.shape)
        h = torch.mm(kept, a.t())
        scaled_b = b * scale
        out = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
        out.addmm_(h, scaled_b.t())
        ctx.save_for_backward(kept, weight, a, scaled_b, h, keep)
        ctx.scale = scale
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kept, weight, a, scaled_b, h, keep = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_h = torch.mm(g, scaled_b)
        grad_a = torch.mm(grad_h.t(), kept) if ctx.needs_input_grad[3] else None
        # (h^T g)^T: MKL is twice as fast on this order as on g^T h for a tall g and a narrow h
        grad_b = torch.mm(h.t(), g).mul_(ctx.scale).t() if ctx.needs_input_grad[4] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad_h, a)
            if keep is not None:
                grad_x.mul_(keep.view(grad_x.shape))
            grad_x = grad_x.addmm_(g, weight).view(*grad.shape[:-1], weight.shape[1])
        return grad_x, None, None, grad_a, grad_b, None, None


class FastLoRAForward:
    """The forward of one peft LoRA Linear, installed on the module as its `forward`."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.peft_forward: Callable[..., torch.Tensor] = type(module).forward.__get__(module)
        self.thresholds = {
            name: drop_threshold(d.p if isinstance(d, torch.nn.Dropout) else 0.0)
            for name, d in module.lora_dropout.items()
        }

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        module = self.module
        active = module.active_adapters
        if args or kwargs or module.disable_adapters or module.merged or len(active) != 1:
            return self.peft_forward(x, *args, **kwargs)
        name = active[0]
        base = module.base_layer
        if (
            name not in self.thresholds
            or not plain_adapter(module, name)
            or x.dtype != base.weight.dtype
            or base.weight.requires_grad
            or (base.bias is not None and base.bias.requires_grad)
            or torch.is_autocast_enabled(x.device.type)
        ):
            return self.peft_forward(x, *args, **kwargs)
        scale = module.scaling[name]
        threshold = self.thresholds[name]
        keep = None
        if module.training and threshold:
            keep = keep_mask(x.shape, threshold, x.dtype)
            scale = scale * RESOLUTION / (RESOLUTION - threshold)
        out: torch.Tensor = LoRALinearFunction.apply(
            x, base.weight, base.bias, module.lora_A[name].weight, module.lora_B[name].weight, scale, keep
        )
        return out


def plain_adapter(module: Any, name: str) -> bool:
    """Vanilla LoRA for this adapter: no variant, no bias on B, weights in the base's dtype."""
    return (
        name not in module.lora_variant
        and not module.lora_bias.get(name, False)
        and module.lora_A[name].weight.dtype == module.base_layer.weight.dtype
    )


def use_fast_lora(model: Any) -> int:
    """Give the model's plain LoRA Linear modules the one-node forward; returns how many."""
    from peft.tuners.lora.layer import Linear

    installed = 0
    for module in model.modules():
        if (
            type(module) is Linear
            and type(module.base_layer) is torch.nn.Linear
            and not module.fan_in_fan_out
            and any(plain_adapter(module, name) for name in module.lora_A)
        ):
            module.forward = FastLoRAForward(module)  # type: ignore[method-assign]
            installed += 1
    return installed
