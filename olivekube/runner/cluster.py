"""`olivekube runner --workflow NS/NAME --pass NAME`: one pass inside a Job.

Reads the workflow, takes its input from the previous pass's artifact in status (or the input
model), runs the pass (or finds it in the cache), and merge-patches only the runner's own fields of
`status.passes[NAME]`: progress (at most every few seconds), then artifact, metrics, cacheKey and
cached; after the last pass, `status.outputs`. On failure it writes `field: message` to the
termination log, which the operator copies into status.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from olivekube.api.chain import chain_keys
from olivekube.api.workflow import OptimizationWorkflow, parse_workflow
from olivekube.azureml.dispatch import run_on_azureml
from olivekube.azureml.job import PassAttempt, azureml_system
from olivekube.k8s import Workflows, load_config
from olivekube.runner.artifact import ModelArtifact
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.errors import PassError
from olivekube.runner.process import leave_out_bitsandbytes
from olivekube.runner.progress import Throttled
from olivekube.storage import StorageError, store_for
from olivekube.storage.local import container_path

log = logging.getLogger(__name__)
TERMINATION_LOG = "/dev/termination-log"
ATTEMPT_ENV = "OLIVEKUBE_ATTEMPT"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_termination_message(message: str) -> None:
    try:
        container_path(TERMINATION_LOG).write_text(message[-4000:])
    except OSError:
        log.warning("cannot write the termination log")


def _previous_artifact(runner: WorkflowRunner, status: dict[str, Any], name: str) -> ModelArtifact:
    order = runner.spec.ordered_pass_names()
    index = order.index(name)
    if index == 0:
        return runner.input_model()
    previous = order[index - 1]
    artifact = ((status.get("passes") or {}).get(previous) or {}).get("artifact") or {}
    uri = artifact.get("uri")
    if not uri:
        raise PassError(f"status.passes.{previous}.artifact", "the previous pass has no artifact yet")
    manifest = store_for(uri).read_manifest(uri)
    if manifest is None:
        raise PassError(f"status.passes.{previous}.artifact.uri", f"no complete artifact at {uri}")
    base = runner.input_model() if manifest.metadata.get("kind") == "adapter" else None
    return runner.from_artifact(uri, manifest, base)


def _run_on_azureml(
    api: Workflows, body: dict[str, Any], workflow: OptimizationWorkflow, pass_name: str, workdir: Path
) -> int:
    """The pass runs as an Azure ML job; this pod submits and follows it."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status = body.get("status") or {}
    order = workflow.spec.ordered_pass_names()
    index = order.index(pass_name)
    previous = ((status.get("passes") or {}).get(order[index - 1]) or {}) if index else {}
    key = chain_keys(workflow.spec)[pass_name]
    seen: dict[str, str] = {}

    def on_state(job_name: str, state: str) -> None:
        if seen.get(job_name) != state:
            seen[job_name] = state
            api.patch_status(
                namespace, name, {"passes": {pass_name: {"message": f"Azure ML job {job_name}: {state}"}}}
            )

    try:
        attempt = PassAttempt(
            workflow,
            body["metadata"]["uid"],
            pass_name,
            key,
            int(os.environ.get(ATTEMPT_ENV, "0")),
            (previous.get("artifact") or {}).get("uri"),
            workdir,
        )
        uri, manifest = run_on_azureml(attempt, on_state)
    except PassError as exc:
        write_termination_message(str(exc))
        log.error("%s", exc)
        return 1
    fields = {
        "artifact": {"uri": uri, "sha256": manifest.digest, "sizeBytes": manifest.size_bytes},
        "metrics": manifest.metadata.get("metrics") or None,
        "cacheKey": key,
        "cached": False,
    }
    patch: dict[str, Any] = {"passes": {pass_name: fields}}
    if index == len(order) - 1:
        patch["outputs"] = {"uri": uri, "sha256": manifest.digest}
    api.patch_status(namespace, name, patch)
    return 0


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

    if azureml_system(workflow, pass_name) is not None:
        return _run_on_azureml(api, body, workflow, pass_name, workdir)
    leave_out_bitsandbytes(workflow.spec)
    sink = Throttled(progress, interval=5.0)
    runner = WorkflowRunner(workflow, workdir, report=sink)
    runner.work_root = workdir / ".olivekube-work"
    try:
        if pass_name not in workflow.spec.passes:
            raise PassError("--pass", f"no pass {pass_name!r} in the workflow")
        model = _previous_artifact(runner, body.get("status") or {}, pass_name)
        runner.make_pass(pass_name, runner.work_root).preflight(model)
        out_model, result = runner.run_pass(pass_name, model)
        sink.flush()
        fields: dict[str, Any] = {
            "artifact": {"uri": result.uri, "sha256": result.digest, "sizeBytes": result.size_bytes},
            "metrics": result.metrics,
            "cacheKey": runner.chain[pass_name],
            "cached": result.status == "cached",
        }
        status: dict[str, Any] = {"passes": {pass_name: fields}}
        if pass_name == workflow.spec.ordered_pass_names()[-1]:
            output = runner.publish_output(out_model)
            manifest = store_for(output).read_manifest(output)
            status["outputs"] = {"uri": output, "sha256": manifest.digest if manifest else None}
        api.patch_status(namespace, name, status)
    except (PassError, StorageError) as exc:
        write_termination_message(str(exc))
        log.error("%s", exc)
        return 1
    return 0
