"""ModelBuilder: convert to ONNX (optionally quantized) with onnxruntime-genai's model builder."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import Field, model_validator

from olivekube.api.common import MAX_STRING, PRESERVE
from olivekube.api.passes.base import PassBase


class Precision(str, Enum):
    """Weight precision of the ONNX model."""

    INT4 = "int4"
    INT8 = "int8"
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"


class ModelBuilder(PassBase):
    """Convert the model to ONNX with onnxruntime-genai's model builder, optionally quantized."""

    stage = 2
    builds_for_target = True

    type: Literal["ModelBuilder"] = Field(description="Pass type.")
    precision: Precision = Field(Precision.FP32, description="Weight precision: int4, int8, fp16, bf16, fp32.")
    int4_block_size: Literal[16, 32, 64, 128, 256] | None = Field(
        None, description="Block size of int4 quantization. Default 32."
    )
    int4_accuracy_level: Literal[1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute precision: 1 fp32, 2 fp16, 3 bf16, 4 int8."
    )
    int4_is_symmetric: bool | None = Field(None, description="Symmetric int4 quantization.")
    int4_op_types_to_quantize: list[Literal["MatMul", "Gather"]] | None = Field(
        None, max_length=2, description="Op types to quantize to int4."
    )
    int4_nodes_to_exclude: list[str] | None = Field(
        None, max_length=1024, description="Node names to keep unquantized (e.g. the LoRA MatMuls)."
    )
    int4_algo_config: Literal["default", "rtn", "k_quant_mixed", "k_quant_last"] | None = Field(
        None, description="int4 quantization algorithm."
    )
    exclude_embeds: bool | None = Field(None, description="Leave out the embedding layer (inputs_embeds in).")
    exclude_lm_head: bool | None = Field(None, description="Leave out the LM head (hidden states out).")
    include_hidden_states: bool | None = Field(None, description="Also output the last hidden states.")
    enable_cuda_graph: bool | None = Field(None, description="Build for CUDA graph capture.")
    metadata_only: bool | None = Field(None, description="Write only genai_config.json and the tokenizer.")
    adapter_path: str | None = Field(
        None,
        max_length=MAX_STRING,
        description="Build the graph with this LoRA adapter (a folder or URI) inside it.",
    )
    search: dict[str, Any] | None = Field(
        None,
        description="Generation search options written to genai_config.json.",
        json_schema_extra=PRESERVE,
    )
    extra_options: dict[str, Any] | None = Field(
        None,
        description="Other model builder extra options (key: value), passed through.",
        json_schema_extra=PRESERVE,
    )

    @model_validator(mode="after")
    def _int4_options_need_int4(self) -> ModelBuilder:
        if self.precision != Precision.INT4.value:
            for name in (
                "int4_block_size",
                "int4_accuracy_level",
                "int4_nodes_to_exclude",
                "int4_algo_config",
            ):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies only to precision int4, not {self.precision}")
        return self
