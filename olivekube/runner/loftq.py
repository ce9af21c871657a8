"""LoftQ initialisation (Li et al., 2023) on whatever device bitsandbytes quantizes on.

peft's `init_lora_weights="loftq"` computes on CUDA or XPU only; this is the same alternation
(quantize to nf4, take the best rank-r approximation of what quantization lost by SVD, repeat on
the weight minus that approximation), with one difference: peft stores the correction in the
adapter without its scaling (alpha / r), so the adapted model starts at Q + (alpha / r) B A, which
is the full-precision weight only when alpha equals r; here B is divided by the scaling, so that
the adapted model starts at Q + B A ~ W for any alpha.
"""

from __future__ import annotations

from typing import Any

import torch

NF4_BLOCK = 64  # bitsandbytes' Params4bit block size, which the 4-bit training load uses


def nf4_round_trip(weight: torch.Tensor) -> torch.Tensor:
    """`weight` quantized to nf4 and back: what a 4-bit load of it computes with."""
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(weight.contiguous(), quant_type="nf4", blocksize=NF4_BLOCK)
    return bnbf.dequantize_4bit(packed, state, quant_type="nf4").to(weight.dtype)


@torch.no_grad()
def loftq_decompose(weight: torch.Tensor, rank: int, iterations: int) -> tuple[torch.Tensor, ...]:
    """(Q, A, B) with Q nf4-representable, A rank x in, B out x rank, and Q + B A ~ weight."""
    full = weight.float()
    target = full
    for i in range(iterations):
        quantized = nf4_round_trip(target)
        u, s, vh = torch.linalg.svd(full - quantized, full_matrices=False)
        root = s[:rank].sqrt()
        b = u[:, :rank] * root
        a = root[:, None] * vh[:rank]
        if i + 1 < iterations:
            target = full - b @ a
    return quantized, a, b


@torch.no_grad()
def apply_loftq(peft_model: Any, iterations: int, adapter: str = "default") -> int:
    """Give every LoRA layer of `peft_model` LoftQ's base weight and adapter start; returns how many."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in peft_model.modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        base: Any = module.get_base_layer()
        quantized, a, b = loftq_decompose(base.weight.data, module.r[adapter], iterations)
        dtype: torch.dtype = base.weight.dtype
        module.lora_A[adapter].weight.data = a.to(dtype)
        module.lora_B[adapter].weight.data = (b / module.scaling[adapter]).to(dtype)
        base.weight.data = quantized.to(dtype)
        count += 1
    return count
