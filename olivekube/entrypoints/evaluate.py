"""`olivekube evaluate MODEL -c CONFIG`: measure one model with a workflow's evaluator, on its own."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.entrypoints.local_run import evaluation_table
from olivekube.runner.engine import WorkflowRunner
from olivekube.storage.outputs import current_model


def model_at(runner: WorkflowRunner, value: str) -> ModelArtifact:
    """An ONNX model folder, a PEFT adapter (on the config's input model), a Hugging Face model, or an
    output_dir (its current version)."""
    current = current_model(value) if Path(value).is_dir() else None
    artifact = runner.resolve_model(current or value, "MODEL")
    folder = artifact.path
    if folder is not None and (folder / "genai_config.json").is_file():
        artifact.kind = "onnx"
    elif folder is not None and (folder / "adapter_config.json").is_file():
        artifact.kind = "adapter"
        artifact.base = runner.input_model()
    return artifact


def evaluate_model(workflow: OptimizationWorkflow, base_dir: Path, model: str, evaluator: str | None) -> int:
    console = Console()
    name = evaluator or workflow.spec.evaluator
    if not name or name not in (workflow.spec.evaluators or {}):
        known = ", ".join(sorted(workflow.spec.evaluators or {})) or "none"
        console.print(f"error: name an evaluator of the config with --evaluator (its evaluators: {known})")
        return 2
    runner = WorkflowRunner(workflow, base_dir, cache_dir=str(base_dir / ".olivekube-evaluate"))
    acceptance = runner.acceptance
    acceptance.report["evaluator"] = name
    code = 0
    try:
        acceptance.preflight()
        artifact = model_at(runner, model)
        last = workflow.spec.ordered_pass_names()[-1]
        acceptance.check_model("model", name, artifact, "MODEL", model, last)
    except PassError as exc:
        console.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False)
        code = 1
    if (table := evaluation_table(acceptance.report)) is not None:
        console.print(table)
    return code
