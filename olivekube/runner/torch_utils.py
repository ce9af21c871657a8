"""Loading models and tokenizers, and choosing the device and dtype, the same way in every pass."""

from __future__ import annotations

import logging
import os
from typing import Any

from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.context import PassContext

log = logging.getLogger(__name__)


def pick_device(ctx: PassContext) -> str:
    """cuda when the host system asks for a GPU and one is here, else cpu."""
    import torch

    if ctx.host_wants_gpu():
        if torch.cuda.is_available():
            local_rank = os.environ.get("LOCAL_RANK")  # one device per process under torchrun
            return f"cuda:{local_rank}" if local_rank is not None else "cuda"
        log.warning("%s: the host system asks for a GPU but none is here; running on the CPU", ctx.pass_name)
    return "cpu"


def dtype_for(name: str | None, device: str) -> Any:
    import torch

    if name is None:
        return torch.float32 if device == "cpu" else torch.bfloat16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load_kwargs(model: ModelArtifact) -> dict[str, Any]:
    """The input model's load_kwargs for from_pretrained, without the dtype (the pass decides it)."""
    kwargs = dict(model.metadata.get("load_kwargs", {}))
    kwargs.pop("torch_dtype", None)
    return kwargs


def load_config(model: ModelArtifact, ctx: PassContext) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model.model_ref, **load_kwargs(model))
    except (OSError, ValueError) as exc:
        raise PassError("spec.input_model.model_path", f"cannot load the model's config: {exc}") from exc


def load_tokenizer(model: ModelArtifact, ctx: PassContext) -> Any:
    from transformers import AutoTokenizer

    kwargs = {
        k: v for k, v in model.metadata.get("load_kwargs", {}).items() if k in ("trust_remote_code", "revision")
    }
    tokenizer = AutoTokenizer.from_pretrained(model.model_ref, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
