"""Pure rendering of the Job that runs one pass attempt (no API calls; unit-tested alone)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from olivekube.api.common import API_VERSION, KIND
from olivekube.api.systems import AzureMLSystem, KubernetesSystem
from olivekube.api.workflow import TRAINING_PASS_TYPES, OptimizationWorkflow

LABEL_WORKFLOW = "olivekube.io/workflow"
LABEL_PASS = "olivekube.io/pass"
LABEL_KEY = "olivekube.io/key"
LABEL_ATTEMPT = "olivekube.io/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "olivekube"}
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
DEFAULT_SERVICE_ACCOUNT = "olivekube-runner"


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator brings to every Job."""

    runner_image: str = "olivekube/runner:0.1.0"
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
    if wants_gpu and spec.passes[pass_name].type in TRAINING_PASS_TYPES:
        return {"limits": {settings.gpu_resource: 1}}
    return {}


def build_job(
    workflow: OptimizationWorkflow, uid: str, pass_name: str, key: str, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job manifest of one pass attempt."""
    spec = workflow.spec
    k8s = spec.kubernetes
    namespace = workflow.metadata.namespace or "default"
    name = workflow.metadata.name
    labels = {
        **MANAGED_BY,
        LABEL_WORKFLOW: label_value(name),
        LABEL_PASS: label_value(pass_name),
        LABEL_KEY: key[:16],
        LABEL_ATTEMPT: str(attempt),
    }
    job_labels = dict(labels)
    if k8s and k8s.queueName:
        job_labels[KUEUE_QUEUE] = k8s.queueName
    volumes = list(k8s.volumes or []) if k8s else []
    mounts = list(k8s.volumeMounts or []) if k8s else []
    env: list[dict[str, Any]] = [e.dump() for e in (k8s.env or [])] if k8s else []
    env_from: list[dict[str, Any]] = list(k8s.envFrom or []) if k8s else []
    env.append({"name": "OLIVEKUBE_ATTEMPT", "value": str(attempt)})
    system = spec.host_system(pass_name)
    on_azureml = isinstance(system, AzureMLSystem)
    if isinstance(system, AzureMLSystem) and system.credentials_secret:
        env_from.append({"secretRef": {"name": system.credentials_secret}})
    pvc = _pvc_mounts(volumes, mounts)
    if pvc:
        env.append({"name": "OLIVEKUBE_PVC_MOUNTS", "value": json.dumps(pvc, sort_keys=True)})
    container: dict[str, Any] = {
        "name": "runner",
        "image": (k8s.image if k8s and k8s.image else settings.runner_image),
        "command": ["olivekube", "runner", "--workflow", f"{namespace}/{name}", "--pass", pass_name],
        "env": env,
        "resources": {} if on_azureml else _resources(workflow, pass_name, settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if k8s and k8s.imagePullPolicy:
        container["imagePullPolicy"] = k8s.imagePullPolicy
    if env_from:
        container["envFrom"] = env_from
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": (
            k8s.serviceAccountName if k8s and k8s.serviceAccountName else settings.service_account
        ),
        "containers": [container],
    }
    node_selector = {**(getattr(system, "nodeSelector", None) or {}), **((k8s.nodeSelector or {}) if k8s else {})}
    tolerations = [t.dump() for t in (getattr(system, "tolerations", None) or [])]
    tolerations += [t.dump() for t in (k8s.tolerations or [])] if k8s else []
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if k8s and k8s.affinity:
        pod_spec["affinity"] = k8s.affinity
    if volumes:
        pod_spec["volumes"] = volumes
    if k8s and k8s.priorityClassName:
        pod_spec["priorityClassName"] = k8s.priorityClassName
    if k8s and k8s.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in k8s.imagePullSecrets]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the operator retries, one Job per attempt
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if k8s and k8s.activeDeadlineSeconds:
        job_spec["activeDeadlineSeconds"] = k8s.activeDeadlineSeconds
    if k8s and k8s.ttlSecondsAfterFinished is not None:
        job_spec["ttlSecondsAfterFinished"] = k8s.ttlSecondsAfterFinished
    if k8s and k8s.queueName:
        job_spec["suspend"] = True  # Kueue admits it
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, pass_name, key, attempt),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
