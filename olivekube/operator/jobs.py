"""Pure rendering of the Job that runs one pass attempt (no API calls; unit-tested alone).

`build_job` assembles the manifest from small helpers, one per part of it (labels, env, the
container, scheduling, the Job spec), as CloudNativePG renders its Jobs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from olivekube.api.common import API_VERSION, KIND
from olivekube.api.kubernetes import KubernetesSettings
from olivekube.api.systems import AzureMLSystem, KubernetesSystem
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.constants import (
    ATTEMPT_ENV,
    DEFAULT_RUNNER_IMAGE,
    DEFAULT_SERVICE_ACCOUNT,
    KUEUE_QUEUE,
    LABEL_ATTEMPT,
    LABEL_KEY,
    LABEL_PASS,
    LABEL_WORKFLOW,
    MANAGED_BY,
    PVC_MOUNTS_ENV,
)


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator brings to every Job."""

    runner_image: str = DEFAULT_RUNNER_IMAGE
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    gpu_resource: str = "nvidia.com/gpu"


def label_value(value: str) -> str:
    """A valid label value (63 characters, alphanumeric ends)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return clean or "x"


def job_name(workflow: str, pass_name: str, key: str, attempt: int) -> str:
    """Deterministic: workflow, pass, chain key, attempt. At most 63 characters (a label value)."""
    base = f"{workflow}-{pass_name}".lower().replace("_", "-").replace(".", "-")
    suffix = f"-{key[:8]}-{attempt}"
    if len(base) + len(suffix) > 63:
        digest = hashlib.sha256(base.encode()).hexdigest()[:6]
        base = f"{base[: 63 - len(suffix) - 7].rstrip('-')}-{digest}"
    return base + suffix


def _pvc_mounts(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, str]:
    """claim name → mount path, for pvc:// URIs inside the pod."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    return {claims[m["name"]]: m["mountPath"] for m in mounts if m.get("name") in claims}


def _resources(workflow: OptimizationWorkflow, pass_name: str, settings: OperatorSettings) -> dict[str, Any]:
    spec = workflow.spec
    k8s = spec.kubernetes
    per_pass = (k8s.resources.passes or {}) if k8s and k8s.resources else {}
    if pass_name in per_pass:
        return per_pass[pass_name].dump()
    if k8s and k8s.resources and k8s.resources.default:
        return k8s.resources.default.dump()
    system = spec.host_system(pass_name)
    if isinstance(system, KubernetesSystem) and system.resources is not None:
        return system.resources.dump()
    wants_gpu = system is not None and any(a.device == "gpu" for a in system.accelerators or [])
    if wants_gpu and spec.passes[pass_name].trains:
        return {"limits": {settings.gpu_resource: 1}}
    return {}


def job_labels(workflow: str, pass_name: str, key: str, attempt: int) -> dict[str, str]:
    """The labels that select a pass attempt's Job and pod (the planner reads them back)."""
    return {
        **MANAGED_BY,
        LABEL_WORKFLOW: label_value(workflow),
        LABEL_PASS: label_value(pass_name),
        LABEL_KEY: key[:16],
        LABEL_ATTEMPT: str(attempt),
    }


def _env(workflow: OptimizationWorkflow, pass_name: str, attempt: int) -> tuple[list[Any], list[Any]]:
    """The container's env and envFrom: the user's, the attempt, mounted claims, Azure credentials."""
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    env: list[dict[str, Any]] = [e.dump() for e in k8s.env or []]
    env_from: list[dict[str, Any]] = list(k8s.envFrom or [])
    env.append({"name": ATTEMPT_ENV, "value": str(attempt)})
    system = workflow.spec.host_system(pass_name)
    if isinstance(system, AzureMLSystem) and system.credentials_secret:
        env_from.append({"secretRef": {"name": system.credentials_secret}})
    pvc = _pvc_mounts(list(k8s.volumes or []), list(k8s.volumeMounts or []))
    if pvc:
        env.append({"name": PVC_MOUNTS_ENV, "value": json.dumps(pvc, sort_keys=True)})
    return env, env_from


def _container(
    workflow: OptimizationWorkflow, pass_name: str, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    meta = workflow.metadata
    on_azureml = isinstance(workflow.spec.host_system(pass_name), AzureMLSystem)
    env, env_from = _env(workflow, pass_name, attempt)
    workflow_ref = f"{meta.namespace or 'default'}/{meta.name}"
    container: dict[str, Any] = {
        "name": "runner",
        "image": k8s.image or settings.runner_image,
        "command": ["olivekube", "runner", "--workflow", workflow_ref, "--pass", pass_name],
        "env": env,
        "resources": {} if on_azureml else _resources(workflow, pass_name, settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    optional = {"imagePullPolicy": k8s.imagePullPolicy, "envFrom": env_from, "volumeMounts": k8s.volumeMounts}
    container.update({k: list(v) if isinstance(v, list) else v for k, v in optional.items() if v})
    return container


def _pod_spec(
    workflow: OptimizationWorkflow, pass_name: str, container: dict[str, Any], settings: OperatorSettings
) -> Any:
    """The pod: its service account, and scheduling from the host system and spec.kubernetes."""
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    system = workflow.spec.host_system(pass_name)
    node_selector = {**(getattr(system, "nodeSelector", None) or {}), **(k8s.nodeSelector or {})}
    tolerations = [t.dump() for t in (getattr(system, "tolerations", None) or [])]
    tolerations += [t.dump() for t in k8s.tolerations or []]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": k8s.serviceAccountName or settings.service_account,
        "containers": [container],
    }
    optional = {
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "affinity": k8s.affinity,
        "volumes": list(k8s.volumes or []),
        "priorityClassName": k8s.priorityClassName,
        "imagePullSecrets": [{"name": n} for n in k8s.imagePullSecrets or []],
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    return pod_spec


def _job_spec(workflow: OptimizationWorkflow, labels: dict[str, str], pod_spec: dict[str, Any]) -> Any:
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the operator retries, one Job per attempt
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if k8s.activeDeadlineSeconds:
        job_spec["activeDeadlineSeconds"] = k8s.activeDeadlineSeconds
    if k8s.ttlSecondsAfterFinished is not None:
        job_spec["ttlSecondsAfterFinished"] = k8s.ttlSecondsAfterFinished
    if k8s.queueName:
        job_spec["suspend"] = True  # Kueue admits it
    return job_spec


def build_job(
    workflow: OptimizationWorkflow, uid: str, pass_name: str, key: str, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job manifest of one pass attempt."""
    name = workflow.metadata.name
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    labels = job_labels(name, pass_name, key, attempt)
    container = _container(workflow, pass_name, attempt, settings)
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, pass_name, key, attempt),
            "namespace": workflow.metadata.namespace or "default",
            "labels": {**labels, KUEUE_QUEUE: k8s.queueName} if k8s.queueName else dict(labels),
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": _job_spec(workflow, labels, _pod_spec(workflow, pass_name, container, settings)),
    }
