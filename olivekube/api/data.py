"""Data configs: Olive's HuggingfaceContainer with its load and pre-process components."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Literal

from pydantic import Field, field_validator

from olivekube.api import unsupported
from olivekube.api.common import MAX_LIST, MAX_NAME_LEN, MAX_STRING, NAME_PATTERN, ApiModel

DataFiles = str | list[str] | dict[str, str | list[str]]


def map_data_files(files: Any, change: Callable[[str, str], str], path: str = "") -> Any:
    """`data_files` (a file, a list, or a map of split to either) with `change(file, path)` applied
    to every file; `path` is where the file sits below data_files (".0", ".train", ".train.1")."""
    if files is None:
        return None
    if isinstance(files, str):
        return change(files, path)
    if isinstance(files, list):
        return [map_data_files(f, change, f"{path}.{i}") for i, f in enumerate(files)]
    if isinstance(files, dict):
        return {split: map_data_files(v, change, f"{path}.{split}") for split, v in files.items()}
    return files


class LoadDatasetConfig(ApiModel):
    """Where the data comes from (arguments of `datasets.load_dataset`)."""

    _renamed_keys = {"params": "the keys of 'params' directly under load_dataset_config"}

    data_name: str = Field(
        min_length=1,
        max_length=512,
        description="Dataset builder or hub id: json, csv, parquet, text, or a Hugging Face dataset id.",
    )
    subset: str | None = Field(None, max_length=256, description="Dataset configuration (subset) name.")
    split: str = Field(
        "train",
        max_length=256,
        pattern=r"^[A-Za-z0-9_]+(\[[^\]]*\])?(\+[A-Za-z0-9_]+(\[[^\]]*\])?)*$",
        description="Split, with optional slicing as in `datasets`: train, train[:70%], train[100:200].",
    )
    data_dir: str | None = Field(None, max_length=MAX_STRING, description="data_dir for load_dataset.")
    data_files: DataFiles | None = Field(
        None,
        description=(
            "A file URI or path, a list of them, or a map of split name to them (s3://, pvc://, "
            "file://, azureml://, or a path)."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    col_filters: dict[str, str | int | float | bool] | None = Field(
        None,
        max_length=MAX_LIST,
        description="Keep only rows whose column equals the given value.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}},
    )
    trust_remote_code: bool | None = Field(None, description="Allow dataset code from its repository.")

    def listed_files(self) -> list[str]:
        """Every file named in data_files, in order, whichever form it takes."""
        found: list[str] = []

        def collect(file: str, _: str) -> str:
            found.append(file)
            return file

        map_data_files(self.data_files, collect)
        return found


class TextGenStrategy(str, Enum):
    """How texts become training sequences."""

    LINE_BY_LINE = "line-by-line"
    LINE_BY_LINE_RANDOM = "line-by-line-random"
    JOIN = "join"
    JOIN_RANDOM = "join-random"
    JOIN_SLIDING_WINDOW = "join-sliding-window"


class PreProcessDataConfig(ApiModel):
    """How rows become token sequences (Olive's text-generation pre-processing)."""

    _renamed_keys = {
        "params": "the keys of 'params' directly under pre_process_data_config",
        "source_max_len": "max_seq_len",
        "corpus_strategy": "strategy",
        "dataset_type": "strategy (corpus data is the default; pair data is not supported)",
    }
    _unsupported_keys = {
        "user_script": unsupported.USER_CODE,
        "text_formatting_func": unsupported.USER_CODE,
        "chat_template": "chat data is not supported yet; render it with text_template",
    }

    type: str | None = Field(
        None, max_length=128, description="Pre-process component; only the text-generation default exists."
    )
    text_template: str | None = Field(
        None,
        max_length=MAX_STRING,
        description="Python format string over the row's columns, e.g. '### Text: {phrase}\\n{tone}'.",
    )
    text_cols: list[str] | None = Field(
        None,
        max_length=MAX_LIST,
        description="Columns joined with spaces to form the text, when there is no text_template.",
    )
    strategy: TextGenStrategy | None = Field(
        None, description="Sequence strategy: join (Olive's default) packs texts into max_seq_len chunks."
    )
    max_seq_len: int | None = Field(
        None,
        ge=1,
        le=1048576,
        description="Truncate (or window) sequences to this many tokens. Default 1024.",
    )
    max_samples: int | None = Field(None, ge=1, description="Use at most this many rows.")
    add_special_tokens: bool | None = Field(None, description="Add BOS/EOS tokens. Default true.")
    pad_to_max_len: bool | None = Field(None, description="Pad every sequence to max_seq_len. Default false.")
    use_attention_mask: bool | None = Field(None, description="Produce an attention mask. Default true.")
    stride: int | None = Field(None, ge=1, description="Stride of join-sliding-window.")
    joiner: str | None = Field(
        None, max_length=64, description="Text between rows in join strategies. Default: two newlines."
    )

    @field_validator("text_cols")
    @classmethod
    def _text_cols_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one column")
        return v


class DataConfig(ApiModel):
    """A named data config (Olive's HuggingfaceContainer) that passes refer to by name."""

    _unsupported_keys = {
        "user_script": unsupported.USER_CODE,
        "script_dir": unsupported.USER_CODE,
        "post_process_data_config": "olivekube's metrics take the label from text_template's last field",
        "dataloader_config": "the trainer builds its own batches from training_args",
    }

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LEN,
        pattern=NAME_PATTERN,
        description="Name passes use to refer to it.",
    )
    type: Literal["HuggingfaceContainer"] = Field(
        "HuggingfaceContainer", description="Container type. Only HuggingfaceContainer is supported."
    )
    load_dataset_config: LoadDatasetConfig = Field(description="Where the data comes from.")
    pre_process_data_config: PreProcessDataConfig | None = Field(
        None, description="How rows become training sequences."
    )
