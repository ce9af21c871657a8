"""Kubernetes API access for the operator and the in-cluster runner."""

from __future__ import annotations

import os
from typing import Any

from olivekube.api.common import GROUP, PLURAL, VERSION
from olivekube.storage.local import container_path

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def load_config() -> None:
    """In a pod: the service account (its folder found through OLIVEKUBE_PATH_MAP where the test
    node agent runs the pod); elsewhere: KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config

    sa = container_path(SA_DIR)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if host and (sa / "token").is_file():
        configuration = client.Configuration()
        configuration.host = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
        configuration.ssl_ca_cert = str(sa / "ca.crt")
        configuration.api_key = {"authorization": "Bearer " + (sa / "token").read_text().strip()}
        client.Configuration.set_default(configuration)
        return
    config.load_kube_config()


def namespace_of_pod() -> str | None:
    path = container_path(SA_DIR) / "namespace"
    return path.read_text().strip() if path.is_file() else None


class Workflows:
    """The OptimizationWorkflow API: read, and merge-patch status."""

    def __init__(self) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi()

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch status; returns the workflow as the API server now holds it."""
        patch = {"status": status}
        return dict(self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, patch))
