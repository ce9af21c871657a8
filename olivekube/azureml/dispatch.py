"""Run one pass as an Azure ML command job from inside the pass's Kubernetes Job, and follow it.

The Kubernetes Job stays the unit the operator manages (retries, status, deletion): its pod only
submits the Azure ML job, or finds the one a previous pod of the same attempt submitted, follows
its state, and cancels it when the pod is told to stop (the workflow deleted or suspended).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

from olivekube.azureml.client import ml_client
from olivekube.azureml.job import JobPlan, PassAttempt, azureml_system, plan_job, to_command_job
from olivekube.core.errors import PassError
from olivekube.storage import Manifest, StorageError, store_for
from olivekube.storage.azure_identity import azure_message

log = logging.getLogger(__name__)
TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
POLL_ERROR_GRACE_SECONDS = 600.0


def poll_seconds() -> float:
    """How often to ask Azure ML for the job's state (OLIVEKUBE_AZUREML_POLL_SECONDS, default 30)."""
    return float(os.environ.get("OLIVEKUBE_AZUREML_POLL_SECONDS", "30"))


class Stopped(BaseException):
    """The pod was asked to stop. A BaseException, like KeyboardInterrupt: raised by the SIGTERM
    handler wherever the main thread is, it must not be taken for an error by library code's
    `except Exception` (which would swallow it and keep following the job until the pod is killed)."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped


def _state(job: Any) -> str:
    status = job.status
    return str(getattr(status, "value", status))


def _job_error(ml: Any, name: str) -> str:
    """Azure ML's own error message of a failed job (from its run history)."""
    try:
        details = ml.jobs._runs_operations.get_run_details(name)  # the SDK has no public call for it
        error = details.error.error if details.error else None
        if error is not None and error.message:
            return str(error.message)
    except Exception as exc:
        log.warning("could not read why Azure ML job %s failed: %s", name, azure_message(exc))
    return "no error message from Azure ML"


def _poll(ml: Any, name: str, last_state: str) -> str:
    """The job's state now. Azure being unreachable for a while does not fail the pass (that would
    leave the job running while a retry submits another): keep the last state until
    POLL_ERROR_GRACE_SECONDS of errors in a row."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

    failing_since = None
    while True:
        try:
            return _state(ml.jobs.get(name))
        except (ClientAuthenticationError, ResourceNotFoundError):
            raise
        except AzureError as exc:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > POLL_ERROR_GRACE_SECONDS:
                raise
            log.warning(
                "Azure ML job %s still %s; its state cannot be read now: %s", name, last_state, azure_message(exc)
            )
            time.sleep(poll_seconds())


def _submit_or_follow(ml: Any, plan: JobPlan) -> tuple[Any, JobPlan]:
    """The attempt's job, submitted before by a pod of the same attempt, or submitted now. A job
    cancelled by a suspend is not followed: the resumed attempt takes the next name in line."""
    from azure.core.exceptions import ResourceNotFoundError

    for retry in range(100):
        candidate = replace(plan, name=plan.name if retry == 0 else f"{plan.name}-r{retry}")
        try:
            job = ml.jobs.get(candidate.name)
        except ResourceNotFoundError:
            log.info("submitting Azure ML job %s", candidate.name)
            return ml.jobs.create_or_update(to_command_job(candidate)), candidate
        if _state(job) != "Canceled":
            log.info("following Azure ML job %s, submitted before", candidate.name)
            return job, candidate
    raise PassError("azureml", f"Azure ML jobs {plan.name}-r1…r99 were all cancelled")


def run_on_azureml(at: PassAttempt, on_state: Callable[[str, str], None]) -> tuple[str, Manifest]:
    """Submit (or re-attach to) the pass's Azure ML job and wait for it. Returns the output's
    azureml:// URI and manifest; raises PassError with Azure's message when the job fails."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    found = azureml_system(at.workflow, at.pass_name)
    assert found is not None
    system_name, system = found
    where = f"spec.systems.{system_name}"
    plan = plan_job(at)
    if system.hf_token:
        token = os.environ.get("HF_TOKEN")
        if not token:
            raise PassError(
                f"{where}.hf_token",
                "HF_TOKEN is not set for the dispatcher: add it to the credentials Secret, or set it in "
                "spec.kubernetes.env from a Secret",
            )
        plan.environment_variables["HF_TOKEN"] = token
    credentials_field = f"{where}.credentials_secret"
    ml = ml_client(plan.workspace, credentials_field)
    workspace_field = f"{where}.azureml_client" if system.azureml_client else "spec.azureml_client"
    try:
        try:
            ml.workspaces.get(plan.workspace.workspace_name)
        except ResourceNotFoundError as exc:
            raise PassError(f"{workspace_field}.workspace_name", f"Azure: {azure_message(exc)}") from exc
        try:
            ml.compute.get(plan.compute)
        except ResourceNotFoundError as exc:
            raise PassError(f"{where}.aml_compute", f"Azure: {azure_message(exc)}") from exc
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            job, plan = _submit_or_follow(ml, plan)
            state = _state(job)
            while True:
                on_state(plan.name, state)
                if state in TERMINAL:
                    break
                time.sleep(poll_seconds())
                state = _poll(ml, plan.name, state)
        except Stopped:
            log.warning("stopping: cancelling Azure ML job %s", plan.name)
            try:
                ml.jobs.begin_cancel(plan.name).wait(timeout=60)
            except ResourceNotFoundError:
                log.warning("no Azure ML job %s to cancel: stopped before it was submitted", plan.name)
            raise PassError("azureml", f"Azure ML job {plan.name} cancelled: the pass was stopped") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    except ClientAuthenticationError as exc:
        raise PassError(credentials_field, f"Azure rejected the credentials: {azure_message(exc)}") from exc
    except HttpResponseError as exc:
        raise PassError(where, f"Azure ML: {azure_message(exc)}") from exc
    if state != "Completed":
        why = _job_error(ml, plan.name) if state == "Failed" else f"the job ended {state}"
        raise PassError("azureml", f"Azure ML job {plan.name} {state.lower()}: {why}")
    return plan.output_uri, _output_manifest(plan.output_uri, plan.name)


def _output_manifest(uri: str, job_name: str) -> Manifest:
    """The manifest the pass wrote with its output: proof the output is complete, and its digest,
    size and metrics for status."""
    try:
        manifest = store_for(uri).read_manifest(uri.rstrip("/"))
    except StorageError as exc:
        raise PassError(
            "azureml", f"Azure ML job {job_name} completed, but its output cannot be read: {exc}"
        ) from exc
    if manifest is None:
        raise PassError("azureml", f"Azure ML job {job_name} completed without a complete output at {uri}")
    return manifest
