"""Data configs → tokenized training and eval sets (Olive's HuggingfaceContainer, text generation).

Everything that can be checked before the model loads is checked first: that data files exist,
that the template's columns are in the data, that the split and filters leave rows.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olivekube.api.data import DataConfig, map_data_files
from olivekube.core.errors import PassError
from olivekube.runner.context import PassContext
from olivekube.storage import StorageError, is_uri, store_for

LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}
DEFAULT_MAX_SEQ_LEN = 1024


class TokenSequences:
    """Token-id sequences as the trainer reads them: a map-style dataset of {"input_ids": [...]}.
    Plain lists: an Arrow-backed `datasets.Dataset` converts every row it hands out."""

    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.sequences[index]}


@dataclass
class DataSets:
    """Tokenized sets ready for the trainer, with the raw row counts."""

    train: TokenSequences
    eval: TokenSequences | None
    train_rows: int
    eval_rows: int


def _find(ctx: PassContext, name: str) -> tuple[int, DataConfig]:
    for i, config in enumerate(ctx.spec.data_configs or []):
        if config.name == name:
            return i, config
    raise PassError(f"{ctx.field}.train_data_config", f"no data config named {name!r}")


def _local_file(value: str, field: str, ctx: PassContext) -> str:
    if is_uri(value):
        store = store_for(value)
        if not store.exists_file(value):
            raise PassError(field, f"data file {value} does not exist")
        local = store.local_path(value)
        if local is not None:
            return str(local)
        target = ctx.workdir / "data" / value.split("://", 1)[1]
        try:
            return str(store.fetch_file(value, target))
        except StorageError as exc:
            raise PassError(field, str(exc)) from exc
    path = Path(value)
    if not path.is_absolute():
        path = ctx.base_dir / path
    if not path.exists():
        raise PassError(field, f"data file {value} does not exist (looked at {path})")
    return str(path)


def _data_files(files: Any, field: str, ctx: PassContext) -> Any:
    return map_data_files(files, lambda f, below: _local_file(f, field + below, ctx))


def load_rows(config: DataConfig, field: str, ctx: PassContext) -> Any:
    """The raw rows of a data config: loaded, split, filtered and capped."""
    import datasets
    from datasets.utils.logging import disable_progress_bar, set_verbosity_error

    disable_progress_bar()
    set_verbosity_error()
    load = config.load_dataset_config
    files = _data_files(load.data_files, f"{field}.load_dataset_config.data_files", ctx)
    if load.data_name in LOCAL_BUILDERS and files is None and load.data_dir is None:
        raise PassError(f"{field}.load_dataset_config.data_files", f"the {load.data_name} loader needs data_files")
    try:
        rows = datasets.load_dataset(
            load.data_name,
            name=load.subset,
            data_dir=load.data_dir,
            data_files=files,
            split=load.split,
            trust_remote_code=load.trust_remote_code,
        )
    except (ValueError, KeyError) as exc:
        raise PassError(f"{field}.load_dataset_config", f"cannot load the data: {exc}") from exc
    for column, value in (load.col_filters or {}).items():
        if column not in rows.column_names:
            raise PassError(
                f"{field}.load_dataset_config.col_filters.{column}",
                f"no column {column!r} in the data (columns: {', '.join(rows.column_names)})",
            )
        rows = rows.filter(lambda row, c=column, v=value: row[c] == v)
    pre = config.pre_process_data_config
    if pre is not None and pre.max_samples is not None:
        rows = rows.select(range(min(pre.max_samples, len(rows))))
    if len(rows) == 0:
        raise PassError(f"{field}.load_dataset_config", "no rows left after split and col_filters")
    _check_columns(config, rows.column_names, field)
    return rows


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _check_columns(config: DataConfig, columns: list[str], field: str) -> None:
    pre = config.pre_process_data_config
    allowed = ", ".join(columns)
    if pre is not None and pre.text_template:
        for name in _template_fields(pre.text_template):
            if name not in columns:
                raise PassError(
                    f"{field}.pre_process_data_config.text_template",
                    f"the template uses {{{name}}}, which is not a column of the data (columns: {allowed})",
                )
    elif pre is not None and pre.text_cols:
        for name in pre.text_cols:
            if name not in columns:
                raise PassError(
                    f"{field}.pre_process_data_config.text_cols",
                    f"no column {name!r} in the data (columns: {allowed})",
                )
    elif "text" not in columns:
        raise PassError(
            f"{field}.pre_process_data_config",
            "say how rows become text: text_template or text_cols "
            f"(the data has no 'text' column; columns: {allowed})",
        )


def row_text(config: DataConfig, row: dict[str, Any]) -> str:
    pre = config.pre_process_data_config
    if pre is not None and pre.text_template:
        return pre.text_template.format(**row)
    if pre is not None and pre.text_cols:
        return " ".join(str(row[c]) for c in pre.text_cols)
    return str(row["text"])


def tokenize(config: DataConfig, rows: Any, tokenizer: Any) -> TokenSequences:
    """Token sequences from rows, as Olive's text-generation pre-processing makes them: each text is
    "{bos} {text} {eos}" (with add_special_tokens), then one sequence per row (line-by-line) or the
    rows joined by `joiner` and cut into full max_seq_len chunks (join, Olive's default)."""
    pre = config.pre_process_data_config
    max_len = (pre.max_seq_len if pre else None) or DEFAULT_MAX_SEQ_LEN
    add_special = True if pre is None or pre.add_special_tokens is None else pre.add_special_tokens
    strategy = (pre.strategy if pre else None) or "join"  # Olive's default
    texts = [row_text(config, row) for row in rows]
    if add_special:
        texts = [f"{tokenizer.bos_token or ''} {t} {tokenizer.eos_token or ''}".strip() for t in texts]
    encoded = tokenizer(
        texts, add_special_tokens=False, truncation=strategy.startswith("line"), max_length=max_len
    )
    if strategy.startswith("line-by-line"):
        sequences = list(encoded["input_ids"])
    else:
        joiner = tokenizer.encode((pre.joiner if pre else None) or "\n\n", add_special_tokens=False)
        ids: list[int] = []
        for seq in encoded["input_ids"]:
            ids += list(seq) + joiner
        step = (pre.stride if pre and pre.stride else max_len) if strategy == "join-sliding-window" else max_len
        sequences = [ids[i : i + max_len] for i in range(0, len(ids) - max_len, step)]
        if not sequences:
            sequences = [ids[:max_len]]  # less text than one sequence: keep what there is
    if strategy.endswith("random"):
        import random

        random.Random(0).shuffle(sequences)
    return TokenSequences([list(s) for s in sequences if len(s) > 1])


def build_datasets(
    ctx: PassContext, tokenizer: Any, train_name: str, eval_name: str | None, eval_size: float | None, seed: int
) -> DataSets:
    """Training and eval sets of a training pass."""
    train_index, train_config = _find(ctx, train_name)
    train_field = f"spec.data_configs.{train_index}"
    rows = load_rows(train_config, train_field, ctx)
    eval_rows = None
    eval_config = train_config
    if eval_name is not None:
        eval_index, eval_config = _find(ctx, eval_name)
        eval_rows = load_rows(eval_config, f"spec.data_configs.{eval_index}", ctx)
    elif eval_size is not None:
        count = int(eval_size) if eval_size >= 1 else max(1, round(len(rows) * eval_size))
        if count >= len(rows):
            raise PassError(
                f"{ctx.field}.eval_dataset_size", f"{eval_size} leaves no training rows (the data has {len(rows)})"
            )
        parts = rows.train_test_split(test_size=count, seed=seed)
        rows, eval_rows = parts["train"], parts["test"]
    train = tokenize(train_config, rows, tokenizer)
    evaluation = tokenize(eval_config, eval_rows, tokenizer) if eval_rows is not None else None
    return DataSets(train, evaluation, len(rows), len(eval_rows) if eval_rows is not None else 0)


def preflight(ctx: PassContext, train_name: str, eval_name: str | None) -> None:
    """Check the data without a tokenizer: files exist, columns match, rows remain."""
    for name in filter(None, (train_name, eval_name)):
        index, config = _find(ctx, name)
        load_rows(config, f"spec.data_configs.{index}", ctx)
