"""Kueue LocalQueues, read before a Job that names one is made.

A Job with `kueue.x-k8s.io/queue-name` starts suspended for Kueue to admit: with no Kueue in the
cluster, or no such LocalQueue in the namespace, nothing ever would, and the workflow would wait for
ever without a word. One discovery call finds Kueue's API version (kept once found); one GET per Job
made reads the queue.
"""

from __future__ import annotations

import logging

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("olivekube.operator")
KUEUE_GROUP = "kueue.x-k8s.io"
FIELD = "spec.kubernetes.queueName"


class KueueQueues:
    def __init__(self) -> None:
        self.version: str | None = None

    def problem(self, namespace: str, queue: str) -> str | None:
        """Why a Job naming `queue` would never be admitted; None when the queue is there (or cannot
        be read: the operator's RBAC is the admin's choice, so the Job is made as before)."""
        try:
            self.version = self.version or _kueue_version()
            if self.version is None:
                return (
                    f"{FIELD}: {queue} names a Kueue LocalQueue, but this cluster has no Kueue (API group "
                    f"{KUEUE_GROUP}): install Kueue, or remove queueName"
                )
            client.CustomObjectsApi().get_namespaced_custom_object(
                KUEUE_GROUP, self.version, namespace, "localqueues", queue
            )
        except ApiException as exc:
            if exc.status == 404:
                return (
                    f"{FIELD}: Kueue has no LocalQueue {queue} in namespace {namespace}; its Jobs would wait "
                    "suspended for ever: create the LocalQueue, or name one that exists"
                )
            if exc.status in (401, 403):
                log.warning("cannot read LocalQueue %s/%s (%s): not checked", namespace, queue, exc.reason)
                return None
            raise
        return None


def _kueue_version() -> str | None:
    """Kueue's preferred API version, from discovery; None when the cluster has no Kueue."""
    try:
        answer = client.ApiClient().call_api(
            f"/apis/{KUEUE_GROUP}", "GET", response_type="object", auth_settings=["BearerToken"]
        )[0]
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str(answer["preferredVersion"]["version"])
