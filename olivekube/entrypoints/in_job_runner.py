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

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from olivekube.api.status import finished_pass_fields
from olivekube.api.workflow import workflow_of_object
from olivekube.azureml.job import azureml_system
from olivekube.core.artifact import ModelArtifact
from olivekube.core.constants import TERMINATION_LOG
from olivekube.core.errors import PassError, StorageError
from olivekube.core.pod_paths import pod_path
from olivekube.entrypoints.azureml_dispatcher import dispatch_to_azureml
from olivekube.kube import Workflows, load_config
from olivekube.runner.cpus import size_thread_pools
from olivekube.runner.distributed import topology_from_env
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.evaluation import GoalNotMet
from olivekube.runner.process import leave_out_bitsandbytes
from olivekube.runner.progress import Throttled
from olivekube.runner.results import PassResult
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


def _status_after(runner: WorkflowRunner, pass_name: str, result: PassResult) -> dict[str, Any]:
    """The status patch of a finished pass: the runner's own fields of it."""
    assert result.uri is not None and result.digest is not None
    fields = finished_pass_fields(
        result.uri,
        result.digest,
        result.size_bytes,
        result.metrics,
        runner.chain[pass_name],
        result.status == "cached",
    )
    return {"passes": {pass_name: fields}}


class Superseded(Exception):
    """The workflow's spec changed while the pass ran: its result is no longer wanted."""


def current_chain_key(api: Workflows, namespace: str, name: str, pass_name: str) -> tuple[str | None, str]:
    """The pass's chain key in the workflow as the API server holds it now, and its resourceVersion."""
    body = api.get(namespace, name)
    try:
        workflow = workflow_of_object(body)
    except ValidationError:
        return None, body["metadata"]["resourceVersion"]
    return workflow.spec.chain_keys().get(pass_name), body["metadata"]["resourceVersion"]


def fenced_patch(
    api: Workflows, namespace: str, name: str, pass_name: str, key: str, patch: dict[str, Any]
) -> None:
    """Patch status only while the workflow still wants this pass's result (its chain key is `key`):
    a late run of an edited spec changes nothing. Raises Superseded otherwise."""
    for _ in range(10):
        current, version = current_chain_key(api, namespace, name, pass_name)
        if current != key:
            raise Superseded(f"pass {pass_name}: the workflow changed while it ran; its result is not recorded")
        try:
            api.patch_status(namespace, name, patch, resource_version=version)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise Superseded(f"pass {pass_name}: the workflow kept changing; its result is not recorded")


def _finish(
    api: Workflows,
    namespace: str,
    name: str,
    pass_name: str,
    runner: WorkflowRunner,
    out_model: ModelArtifact,
    result: PassResult,
) -> None:
    """Record the pass (and after the last pass, publish the output), unless the spec moved on."""
    key = runner.chain[pass_name]
    status = _status_after(runner, pass_name, result)
    acceptance = runner.acceptance
    try:
        acceptance.after_pass(pass_name, out_model, result.uri)
        if runner.spec.is_last_pass(pass_name):
            if current_chain_key(api, namespace, name, pass_name)[0] != key:
                raise Superseded(
                    f"pass {pass_name}: the workflow changed while it ran; its output is not published"
                )
            acceptance.final(out_model, result.uri)
            output = runner.publish_output(out_model, acceptance.files([result]))
            manifest = store_for(output).read_manifest(output)
            status["outputs"] = {"uri": output, "sha256": manifest.digest if manifest else None}
    except GoalNotMet:
        # The values, for status; the pass is not recorded as done, so the Job's failure ends the workflow.
        fenced_patch(api, namespace, name, pass_name, key, {"evaluation": acceptance.summary()})
        raise
    if (summary := acceptance.summary()) is not None:
        status["evaluation"] = summary
    fenced_patch(api, namespace, name, pass_name, key, status)


def run_in_cluster(namespace: str, name: str, pass_name: str, workdir: Path) -> int:
    """Run one pass for the operator. Returns the exit code."""
    load_config()
    api = Workflows()
    body = api.get(namespace, name)
    workflow = workflow_of_object(body)

    def progress(pass_name: str, progress: dict[str, Any]) -> None:
        api.patch_status(namespace, name, {"passes": {pass_name: {"progress": progress}}})

    try:
        if pass_name not in workflow.spec.passes:
            raise PassError("--pass", f"no pass {pass_name!r} in the workflow")
        if azureml_system(workflow, pass_name) is not None:
            dispatch_to_azureml(api, body, workflow, pass_name, workdir)
            return 0
        leave_out_bitsandbytes(workflow.spec)
        size_thread_pools()  # to the pod's CPU limit, not the node's cores
        sink = Throttled(progress, interval=5.0)
        topology = topology_from_env()
        runner = WorkflowRunner(workflow, workdir, report=sink, topology=topology)
        runner.work_root = workdir / ".olivekube-work"
        meta = body["metadata"]  # a run of an older generation never moves output_dir's pointer back
        runner.output_fence = {"uid": meta.get("uid"), "generation": int(meta.get("generation") or 0)}
        model = _previous_artifact(runner, body.get("status") or {}, pass_name)
        if topology.node_rank > 0:  # pod 0 reports and publishes
            runner.train_on_worker_node(pass_name, model)
            return 0
        runner.make_pass(pass_name, runner.work_root).preflight(model)
        if workflow.spec.is_last_pass(pass_name):
            runner.check_output_dir()
        out_model, result = runner.run_pass(pass_name, model)
        sink.flush()
        _finish(api, namespace, name, pass_name, runner, out_model, result)
    except Superseded as exc:
        log.warning("%s", exc)
        return 0
    except (PassError, StorageError) as exc:
        write_termination_message(str(exc))
        log.error("%s", exc)
        return 1
    return 0
