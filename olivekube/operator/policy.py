"""What the cluster admin allows a workflow to ask of its pods, beyond what its schema allows.

The chart's values become operator settings: image prefixes, ServiceAccounts and priority classes a
workflow may name. A workflow that names anything else fails before any Job, with the field named.
(Who may set those fields at all is the chart's ValidatingAdmissionPolicy's business.)
"""

from __future__ import annotations

from olivekube.api.systems import AzureMLSystem
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.operator.jobs import OperatorSettings

Problem = tuple[str, str]  # field, message


def _listed(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values) or "none"


def image_problem(image: str | None, settings: OperatorSettings) -> Problem | None:
    if image is None or image == settings.runner_image or image.startswith(settings.allowed_images):
        return None
    allowed = [settings.runner_image, *(f"{p}*" for p in settings.allowed_images)]
    return "spec.kubernetes.image", f"{image} is not allowed by the cluster admin (allowed: {_listed(allowed)})"


def service_account_problem(name: str | None, settings: OperatorSettings) -> Problem | None:
    allowed = [settings.service_account, *settings.allowed_service_accounts]
    if name is None or name in allowed:
        return None
    return (
        "spec.kubernetes.serviceAccountName",
        f"{name} is not allowed by the cluster admin (allowed: {_listed(allowed)})",
    )


def priority_class_problem(name: str | None, settings: OperatorSettings) -> Problem | None:
    if name is None or name in settings.allowed_priority_classes:
        return None
    allowed = _listed(settings.allowed_priority_classes)
    return "spec.kubernetes.priorityClassName", f"{name} is not allowed by the cluster admin (allowed: {allowed})"


def writable_prefixes(namespace: str, settings: OperatorSettings) -> list[str]:
    """The admin's writable prefixes for one namespace, each ending in "/" (a folder, so that team-a's
    prefix is not also team-ab's)."""
    return [p.replace("{namespace}", namespace).rstrip("/") + "/" for p in settings.writable_prefixes]


def under(uri: str, prefix: str) -> bool:
    """Whether `uri` is the folder `prefix` (ending in "/") or lies in it, with no ".." segment."""
    return ".." not in uri.split("/") and (uri.rstrip("/") + "/").startswith(prefix)


def writable_problems(workflow: OptimizationWorkflow, settings: OperatorSettings) -> list[Problem]:
    """cache_dir and output_dir outside every prefix the admin lets this namespace write to."""
    if not settings.writable_prefixes:
        return []
    allowed = writable_prefixes(workflow.metadata.namespace or "default", settings)
    problems: list[Problem] = []
    for field in ("cache_dir", "output_dir"):
        value: str | None = getattr(workflow.spec, field)
        if value and not any(under(value, p) for p in allowed):
            message = f"{value} is not under a prefix the cluster admin lets this namespace write to"
            problems.append((f"spec.{field}", f"{message} (allowed: {_listed(allowed)})"))
    return problems


def namespace_problem(namespace: str, settings: OperatorSettings) -> Problem | None:
    if not settings.runner_namespaces or namespace in settings.runner_namespaces:
        return None
    opened = _listed(settings.runner_namespaces)
    return "metadata.namespace", f"{namespace} is not a namespace the cluster admin opened to workflows ({opened})"


def policy_problems(workflow: OptimizationWorkflow, settings: OperatorSettings) -> list[Problem]:
    """Every field of the workflow that the admin's allowlists refuse."""
    k8s = workflow.spec.kubernetes
    found = [
        namespace_problem(workflow.metadata.namespace or "default", settings),
        image_problem(k8s.image, settings) if k8s else None,
        service_account_problem(k8s.serviceAccountName, settings) if k8s else None,
        priority_class_problem(k8s.priorityClassName, settings) if k8s else None,
    ]
    return [p for p in found if p is not None] + writable_problems(workflow, settings)


SHARED_STORES = ("s3://", "azureml://", "pvc://")


def _mounted(path: str, workflow: OptimizationWorkflow) -> bool:
    k8s = workflow.spec.kubernetes
    mounts = [m.mountPath.rstrip("/") for m in (k8s.volumeMounts if k8s else None) or []]
    return any(path == m or path.startswith(m + "/") for m in mounts)


def pod_local_problems(workflow: OptimizationWorkflow) -> list[Problem]:
    """cache_dir and output_dir that would live in a pod's own file system, which is gone when the
    pod ends: in the cluster they must be shared stores. Passes hosted on Azure ML use neither."""
    spec = workflow.spec
    if all(isinstance(spec.host_system(p), AzureMLSystem) for p in spec.passes):
        return []
    problems: list[Problem] = []
    for field in ("cache_dir", "output_dir"):
        value: str | None = getattr(spec, field)
        path = value.removeprefix("file://") if value else None
        if value and (
            value.startswith(SHARED_STORES) or (path and path.startswith("/") and _mounted(path, workflow))
        ):
            continue
        problems.append(
            (
                f"spec.{field}",
                f"{value or 'unset'}: a pass's pod would keep it in its own file system, lost when the pod "
                "ends; in the cluster use s3://, azureml://, pvc://CLAIM/PATH or a path on a volume in "
                "spec.kubernetes.volumeMounts",
            )
        )
    return problems
