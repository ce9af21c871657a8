"""The operator's picture of the cluster, fed by the watch streams kopf already holds open.

A reconcile reads workflows, their Jobs and the Jobs' pods from here instead of GET and LIST calls,
so a new workflow costs one API call (its Job) on the way to running, and a Job whose pods do not
start costs none while the operator looks at it again (a LIST per Job per tick, even with a label
selector, makes the API server scan the namespace). What a watch has not delivered yet
is caught where it matters: a Job that exists but is missing here makes the create answer 409, and
a decision to fail is re-checked against the API server before it is written (see reconcile.py).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

Key = tuple[str, str]  # namespace, name
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _version(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


def _is_newer(candidate: dict[str, Any], held: dict[str, Any] | None) -> bool:
    """Whether `candidate` should replace `held` (resource versions compared when both are numbers,
    as every etcd and kine server writes them; otherwise the later arrival wins)."""
    if held is None:
        return True
    new, old = _version(candidate), _version(held)
    return new is None or old is None or new >= old


JOB_SPEC_READ = ("suspend", "parallelism", "completions", "completionMode", "backoffLimit")
"""The fields of a Job's spec a decision reads; the pod template (every pass's env, volumes, command)
is not kept: at 2,000 workflows it was most of what the view held."""


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without `metadata.managedFields` (server-side apply's bookkeeping: nothing here reads it)."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return copy.deepcopy({**obj, "metadata": meta})


def _slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """A Job as the view keeps it: its metadata, status and the spec fields in `JOB_SPEC_READ`."""
    spec = job.get("spec") or {}
    kept: dict[str, Any] = {k: job[k] for k in ("apiVersion", "kind", "metadata", "status") if k in job}
    return _without_managed_fields({**kept, "spec": {k: spec[k] for k in JOB_SPEC_READ if k in spec}})


def _slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod as the view keeps it: metadata, status, its node, and each container's name and
    resources (an OOM message names the memory limit); not the runner's env, volumes or command."""
    spec = pod.get("spec") or {}
    kept: dict[str, Any] = {k: pod[k] for k in ("apiVersion", "kind", "metadata", "status") if k in pod}
    containers = [{k: c[k] for k in ("name", "resources") if k in c} for c in spec.get("containers") or []]
    slim_spec = {"containers": containers, **({"nodeName": spec["nodeName"]} if "nodeName" in spec else {})}
    return _without_managed_fields({**kept, "spec": slim_spec})


class ClusterView:
    """Latest known workflows, Jobs and the Jobs' pods; thread-safe. Pods go when their watch says
    they are deleted (with their Job, by its TTL or the workflow's deletion)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workflows: dict[Key, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}  # owner uid → job name → Job
        self._listed: set[str] = set()  # owner uids whose Jobs were listed once (a full picture)
        self._pods: dict[Key, dict[str, dict[str, Any]]] = {}  # (namespace, Job name) → pod name → pod
        self._job_owners: dict[Key, str] = {}  # (namespace, Job name) → its workflow's name

    def workflow(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            body = self._workflows.get(key)
            return copy.deepcopy(body) if body is not None else None

    def put_workflow(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            held = self._workflows.get(key)
            if held is not None and held["metadata"].get("uid") != meta.get("uid"):
                held = None  # deleted and created again under the same name
            if _is_newer(body, held):
                self._workflows[key] = _without_managed_fields(body)

    def forget_workflow(self, key: Key) -> None:
        with self._lock:
            body = self._workflows.pop(key, None)
            if body is not None:
                uid = body["metadata"].get("uid")
                for name in self._jobs.pop(uid, {}):
                    self._job_owners.pop((key[0], name), None)
                self._listed.discard(uid)

    def owned_workflows(self, namespace: str, owner_uid: str) -> dict[str, dict[str, Any]]:
        """The workflows (a search's trials) that `owner_uid` owns, by name."""
        with self._lock:
            return {
                key[1]: copy.deepcopy(body)
                for key, body in self._workflows.items()
                if key[0] == namespace
                and any(o.get("uid") == owner_uid for o in body["metadata"].get("ownerReferences") or [])
            }

    def jobs(self, owner_uid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(j) for j in self._jobs.get(owner_uid, {}).values()]

    def listed(self, owner_uid: str) -> bool:
        with self._lock:
            return owner_uid in self._listed

    def known_from_the_start(self, owner_uid: str) -> None:
        """This process saw the workflow before any status was written: every Job of it comes from
        here or reaches the view through the watch (one a crashed process made before its status
        write is found when its create answers 409), so no LIST is needed for it."""
        with self._lock:
            self._jobs.setdefault(owner_uid, {})
            self._listed.add(owner_uid)

    def put_job(self, owner_uid: str, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        owner = next((o["name"] for o in meta.get("ownerReferences") or [] if o.get("uid") == owner_uid), None)
        with self._lock:
            mine = self._jobs.setdefault(owner_uid, {})
            name = meta["name"]
            if _is_newer(job, mine.get(name)):
                mine[name] = _slim_job(job)
            if owner and meta.get("namespace"):
                self._job_owners[(meta["namespace"], name)] = owner

    def owner_of_job(self, namespace: str, job: str) -> str | None:
        """The name of the workflow a Job seen here belongs to."""
        with self._lock:
            return self._job_owners.get((namespace, job))

    def put_pod(self, pod: dict[str, Any]) -> None:
        """A Job's pod as a watch delivered it, kept slim (`_slim_pod`)."""
        meta = pod["metadata"]
        job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if not job:
            return
        with self._lock:
            mine = self._pods.setdefault((meta["namespace"], job), {})
            if _is_newer(pod, mine.get(meta["name"])):
                mine[meta["name"]] = _slim_pod(pod)

    def forget_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(JOB_NAME_LABEL, ""))
        with self._lock:
            mine = self._pods.get(key)
            if mine is not None:
                mine.pop(meta["name"], None)
                if not mine:
                    del self._pods[key]

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods a watch has delivered, oldest first."""
        with self._lock:
            found = [copy.deepcopy(p) for p in self._pods.get((namespace, job), {}).values()]
        return sorted(found, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def forget_job(self, owner_uid: str, name: str) -> None:
        with self._lock:
            mine = self._jobs.get(owner_uid)
            if mine is not None:
                gone = mine.pop(name, None)
                if gone is not None:
                    self._job_owners.pop((gone["metadata"].get("namespace", ""), name), None)
                if not mine and owner_uid not in self._listed:
                    del self._jobs[owner_uid]  # the Jobs of a deleted workflow, collected

    def replace_jobs(self, owner_uid: str, jobs: list[dict[str, Any]], list_version: str | None) -> None:
        """A LIST's answer: the full set of this owner's Jobs as of `list_version`. Copies a watch
        delivered that are newer, or Jobs created after the list, are kept."""
        try:
            listed_at: int | None = int(list_version or "")
        except ValueError:
            listed_at = None
        with self._lock:
            held = self._jobs.get(owner_uid, {})
            fresh: dict[str, dict[str, Any]] = {}
            for job in jobs:
                name = job["metadata"]["name"]
                fresh[name] = held[name] if name in held and not _is_newer(job, held[name]) else _slim_job(job)
            for name, job in held.items():
                version = _version(job)
                if name not in fresh and listed_at is not None and version is not None and version > listed_at:
                    fresh[name] = job
            self._jobs[owner_uid] = fresh
            self._listed.add(owner_uid)
            for name, job in fresh.items():
                meta = job["metadata"]
                for owner in meta.get("ownerReferences") or []:
                    if owner.get("uid") == owner_uid and meta.get("namespace"):
                        self._job_owners[(meta["namespace"], name)] = owner["name"]
