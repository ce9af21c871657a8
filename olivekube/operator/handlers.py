"""kopf handlers: thin, level-triggered. Every event of a workflow, of one of its Jobs or of one of
their pods leads to one reconcile of that workflow (no polling; a retry's backoff is a one-off timer).
The three watches are label-selected and feed the view the reconciler reads."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

import kopf

from olivekube.api.common import GROUP, KIND, PLURAL, VERSION
from olivekube.core.constants import LABEL_WORKFLOW
from olivekube.kube import load_config
from olivekube.operator.reconcile import Reconciler
from olivekube.operator.requeue import Requeue
from olivekube.operator.view import JOB_NAME_LABEL

log = logging.getLogger("olivekube.operator")
STATE: dict[str, Reconciler] = {}
STOPPING = threading.Event()


def reconciler() -> Reconciler:
    return STATE["reconciler"]


def _reconcile(namespace: str, name: str) -> None:
    """Reconcile now; when the decision asks to look again later (a retry's backoff), say when.
    Nothing once the operator stops: the reconciles still queued for kopf's threads then end at once
    (the process exits only when they have), and the next operator decides from the cluster."""
    if STOPPING.is_set():
        return
    delay = reconciler().reconcile(namespace, name)
    if delay is not None:
        REQUEUE.after(delay + 0.1, (namespace, name))


def _reconcile_quietly(namespace: str, name: str) -> None:
    try:
        _reconcile(namespace, name)
    except Exception:
        log.exception("scheduled reconcile of %s/%s", namespace, name)


REQUEUE = Requeue(_reconcile_quietly)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the kubernetes client (a mapped service account in tests' pods). kopf
    calls this again when the API server answers 401, so a rotated token is read anew."""
    from kubernetes import client

    load_config()
    cfg = client.Configuration.get_default_copy()
    header = cfg.get_api_key_with_prefix("authorization") or ""
    token = header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else None
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.lifetime = int(memo.get("peering_lifetime", 60))
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 16
    settings.batching.batch_window = 0.01  # kopf waits this long for more events of one object


STOP_FLAG = threading.Event()
"""Given to kopf as its stop flag: set by our own SIGTERM/SIGINT handler (see `signals`)."""


def _stop() -> None:
    STOPPING.set()
    STOP_FLAG.set()


@kopf.on.startup()
async def signals(**_: Any) -> None:
    """Take SIGTERM and SIGINT from kopf (which would let the reconciles queued at that moment run to
    their end first: over 60 s at 2,000 workflows): the queued ones now return at once, then kopf
    stops through its stop flag."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)


@kopf.on.event(GROUP, VERSION, PLURAL)
def workflow_event(event: kopf.RawEvent, **_: Any) -> None:
    obj: dict[str, Any] = dict(event["object"])
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    if event["type"] == "DELETED":
        reconciler().forget(namespace, name)
        return
    reconciler().view.put_workflow(obj)
    _reconcile(namespace, name)
    owners: list[dict[str, Any]] = obj["metadata"].get("ownerReferences") or []
    for owner in owners:  # a search's trial: the search looks again
        if owner.get("kind") == KIND and owner.get("apiVersion", "").startswith(GROUP):
            _reconcile(namespace, owner["name"])


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_WORKFLOW: kopf.PRESENT})
def job_event(event: kopf.RawEvent, **_: Any) -> None:
    job: dict[str, Any] = dict(event["object"])
    view = reconciler().view
    for owner in job["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == KIND and owner.get("apiVersion", "").startswith(GROUP):
            if event["type"] == "DELETED":
                view.forget_job(owner["uid"], job["metadata"]["name"])
            else:
                view.put_job(owner["uid"], job)
            _reconcile(job["metadata"]["namespace"], owner["name"])


@kopf.on.event("", "v1", "pods", labels={LABEL_WORKFLOW: kopf.PRESENT})
def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    """A runner pod changed (scheduled, waiting on its image, started, ended): the view holds it, and
    its workflow, once its Job has been seen, looks again."""
    pod: dict[str, Any] = dict(event["object"])
    view = reconciler().view
    if event["type"] == "DELETED":
        view.forget_pod(pod)
        return
    view.put_pod(pod)
    meta = pod["metadata"]
    owner = view.owner_of_job(meta["namespace"], (meta.get("labels") or {}).get(JOB_NAME_LABEL, ""))
    if owner is not None:
        _reconcile(meta["namespace"], owner)
