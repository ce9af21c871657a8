"""`olivekube runner --workflow NS/NAME --pass NAME`: one pass inside a Job.

Reads the workflow, takes its input from the previous pass's artifact in status (or the input
model), runs the pass (or finds it in the cache), and merge-patches only the runner's own fields of
`status.passes[NAME]`: progress (at most every few seconds), then artifact, metrics, chainKey and
cached; after the last pass, `status.outputs`. A pass hosted on an AzureML system is handed to the
Azure ML dispatcher instead. On failure it writes `field: message` to the termination log, which
the operator copies into status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from olivekube.api.status import finished_pass_fields
from olivekube.api.workflow import parse_workflow
from olivekube.azureml.job import azureml_system
from olivekube.core.artifact import ModelArtifact
from olivekube.core.constants import TERMINATION_LOG
from olivekube.core.errors import PassError, StorageError
from olivekube.core.pod_paths import pod_path
from olivekube.entrypoints.azureml_dispatcher import dispatch_to_azureml
from olivekube.kube import Workflows, load_config
from olivekube.runner.engine import PassResult, WorkflowRunner
from olivekube.runner.process import leave_out_bitsandbytes
from olivekube.runner.progress import Throttled
from olivekube.storage import store_for

log = logging.getLogger(__name__)


def write_termination_message(message: str) -> None:
    try:
        pod_path(TERMINATION_LOG).write_text(message[-4000:])
    except OSError:
        log.warning("cannot write the termination log")


def _previous_artifact(runner: WorkflowRunner, status: dict[str, Any], name: str) -> ModelArtifact:
    previous = runner.spec.previous_pass(name)
    if previous is None:
        return runner.input_model()
    artifact = ((status.get("passes") or {}).get(previous) or {}).get("artifact") or {}
    uri = artifact.get("uri")
    if not uri:
        raise PassError(f"status.passes.{previous}.artifact", "the previous pass has no artifact yet")
    manifest = store_for(uri).read_manifest(uri)
    if manifest is None:
        raise PassError(f"status.passes.{previous}.artifact.uri", f"no complete artifact at {uri}")
    if artifact.get("sha256") != manifest.digest:
        raise PassError(
            f"status.passes.{previous}.artifact.sha256",
            f"{artifact.get('sha256')} is not the digest of the artifact at {uri} ({manifest.digest}); refused",
        )
    base = runner.input_model() if manifest.metadata.get("kind") == "adapter" else None
    return runner.from_artifact(uri, manifest, base)


def _status_after(runner: WorkflowRunner, pass_name: str, out_model: ModelArtifact, result: PassResult) -> Any:
    """The status patch of a finished pass: its fields, and the published output after the last pass."""
    assert result.uri is not None and result.digest is not None
    fields = finished_pass_fields(
        result.uri,
        result.digest,
        result.size_bytes,
        result.metrics,
        runner.chain[pass_name],
        result.status == "cached",
    )
    status: dict[str, Any] = {"passes": {pass_name: fields}}
    if runner.spec.is_last_pass(pass_name):
        output = runner.publish_output(out_model)
        manifest = store_for(output).read_manifest(output)
        status["outputs"] = {"uri": output, "sha256": manifest.digest if manifest else None}
    return status


def run_in_cluster(namespace: str, name: str, pass_name: str, workdir: Path) -> int:
    """Run one pass for the operator. Returns the exit code."""
    load_config()
    api = Workflows()
    body = api.get(namespace, name)
    workflow = parse_workflow(
        {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
        | {"metadata": {"name": body["metadata"]["name"], "namespace": namespace}}
    )

    def progress(pass_name: str, progress: dict[str, Any]) -> None:
        api.patch_status(namespace, name, {"passes": {pass_name: {"progress": progress}}})

    try:
        if pass_name not in workflow.spec.passes:
            raise PassError("--pass", f"no pass {pass_name!r} in the workflow")
        if azureml_system(workflow, pass_name) is not None:
            dispatch_to_azureml(api, body, workflow, pass_name, workdir)
            return 0
        leave_out_bitsandbytes(workflow.spec)
        sink = Throttled(progress, interval=5.0)
        runner = WorkflowRunner(workflow, workdir, report=sink)
        runner.work_root = workdir / ".olivekube-work"
        model = _previous_artifact(runner, body.get("status") or {}, pass_name)
        runner.make_pass(pass_name, runner.work_root).preflight(model)
        out_model, result = runner.run_pass(pass_name, model)
        sink.flush()
        api.patch_status(namespace, name, _status_after(runner, pass_name, out_model, result))
    except (PassError, StorageError) as exc:
        write_termination_message(str(exc))
        log.error("%s", exc)
        return 1
    return 0
