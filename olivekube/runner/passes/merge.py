"""Merge a LoRA adapter into its base model's full-precision weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.passes.base import RunnerPass
from olivekube.runner.torch_utils import load_kwargs


class MergeAdapterWeightsPass(RunnerPass, pass_type="MergeAdapterWeights"):
    """Load the base in full precision, apply the adapter, merge, save with the tokenizer.

    After QLoRA the adapter was trained against a 4-bit base; it is merged into the full-precision
    base (a 4-bit merged model cannot be exported), and the output's metadata says so.
    """

    accepts = ("adapter",)
    produces = "hf"

    def preflight(self, model: ModelArtifact) -> None:
        if model.base is None:
            raise PassError(
                f"{self.ctx.field}.type", "MergeAdapterWeights needs an adapter from a LoRA or QLoRA pass"
            )

    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert model.base is not None and model.path is not None
        base_kwargs = load_kwargs(model.base)
        self.ctx.progress(message="merging the adapter")
        base = AutoModelForCausalLM.from_pretrained(model.base.model_ref, dtype=torch.float32, **base_kwargs)
        merged = PeftModel.from_pretrained(base, str(model.path)).merge_and_unload()
        merged.save_pretrained(out)
        AutoTokenizer.from_pretrained(str(model.path)).save_pretrained(out)
        metadata: dict[str, Any] = {"merged_from": model.digest, "base": model.base.digest, "dtype": "float32"}
        if model.metadata.get("quantized_base"):
            metadata["note"] = (
                "the adapter was trained on a 4-bit base (QLoRA) and merged into the full-precision base; "
                "no 4-bit quantization config is kept, so the model exports like any full-precision model"
            )
            metadata["adapter_trained_on"] = "4-bit base"
        return metadata
