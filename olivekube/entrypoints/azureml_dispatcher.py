"""The pod of a pass hosted on an AzureML system: submit the pass's Azure ML job, follow it into
`status.passes[NAME]`, and record its output as the in-cluster runner records its own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from olivekube.api.status import finished_pass_fields
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.azureml.dispatch import run_on_azureml
from olivekube.azureml.job import PassAttempt
from olivekube.core.constants import ATTEMPT_ENV
from olivekube.core.errors import PassError, StorageError
from olivekube.kube import Workflows
from olivekube.storage.outputs import point_to, version_uri


def dispatch_to_azureml(
    api: Workflows, body: dict[str, Any], workflow: OptimizationWorkflow, pass_name: str, workdir: Path
) -> None:
    """Run the pass as an Azure ML job and patch its result into status. Raises PassError."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status = body.get("status") or {}
    previous_name = workflow.spec.previous_pass(pass_name)
    previous = ((status.get("passes") or {}).get(previous_name) or {}) if previous_name else {}
    key = workflow.spec.chain_keys()[pass_name]
    seen: dict[str, str] = {}

    def on_state(job_name: str, state: str) -> None:
        if seen.get(job_name) != state:
            seen[job_name] = state
            api.patch_status(
                namespace, name, {"passes": {pass_name: {"message": f"Azure ML job {job_name}: {state}"}}}
            )

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
    fields = finished_pass_fields(
        uri, manifest.digest, manifest.size_bytes, manifest.metadata.get("metrics") or None, key, False
    )
    patch: dict[str, Any] = {"passes": {pass_name: fields}}
    if workflow.spec.is_last_pass(pass_name):
        output_dir = workflow.spec.output_dir
        if output_dir and uri.rstrip("/") == version_uri(output_dir, key[:16]):
            try:
                point_to(output_dir, key[:16], manifest)
            except StorageError as exc:
                raise PassError("spec.output_dir", str(exc)) from exc
        patch["outputs"] = {"uri": uri, "sha256": manifest.digest}
    api.patch_status(namespace, name, patch)
