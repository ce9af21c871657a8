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
    MASTER_ADDR_ENV,
    NPROC_PER_NODE_ENV,
    NUM_NODES_ENV,
    PVC_MOUNTS_ENV,
    RUNNER_UID,
    SCRATCH_DIR,
    SCRATCH_VOLUME,
)


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator brings to every Job."""

    runner_image: str = DEFAULT_RUNNER_IMAGE
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    gpu_resource: str = "nvidia.com/gpu"
    scratch_size_limit: str = "100Gi"  # the runner's emptyDir at /tmp (inputs, outputs, caches)
    scratch_request: str = "10Gi"  # ephemeral-storage request of every runner container
    cpu_request: str = "1"  # requests of a pass whose workflow and system name no resources
    memory_request: str = "4Gi"
    job_ttl_seconds: int | None = 86400  # ttlSecondsAfterFinished of a Job whose workflow names none
    # Between SIGTERM and SIGKILL: a training pass saves a checkpoint at the end of its running step
    # and uploads it to the cache in that time (a large adapter's optimizer state takes a while).
    termination_grace_seconds: int = 120
    allowed_images: tuple[str, ...] = ()  # image prefixes a workflow may name; the runner image always
    allowed_service_accounts: tuple[str, ...] = ()  # besides service_account (passes run as their own)
    allowed_priority_classes: tuple[str, ...] = ()
    cache_lookup_prefixes: tuple[str, ...] = ()  # caches the operator itself may read (its credentials)
    runner_env_from_secrets: tuple[str, ...] = ()  # the admin's Secrets in every runner's env (store access)
    # URI prefixes cache_dir and output_dir must lie under ({namespace}: the workflow's); empty: anywhere
    writable_prefixes: tuple[str, ...] = ()
    # Namespaces where workflows may run (cluster-wide mode: those the admin opened); empty: any watched
    runner_namespaces: tuple[str, ...] = ()
    # A NetworkPolicy per several-pod Job that admits its own pods only (the chart's namespace policy
    # admits nothing: together, a rendezvous is reachable from the pods of its Job and from nothing else)
    rendezvous_network_policies: bool = False
    # How long a pass's pods may wait to start (unschedulable, a pull error) before the pass fails;
    # a workflow may ask for less (spec.kubernetes.startTimeoutSeconds), never more
    start_timeout_seconds: float = 300.0


AZUREML_CANCEL_GRACE_SECONDS = 90

RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": RUNNER_UID,
    "runAsGroup": RUNNER_UID,
    "fsGroup": RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
"""The restricted Pod Security Standard, met by every runner pod whatever the workflow says."""


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


def _pvc_mounts(k8s: KubernetesSettings) -> dict[str, str]:
    """claim name → mount path, for pvc:// URIs inside the pod."""
    claims = {v.name: v.persistentVolumeClaim.claimName for v in k8s.volumes or [] if v.persistentVolumeClaim}
    return {claims[m.name]: m.mountPath for m in k8s.volumeMounts or [] if m.name in claims}


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
    defaults = {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request}}
    if wants_gpu and spec.passes[pass_name].trains:
        return {**defaults, "limits": {settings.gpu_resource: 1}}
    return defaults


@dataclass(frozen=True)
class PassParallelism:
    """A pass attempt's pods and processes per pod (1 and 1 for passes that do not train)."""

    num_nodes: int = 1
    nproc_per_node: int = 1


def parallelism(workflow: OptimizationWorkflow, pass_name: str, settings: OperatorSettings) -> PassParallelism:
    """From spec.kubernetes.training; processes per pod default to the GPUs the pod's limits ask for."""
    k8s = workflow.spec.kubernetes
    if not workflow.spec.passes[pass_name].trains or k8s is None or k8s.training is None:
        return PassParallelism()
    chosen = k8s.training.for_pass(pass_name)
    gpus = (_resources(workflow, pass_name, settings).get("limits") or {}).get(settings.gpu_resource)
    default_procs = int(gpus) if gpus and str(gpus).isdigit() and int(gpus) > 0 else 1
    return PassParallelism(chosen.numNodes or 1, chosen.numProcPerNode or default_procs)


def rendezvous_service_name(job: str) -> str:
    """The headless Service through which the pods of a several-node attempt find pod 0 (a DNS label:
    it starts with a letter, as Job names, which start with the workflow's, may not)."""
    return f"r{hashlib.sha256(job.encode()).hexdigest()[:10]}-{job}"[:63].rstrip("-")


def runner_account(workflow: OptimizationWorkflow, uid: str) -> str:
    """The ServiceAccount a workflow's passes run as."""
    k8s = workflow.spec.kubernetes
    if k8s is not None and k8s.serviceAccountName:
        return k8s.serviceAccountName
    return identity_name(workflow.metadata.name, uid)


def identity_name(workflow: str, uid: str) -> str:
    """Named for this incarnation of the workflow (its uid): one deleted and created again under the
    same name never meets the old identity, which the garbage collector is still removing."""
    return f"olivekube-runner-{workflow[:200]}-{uid[:8]}"


def job_labels(workflow: str, pass_name: str, key: str, attempt: int) -> dict[str, str]:
    """The labels that select a pass attempt's Job and pod (the planner reads them back)."""
    return {
        **MANAGED_BY,
        LABEL_WORKFLOW: label_value(workflow),
        LABEL_PASS: label_value(pass_name),
        LABEL_KEY: key[:16],
        LABEL_ATTEMPT: str(attempt),
    }


def _env(
    workflow: OptimizationWorkflow, pass_name: str, attempt: int, settings: OperatorSettings
) -> tuple[list[Any], list[Any]]:
    """The container's env and envFrom: the admin's, the user's, the attempt, mounted claims, Azure
    credentials."""
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    # The author's first, then the operator's (its names are refused in the author's, and the later of
    # two entries of one name wins in a container). The image's home is on the read-only root file
    # system: the scratch space serves instead.
    env: list[dict[str, Any]] = [e.dump() for e in k8s.env or []]
    env += [{"name": "HOME", "value": SCRATCH_DIR}, {"name": "TMPDIR", "value": SCRATCH_DIR}]
    env_from: list[dict[str, Any]] = [{"secretRef": {"name": n}} for n in settings.runner_env_from_secrets]
    env_from += [e.dump() for e in k8s.envFrom or []]
    env.append({"name": ATTEMPT_ENV, "value": str(attempt)})
    system = workflow.spec.host_system(pass_name)
    if isinstance(system, AzureMLSystem) and system.credentials_secret:
        env_from.append({"secretRef": {"name": system.credentials_secret}})
    pvc = _pvc_mounts(k8s)
    if pvc:
        env.append({"name": PVC_MOUNTS_ENV, "value": json.dumps(pvc, sort_keys=True)})
    return env, env_from


def _topology_env(shape: PassParallelism, job: str, namespace: str) -> list[dict[str, Any]]:
    """What the runner needs to start torchrun: processes per pod and, across pods, pod 0's name
    (the Indexed Job's pod hostname under the headless Service)."""
    if shape == PassParallelism():
        return []
    env = [{"name": NPROC_PER_NODE_ENV, "value": str(shape.nproc_per_node)}]
    if shape.num_nodes > 1:
        master = f"{job}-0.{rendezvous_service_name(job)}.{namespace}.svc"
        env += [{"name": NUM_NODES_ENV, "value": str(shape.num_nodes)}, {"name": MASTER_ADDR_ENV, "value": master}]
    return env


def _container(
    workflow: OptimizationWorkflow, pass_name: str, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    meta = workflow.metadata
    on_azureml = isinstance(workflow.spec.host_system(pass_name), AzureMLSystem)
    env, env_from = _env(workflow, pass_name, attempt, settings)
    workflow_ref = f"{meta.namespace or 'default'}/{meta.name}"
    container: dict[str, Any] = {
        "name": "runner",
        "image": k8s.image or settings.runner_image,
        "command": ["olivekube", "runner", "--workflow", workflow_ref, "--pass", pass_name],
        "env": env,
        # An Azure ML dispatcher pod asks nothing of the cluster (its scratch space has a sizeLimit).
        "resources": {}
        if on_azureml
        else _with_scratch_request(_resources(workflow, pass_name, settings), settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "workingDir": SCRATCH_DIR,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}]
        + [m.dump() for m in k8s.volumeMounts or []],
    }
    optional = {"imagePullPolicy": k8s.imagePullPolicy, "envFrom": env_from}
    container.update({k: v for k, v in optional.items() if v})
    return container


def _with_scratch_request(resources: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The resources with an ephemeral-storage request for the scratch space, unless one is given."""
    requests = dict(resources.get("requests") or {})
    requests.setdefault("ephemeral-storage", settings.scratch_request)
    return {**resources, "requests": requests}


def _pod_spec(
    workflow: OptimizationWorkflow, uid: str, pass_name: str, container: dict[str, Any], settings: OperatorSettings
) -> Any:
    """The pod: its service account, and scheduling from the host system and spec.kubernetes."""
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    system = workflow.spec.host_system(pass_name)
    node_selector = {**(getattr(system, "nodeSelector", None) or {}), **(k8s.nodeSelector or {})}
    tolerations = [t.dump() for t in (getattr(system, "tolerations", None) or [])]
    tolerations += [t.dump() for t in k8s.tolerations or []]
    # Time after SIGTERM to stop cleanly: an Azure ML dispatcher cancels its job (up to 60 s), a training
    # pass saves and uploads its last checkpoint.
    azureml = isinstance(system, AzureMLSystem)
    grace = AZUREML_CANCEL_GRACE_SECONDS if azureml else settings.termination_grace_seconds
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace,
        "serviceAccountName": runner_account(workflow, uid),
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": settings.scratch_size_limit}}]
        + [v.dump() for v in k8s.volumes or []],
    }
    optional = {
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "affinity": k8s.affinity,
        "priorityClassName": k8s.priorityClassName,
        "imagePullSecrets": [{"name": n} for n in k8s.imagePullSecrets or []],
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    return pod_spec


def _job_spec(
    workflow: OptimizationWorkflow,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    settings: OperatorSettings,
    shape: PassParallelism,
) -> Any:
    k8s = workflow.spec.kubernetes or KubernetesSettings()
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the operator retries, one Job per attempt
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if shape.num_nodes > 1:
        # One pod per node rank; a failed pod fails the Job (and so the attempt), whose other pods go.
        job_spec.update(completionMode="Indexed", completions=shape.num_nodes, parallelism=shape.num_nodes)
    if k8s.activeDeadlineSeconds:
        job_spec["activeDeadlineSeconds"] = k8s.activeDeadlineSeconds
    ttl = k8s.ttlSecondsAfterFinished if k8s.ttlSecondsAfterFinished is not None else settings.job_ttl_seconds
    if ttl is not None:  # finished Jobs go; status keeps what the planner needs (attempts, failed Jobs)
        job_spec["ttlSecondsAfterFinished"] = ttl
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
    namespace = workflow.metadata.namespace or "default"
    job = job_name(name, pass_name, key, attempt)
    shape = parallelism(workflow, pass_name, settings)
    container = _container(workflow, pass_name, attempt, settings)
    container["env"] = container["env"] + _topology_env(shape, job, namespace)
    pod_spec = _pod_spec(workflow, uid, pass_name, container, settings)
    if shape.num_nodes > 1:
        pod_spec["subdomain"] = rendezvous_service_name(job)
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job,
            "namespace": namespace,
            "labels": {**labels, KUEUE_QUEUE: k8s.queueName} if k8s.queueName else dict(labels),
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": _job_spec(workflow, labels, pod_spec, settings, shape),
    }


def build_rendezvous_service(job: dict[str, Any], uid: str) -> dict[str, Any]:
    """The headless Service of a several-node attempt: DNS names for its pods (`<job>-<index>.<service>`),
    selecting that Job's pods only. Owned by the workflow (uid), as the Job is: it is made before the
    Job, whose uid is not known yet, and goes with the workflow."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job["spec"]["template"]["spec"]["subdomain"],
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
            "ownerReferences": [{**meta["ownerReferences"][0], "uid": uid}],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # pods meet before any is Ready
            "selector": {"batch.kubernetes.io/job-name": meta["name"]},
        },
    }


def build_rendezvous_network_policy(job: dict[str, Any], uid: str) -> dict[str, Any]:
    """The NetworkPolicy of a several-node attempt: its pods accept connections from pods of the same
    Job only (torchrun's store on 29500 and gloo/NCCL between ranks unpickle what they receive).
    Named and owned as its rendezvous Service is."""
    service = build_rendezvous_service(job, uid)
    same_job = {"matchLabels": service["spec"]["selector"]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": service["metadata"],
        "spec": {
            "podSelector": same_job,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": same_job}]}],
        },
    }
