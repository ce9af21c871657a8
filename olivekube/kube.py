"""Kubernetes API access for the operator and the in-cluster runner."""

from __future__ import annotations

import os
from typing import Any

from olivekube.api.common import GROUP, PLURAL, VERSION
from olivekube.core.constants import SERVICE_ACCOUNT_DIR
from olivekube.core.pod_paths import pod_path


def load_config() -> None:
    """In a pod: the service account, through the kubernetes client's in-cluster loader, which reads
    the token file again once a minute (a projected token is rotated well before it expires; one read
    at start stopped working after the token's hour); elsewhere: KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    sa = pod_path(SERVICE_ACCOUNT_DIR)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (sa / "token").is_file():
        configuration = client.Configuration()
        loader = InClusterConfigLoader(token_filename=str(sa / "token"), cert_filename=str(sa / "ca.crt"))
        loader.load_and_set(configuration)
        client.Configuration.set_default(_with_no_proxy_and_pool(configuration))
        return
    config.load_kube_config()
    client.Configuration.set_default(_with_no_proxy_and_pool(client.Configuration.get_default_copy()))


CONNECTIONS_PER_CLIENT = 32
"""Kept-alive connections per API client. The kubernetes client's default is 5 per CPU (10 on two
cores): fewer than the operator's 16 handler threads, so calls past the tenth at once would open a
new TLS connection and drop it after."""


def _with_no_proxy_and_pool(configuration: Any) -> Any:
    """The kubernetes client (35.0) reads HTTPS_PROXY but then drops NO_PROXY: with a proxy set for
    other services (an Azure endpoint, a model hub), calls to the API server would go through it.
    Also sets the connection pool's size (`CONNECTIONS_PER_CLIENT`)."""
    configuration.no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY")
    configuration.connection_pool_maxsize = CONNECTIONS_PER_CLIENT
    return configuration


def release(response: Any) -> None:
    """Read what is left of a response asked for with `_preload_content=False` (which spares the
    client's model deserialisation) and give its connection back to the pool. Left unread, the
    connection is never reused: every such call opened a new TLS connection (at 2,000 workflows, four
    handshakes per workflow, 40 % of the operator's CPU and as much of the API server's)."""
    response.drain_conn()
    response.release_conn()


def namespace_of_pod() -> str | None:
    path = pod_path(SERVICE_ACCOUNT_DIR) / "namespace"
    return path.read_text().strip() if path.is_file() else None


class Workflows:
    """The OptimizationWorkflow API: read, and merge-patch status."""

    def __init__(self) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi()

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body))

    def delete(self, namespace: str, name: str) -> None:
        """Delete a workflow, its Jobs and pods after it (background propagation)."""
        release(
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background", _preload_content=False
            )
        )

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch status; returns the workflow as the API server now holds it. With
        `resource_version`, only if the workflow has not changed since (else ApiException 409)."""
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        return dict(self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, patch))
