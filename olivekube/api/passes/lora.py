"""LoRA and QLoRA: fine-tune an adapter with peft on transformers' Trainer."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from olivekube.api.common import MAX_LIST, MAX_NAME_LEN, PRESERVE, OpenModel
from olivekube.api.passes.base import PassBase
from olivekube.api.passes.training_argument_names import TRAINING_ARGUMENT_NAMES, TRANSFORMERS_VERSION

RUNNER_MANAGED_ARGS = {
    "output_dir": "the runner keeps checkpoints in the pass's own folder; remove output_dir",
    "deepspeed": "DeepSpeed is not in the runner image; remove deepspeed (the pass trains without it)",
    "use_cpu": "the pass's system (its accelerator) decides the device",
}
"""TrainingArguments keys the runner sets itself, and why a workflow cannot set them."""


def check_training_argument_names(keys: Iterable[str]) -> None:
    """Refuse, naming the key, what transformers.TrainingArguments would refuse or the runner sets itself."""
    for key in sorted(keys):
        if key in RUNNER_MANAGED_ARGS:
            raise PydanticCustomError(
                "unsupported_key", "'{key}' is not supported: {why}", {"key": key, "why": RUNNER_MANAGED_ARGS[key]}
            )
        if key not in TRAINING_ARGUMENT_NAMES:
            raise PydanticCustomError(
                "unsupported_key",
                "'{key}' is not an option of transformers.TrainingArguments ({version}); check the spelling",
                {"key": key, "version": TRANSFORMERS_VERSION},
            )


class TrainingArgs(OpenModel):
    """transformers.TrainingArguments options that Olive passes to the trainer: the common ones typed,
    any other TrainingArguments keyword passed through as given (checked against its names)."""

    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 2e-4,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0.03,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
        "gradient_checkpointing": False,
        "seed": 42,
    }
    """What the runner uses for an option left unset (Olive's defaults, but gradient checkpointing off)."""

    _renamed_keys = {"evaluation_strategy": "'eval_strategy'"}
    _unsupported_keys = RUNNER_MANAGED_ARGS

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
        None, description="When to save checkpoints. Default: steps when save_steps is given, else no."
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

    @model_validator(mode="after")
    def _other_keys_are_training_arguments(self) -> TrainingArgs:
        check_training_argument_names(self.model_extra or {})
        return self

    @field_validator("extra_args")
    @classmethod
    def _extra_args_are_training_arguments(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        check_training_argument_names(value or {})
        return value

    def trainer_options(self) -> dict[str, Any]:
        """The options as transformers.TrainingArguments keywords: the set fields and the other keys
        given beside them, extra_args over both."""
        options = self.dump()
        extra = options.pop("extra_args", None) or {}
        return {**options, **extra}


EVAL_SIZE_DESCRIPTION = (
    "Held-out share of the training data for eval loss when there is no eval_data_config: "
    "a fraction in (0, 1) or a row count >= 1."
)


class LoRA(PassBase):
    """Fine-tune a LoRA adapter with peft."""

    _renamed_keys = {**PassBase._renamed_keys, "lora_r": "'r'", "lora_alpha": "'alpha'"}
    stage = 0
    trains = True
    defaults = {"r": 64, "alpha": 16.0, "lora_dropout": 0.05}

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

    needs_bitsandbytes = True

    type: Literal["QLoRA"] = Field(description="Pass type.")  # type: ignore[assignment]
    double_quant: bool | None = Field(None, description="Quantize the quantization constants. Default false.")
    quant_type: QuantType | None = Field(None, description="4-bit data type: nf4 or fp4. Default nf4.")
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype of the 4-bit matmuls. Default: torch_dtype."
    )


class DoRA(LoRA):
    """Fine-tune a DoRA adapter (weight-decomposed LoRA: a magnitude vector beside the low-rank update)
    with peft. Merge it before ModelBuilder: the model builder has no DoRA graph."""

    adapter_builds_in_graph = False

    type: Literal["DoRA"] = Field(description="Pass type.")  # type: ignore[assignment]


class LoftQ(LoRA):
    """Fine-tune a LoRA adapter on a 4-bit base whose weights LoftQ chose together with the adapter's
    starting point, so that 4-bit base + adapter starts close to the full-precision model. The output
    holds the new base weights with the adapter; a merge merges into those."""

    needs_bitsandbytes = True
    defaults = {**LoRA.defaults, "loftq_iter": 1}

    type: Literal["LoftQ"] = Field(description="Pass type.")  # type: ignore[assignment]
    loftq_iter: int | None = Field(None, ge=1, le=64, description="Alternating LoftQ iterations. Default 1.")
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype of the 4-bit matmuls. Default: torch_dtype."
    )
