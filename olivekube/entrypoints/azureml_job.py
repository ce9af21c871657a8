"""`olivekube runner --pass NAME --output DIR`: one pass with no cluster, as an Azure ML job runs it.

The workflow comes from the OLIVEKUBE_WORKFLOW variable; Azure ML mounts the inputs and passes
their local paths: `--base` (the input model), `--model` (the previous pass's output, with its
olivekube manifest), `--data-file URI=PATH` (a data file named in a data config). The output,
with its manifest, is written to `--output`, which Azure ML uploads when the job completes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from olivekube.api.data import map_data_files
from olivekube.api.workflow import parse_workflow
from olivekube.core.artifact import ModelArtifact
from olivekube.core.constants import WORKFLOW_ENV
from olivekube.core.errors import PassError, StorageError
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.process import leave_out_bitsandbytes
from olivekube.storage import store_for

log = logging.getLogger(__name__)


def _localize(document: dict, base: Path | None, data_files: dict[str, str]) -> dict:  # type: ignore[type-arg]
    spec = document["spec"]
    if base is not None:
        spec["input_model"]["model_path"] = str(base)
    for config in spec.get("data_configs") or []:
        load = config.get("load_dataset_config") or {}
        if "data_files" in load:
            load["data_files"] = map_data_files(load["data_files"], lambda f, _: data_files.get(f, f))
    spec.pop("cache_dir", None)
    spec.pop("output_dir", None)
    return document


def run_standalone(
    pass_name: str, output: Path, model: Path | None, base: Path | None, data_files: dict[str, str]
) -> None:
    """Run one pass into `output`. Raises PassError naming the field on bad input."""
    text = os.environ.get(WORKFLOW_ENV)
    if not text:
        raise PassError(WORKFLOW_ENV, "the workflow manifest (JSON) is not set")
    workflow = parse_workflow(_localize(json.loads(text), base, data_files))
    if pass_name not in workflow.spec.passes:
        raise PassError("--pass", f"no pass {pass_name!r} in the workflow")
    leave_out_bitsandbytes(workflow.spec)
    with tempfile.TemporaryDirectory(prefix="olivekube-pass-") as tmp:
        runner = WorkflowRunner(workflow, Path.cwd(), cache_dir=str(Path(tmp) / "cache"))
        artifact: ModelArtifact
        if model is None:
            if workflow.spec.previous_pass(pass_name) is not None:
                raise PassError("--model", f"pass {pass_name} takes the previous pass's output")
            artifact = runner.input_model()
        else:
            try:
                manifest = store_for(str(model)).read_manifest(str(model))
            except StorageError as exc:
                raise PassError("--model", str(exc)) from exc
            if manifest is None:
                raise PassError("--model", f"no olivekube manifest in {model}: not a finished pass output")
            adapter = manifest.metadata.get("kind") == "adapter"
            artifact = runner.from_artifact(str(model), manifest, runner.input_model() if adapter else None)
        runner.make_pass(pass_name, runner.work_root).preflight(artifact)
        _, result = runner.run_pass(pass_name, artifact)
        if result.uri is None:
            raise PassError(f"spec.passes.{pass_name}", "the pass produced no output")
        output.mkdir(parents=True, exist_ok=True)
        shutil.copytree(result.uri, output, dirs_exist_ok=True)
        log.info("pass %s: %s, output in %s", pass_name, result.status, output)
