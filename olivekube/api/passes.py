"""Passes, with Olive's pass types and option names. Each class is one pass type."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from olivekube.api.common import MAX_LIST, MAX_NAME_LEN, MAX_STRING, PRESERVE, ApiModel


class TrainingArgs(ApiModel):
    """transformers.TrainingArguments options that Olive passes to the trainer."""

    _renamed_keys = {"evaluation_strategy": "'eval_strategy'"}

    seed: int | None = Field(None, ge=0, description="Random seed. Default 42.")
    data_seed: int | None = Field(None, ge=0, description="Seed of the data sampler.")
    per_device_train_batch_size: int | None = Field(None, ge=1, le=65536, description="Train batch size.")
    per_device_eval_batch_size: int | None = Field(None, ge=1, le=65536, description="Eval batch size.")
    gradient_accumulation_steps: int | None = Field(None, ge=1, le=65536, description="Steps per update.")
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations to save memory. Default false (Olive's default is true)."
    )
    learning_rate: float | None = Field(None, gt=0, le=10, description="Peak learning rate. Default 2e-4.")
    lr_scheduler_type: (
        Literal[
            "linear",
            "cosine",
            "cosine_with_restarts",
            "polynomial",
            "constant",
            "constant_with_warmup",
            "inverse_sqrt",
            "reduce_lr_on_plateau",
            "cosine_with_min_lr",
            "warmup_stable_decay",
        ]
        | None
    ) = Field(None, description="Learning-rate schedule. Default constant.")
    warmup_ratio: float | None = Field(None, ge=0, le=1, description="Fraction of steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps (overrides warmup_ratio).")
    num_train_epochs: float | None = Field(None, gt=0, description="Epochs, when max_steps is not set.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides num_train_epochs.")
    logging_steps: float | None = Field(None, gt=0, description="Log the loss every N steps.")
    eval_strategy: Literal["no", "steps", "epoch"] | None = Field(
        None, description="When to evaluate: no, steps or epoch."
    )
    eval_steps: float | None = Field(None, gt=0, description="Evaluate every N steps.")
    save_strategy: Literal["no", "steps", "epoch", "best"] | None = Field(
        None, description="When to save checkpoints. Default no."
    )
    save_steps: float | None = Field(None, gt=0, description="Checkpoint every N steps.")
    group_by_length: bool | None = Field(None, description="Batch sequences of similar length together.")
    adam_beta1: float | None = Field(None, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float | None = Field(None, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float | None = Field(None, gt=0, description="AdamW epsilon.")
    weight_decay: float | None = Field(None, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(None, ge=0, description="Gradient clipping norm.")
    optim: str | None = Field(None, max_length=64, description="Optimizer name, e.g. adamw_torch.")
    bf16: bool | None = Field(None, description="Train in bfloat16 mixed precision where the device allows.")
    fp16: bool | None = Field(None, description="Train in float16 mixed precision (CUDA only).")
    dataloader_num_workers: int | None = Field(None, ge=0, le=64, description="Data loader workers.")
    report_to: str | list[str] | None = Field(
        None, description="Trainer integrations to report to. Default none.", json_schema_extra=PRESERVE
    )
    extra_args: dict[str, Any] | None = Field(
        None,
        description="Any other transformers.TrainingArguments options, passed through.",
        json_schema_extra=PRESERVE,
    )

    def trainer_options(self) -> dict[str, Any]:
        """The options as transformers.TrainingArguments keywords: the set fields, extra_args over them."""
        options = self.dump()
        extra = options.pop("extra_args", None) or {}
        return {**options, **extra}


EVAL_SIZE_DESCRIPTION = (
    "Held-out share of the training data for eval loss when there is no eval_data_config: "
    "a fraction in (0, 1) or a row count >= 1."
)


class PassBase(ApiModel):
    """Options every pass has."""

    _renamed_keys = {"config": "the pass options directly under the pass"}
    _unsupported_keys = {
        "user_script": "a user script runs code that the runner image does not have",
        "io_config": "the model builder derives inputs and outputs from the model",
    }

    host: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description="System (in spec.systems) that runs this pass. Default: spec.host.",
    )


class LoRA(PassBase):
    """Fine-tune a LoRA adapter with peft."""

    _renamed_keys = {**PassBase._renamed_keys, "lora_r": "'r'", "lora_alpha": "'alpha'"}

    type: Literal["LoRA"] = Field(description="Pass type.")
    r: int | None = Field(None, ge=1, le=4096, description="LoRA rank. Default 64.")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha (scaling = alpha / r). Default 16.")
    lora_dropout: float | None = Field(None, ge=0, lt=1, description="Dropout on the LoRA path. Default 0.05.")
    target_modules: list[str] | None = Field(
        None,
        max_length=MAX_LIST,
        description="Module names to adapt, e.g. [qkv_proj, o_proj]. Default: all linear layers but lm_head.",
    )
    modules_to_save: list[str] | None = Field(
        None, max_length=MAX_LIST, description="Modules trained fully and saved with the adapter."
    )
    torch_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype of the base weights while training. Default float32 on CPU, bfloat16 on GPU."
    )
    train_data_config: str = Field(
        min_length=1, max_length=MAX_NAME_LEN, description="Name of the spec.data_configs entry to train on."
    )
    eval_data_config: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_NAME_LEN,
        description="Name of the spec.data_configs entry for eval loss.",
    )
    eval_dataset_size: float | None = Field(None, gt=0, description=EVAL_SIZE_DESCRIPTION)
    training_args: TrainingArgs | None = Field(None, description="Trainer options.")


class QuantType(str, Enum):
    """bitsandbytes 4-bit data type."""

    NF4 = "nf4"
    FP4 = "fp4"


class QLoRA(LoRA):
    """Fine-tune a LoRA adapter on a 4-bit (bitsandbytes) base model."""

    type: Literal["QLoRA"] = Field(description="Pass type.")  # type: ignore[assignment]
    double_quant: bool | None = Field(None, description="Quantize the quantization constants. Default false.")
    quant_type: QuantType | None = Field(None, description="4-bit data type: nf4 or fp4. Default nf4.")
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype of the 4-bit matmuls. Default: torch_dtype."
    )


class MergeAdapterWeights(PassBase):
    """Merge the adapter from the previous pass into the base model's full-precision weights."""

    type: Literal["MergeAdapterWeights"] = Field(description="Pass type.")


class Precision(str, Enum):
    """Weight precision of the ONNX model."""

    INT4 = "int4"
    INT8 = "int8"
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"


class ModelBuilder(PassBase):
    """Convert the model to ONNX with onnxruntime-genai's model builder, optionally quantized."""

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


PASS_TYPES: dict[str, type[ApiModel]] = {
    "LoRA": LoRA,
    "QLoRA": QLoRA,
    "MergeAdapterWeights": MergeAdapterWeights,
    "ModelBuilder": ModelBuilder,
}

PassConfig = Annotated[LoRA | QLoRA | MergeAdapterWeights | ModelBuilder, Field(discriminator="type")]
