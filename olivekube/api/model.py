"""The input model: Olive's `HfModel`, a Hugging Face causal LM given by hub id or artifact URI."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import Field, model_validator

from olivekube.api.common import MAX_STRING, PRESERVE, ApiModel


class ModelFileFormat(str, Enum):
    """How the model's files are laid out under `model_path`."""

    HF = "PyTorch.HuggingFace"
    MLFLOW = "PyTorch.MLflow"


class LoadKwargs(ApiModel):
    """Arguments for `from_pretrained`: these keys only. Others (a cache folder, a token, a quantization
    config, custom code's own arguments) could load code or files from elsewhere, so they are refused."""

    trust_remote_code: bool | None = Field(
        None,
        description=(
            "Run Python code from the model repository (`trust_remote_code`). In a cluster only a user who "
            "may create Jobs in the namespace may set it (the chart's admission policy)."
        ),
    )
    torch_dtype: str | None = Field(
        None,
        max_length=32,
        description="dtype to load the weights in (float32, float16, bfloat16, auto). Default: float32 on CPU.",
    )
    revision: str | None = Field(None, max_length=256, description="Hub revision (branch, tag or commit).")
    attn_implementation: str | None = Field(
        None, max_length=64, description="Attention implementation (eager, sdpa, flash_attention_2)."
    )
    load_in_4bit: bool | None = Field(None, description="Load the weights quantized to 4 bits (bitsandbytes).")
    load_in_8bit: bool | None = Field(None, description="Load the weights quantized to 8 bits (bitsandbytes).")
    quantization_config: dict[str, Any] | None = Field(
        None,
        description="transformers' quantization config (e.g. BitsAndBytesConfig's arguments, with quant_method).",
        json_schema_extra=PRESERVE,
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        unknown = sorted(set(data) - set(cls.model_fields)) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not allowed (allowed: {', '.join(cls.model_fields)}); other arguments "
                "of from_pretrained could load code or files from elsewhere"
            )
        return data


class InputModel(ApiModel):
    """Olive's HfModel: a Hugging Face causal language model."""

    _renamed_keys = {
        "config": "the keys of 'config' directly under input_model",
        "hf_config": "model_path, task and load_kwargs",
        "model_loading_args": "load_kwargs",
        "from_pretrained_args": "load_kwargs",
    }

    type: Literal["HfModel"] = Field(
        "HfModel", description="Model type. Only HfModel (a Hugging Face causal LM) is supported."
    )
    model_path: str = Field(
        min_length=1,
        max_length=MAX_STRING,
        description=(
            "Hugging Face id (e.g. microsoft/Phi-3-mini-4k-instruct) or an artifact URI: s3://bucket/key, "
            "pvc://claim/path, file:///path, azureml://registries/R/models/NAME/versions/V, or a local path."
        ),
    )
    task: Literal["text-generation"] = Field(
        "text-generation", description="Model task. Only text-generation is supported."
    )
    load_kwargs: LoadKwargs | None = Field(None, description="Arguments passed to `from_pretrained`.")
    adapter_path: str | None = Field(
        None,
        max_length=MAX_STRING,
        description="A PEFT adapter (hub id or URI) to load on top of the model.",
    )
    model_file_format: ModelFileFormat | None = Field(
        None,
        description=(
            "Layout of model_path. PyTorch.MLflow reads the Hugging Face files from an MLflow model "
            "(Azure ML registry models). Default: PyTorch.HuggingFace."
        ),
    )
