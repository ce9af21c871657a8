"""ExtractAdapters: one int4 base model for many fine-tunes, adapters switched at run time."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from olivekube.api.common import MAX_NAME_LEN, MAX_STRING, NAME_PATTERN
from olivekube.api.passes.base import PassBase

MAX_ADAPTERS = 16


class ExtractAdapters(PassBase):
    """Take the LoRA weights out of a model that ModelBuilder built with its adapter inside (after a
    training pass without MergeAdapterWeights, or with adapter_path): the base model gets LoRA weight
    inputs, and the adapter, with any others of the same base listed in `adapters`, becomes an
    `.onnx_adapter` file that onnxruntime-genai's Adapters API loads and switches at run time."""

    stage = 3
    needs_built_adapter = True
    defaults = {"dynamic_lora_r": True, "optional_inputs": True, "adapter_name": "default"}

    type: Literal["ExtractAdapters"] = Field(description="Pass type.")
    adapter_type: Literal["lora"] | None = Field(None, description="Adapter type. Only lora (Olive's default).")
    make_inputs: Literal[True] | None = Field(
        None,
        description=(
            "Turn the adapter weights into model inputs (Olive's default, and what onnxruntime-genai's "
            "adapters need)."
        ),
    )
    dynamic_lora_r: bool | None = Field(
        None, description="Give the inputs a dynamic LoRA rank, so that adapters of any rank fit. Default true."
    )
    optional_inputs: bool | None = Field(
        None,
        description="Default the inputs to rank-0 weights: the model runs without an adapter. Default true.",
    )
    save_format: Literal["onnx_adapter"] | None = Field(
        None, description="Adapter file format. Only onnx_adapter (what onnxruntime-genai loads)."
    )
    adapter_name: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        pattern=NAME_PATTERN,
        description="Name of the built adapter's file (adapters/NAME.onnx_adapter). Default: default.",
    )
    adapters: dict[str, str] | None = Field(
        None,
        max_length=MAX_ADAPTERS,
        description=(
            "Other LoRA adapters of the same base, NAME: folder or URI of a PEFT adapter (a LoRA pass's "
            "output): each becomes adapters/NAME.onnx_adapter, checked against the built one first."
        ),
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": MAX_STRING}},
    )

    @field_validator("adapters")
    @classmethod
    def _names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, uri in (value or {}).items():
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"adapter name {name!r} must match {NAME_PATTERN}")
            if not uri or len(uri) > MAX_STRING:
                raise ValueError(f"adapters.{name} must be a folder or URI of at most {MAX_STRING} characters")
        return value

    def model_uris(self) -> dict[str, str]:
        return {f"adapters.{name}": uri for name, uri in (self.adapters or {}).items()}
