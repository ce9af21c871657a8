"""Each workflow's own runner identity: a ServiceAccount, and a Role bound to it that lets it read
that workflow and write that workflow's status, nothing else (`resourceNames`). A pass's code can
then change no other workflow. All three are owned by the workflow and go with it.

A workflow that names a ServiceAccount (one the admin allows) runs as that account instead; the
Role is bound to it, so workflows that share an account can write each other's status.
"""

from __future__ import annotations

from typing import Any

from olivekube.api.common import API_VERSION, GROUP, KIND, PLURAL
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.constants import LABEL_WORKFLOW, MANAGED_BY
from olivekube.operator.jobs import identity_name, label_value, runner_account


def _meta(workflow: OptimizationWorkflow, uid: str) -> dict[str, Any]:
    name = workflow.metadata.name
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid, "blockOwnerDeletion": True}
    return {
        "name": identity_name(name, uid),
        "namespace": workflow.metadata.namespace or "default",
        "labels": {**MANAGED_BY, LABEL_WORKFLOW: label_value(name)},
        "ownerReferences": [owner],
    }


def build_identity(workflow: OptimizationWorkflow, uid: str) -> list[dict[str, Any]]:
    """The ServiceAccount (unless the workflow names its own), Role and RoleBinding of a workflow."""
    meta = _meta(workflow, uid)
    name = workflow.metadata.name
    account = runner_account(workflow, uid)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [name], "verbs": ["get"]},
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [name],
                "verbs": ["get", "patch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": meta["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": meta["namespace"]}],
    }
    objects: list[dict[str, Any]] = [role, binding]
    if account == identity_name(name, uid):
        objects.insert(0, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    return objects
