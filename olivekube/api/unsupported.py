"""Why an Olive key cannot run in olivekube, and what to do instead: one wording, used by the API
models (a manifest with the key is refused) and by `olivekube convert` (an Olive config with it)."""

from __future__ import annotations

USER_CODE = (
    "the runner image cannot run your Python code; express the step with the supported options "
    "(text_template, text_cols, col_filters for data) or do it before the workflow"
)
IO_CONFIG = "ModelBuilder derives the model's inputs and outputs itself; remove io_config"
COMPONENTS = "ONNX component models are not supported; ModelBuilder exports one decoder model"
AUTO_OPTIMIZER = (
    "auto-optimization (Olive choosing the passes) is not supported; list the passes "
    "(their options can be searched: search_strategy)"
)
PACKAGING = "the final model is published as an artifact at output_dir; package it from there"
WORKFLOW_HOST = "the workflow runs in the cluster; set host or a pass's host to an AzureML system"
