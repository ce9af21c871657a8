"""Read a workflow and its Jobs (from the watch-fed view), decide (plan.decide), then act: create the Job,
patch status, post events."""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from olivekube.api.common import API_VERSION, KIND
from olivekube.api.status import WorkflowPhase
from olivekube.api.validation import problems_from_error
from olivekube.api.workflow import OptimizationWorkflow, workflow_of_object
from olivekube.core.clock import Clock, parse_timestamp, timestamp, utc_now
from olivekube.core.constants import LABEL_WORKFLOW
from olivekube.kube import Workflows, release
from olivekube.operator import metrics
from olivekube.operator.cache_lookup import CacheLookup
from olivekube.operator.failed_create import FailedCreateEvents
from olivekube.operator.identity import build_identity
from olivekube.operator.jobs import (
    OperatorSettings,
    build_job,
    build_rendezvous_network_policy,
    build_rendezvous_service,
    job_name,
    label_value,
)
from olivekube.operator.plan import Decision, StartProblem, conditions, decide
from olivekube.operator.policy import pod_local_problems, policy_problems
from olivekube.operator.queues import KueueQueues
from olivekube.operator.search import decide_search
from olivekube.operator.view import ClusterView

log = logging.getLogger("olivekube.operator")
CANNOT_START = ("InvalidImageName",)
"""Container waiting reasons that no wait will cure."""
MAY_PASS = ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError")
"""Waiting reasons the kubelet retries (a registry hiccup, a Secret or ConfigMap created a moment
later): like a pod the scheduler cannot place yet, they fail the pass only when they still hold at
the start timeout (plan.StartProblem)."""
TERMINATING_MARGIN_SECONDS = 30.0
"""How long past its grace period a deleted pod still holds up the next attempt."""
FAILED_CREATE_AFTER_SECONDS = 5.0
"""A Job with no pod this long after its creation: the operator asks the Job controller's events why."""


class JobRefused(Exception):
    """The API server will not create a pass's Job (admission, quota, validation)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def api_message(exc: ApiException) -> str:
    """The API server's own message of a refusal."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def job_name_of(workflow: OptimizationWorkflow, decision: Decision) -> str:
    assert decision.create is not None
    pass_name, key, attempt = decision.create
    return job_name(workflow.metadata.name, pass_name, key, attempt)


class Reconciler:
    """One per operator process; thread-safe per workflow."""

    def __init__(
        self,
        settings: OperatorSettings,
        retry_backoff: float = 10.0,
        *,
        workflows: Any = None,
        batch: Any = None,
        core: Any = None,
        rbac: Any = None,
        networking: Any = None,
        clock: Clock = utc_now,
    ) -> None:
        """`workflows`, `batch`, `core`, `rbac` and `networking` default to the API clients (Workflows,
        BatchV1Api, CoreV1Api, RbacAuthorizationV1Api, NetworkingV1Api); tests pass their own."""
        self.settings = settings
        self.retry_backoff = retry_backoff
        self.workflows = workflows or Workflows()
        self.batch = batch or client.BatchV1Api()
        self.core = core or client.CoreV1Api()
        self.rbac = rbac or client.RbacAuthorizationV1Api()
        self.networking = networking or client.NetworkingV1Api()
        self.clock = clock
        self.view = ClusterView()
        self.failed_create = FailedCreateEvents(self.core, clock)
        self.locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self.phases: dict[tuple[str, str], str] = {}
        self.exported: dict[tuple[str, str], set[tuple[str, str]]] = {}  # evaluation samples per workflow
        self.timed: dict[tuple[str, str], set[str]] = {}  # uids of Jobs whose duration was observed
        self.queues = KueueQueues()
        self.started_at = clock()

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one workflow a step further. Returns seconds after which to look again, if any."""
        with self.locks[(namespace, name)]:
            metrics.RECONCILES.inc()
            try:
                return self._reconcile(namespace, name)
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                log.exception("reconcile %s/%s", namespace, name)
                raise

    def forget(self, namespace: str, name: str) -> None:
        self.view.forget_workflow((namespace, name))
        self.phases.pop((namespace, name), None)
        self.timed.pop((namespace, name), None)
        metrics.export_evaluation(namespace, name, None, self.exported.pop((namespace, name), set()))
        lock = self.locks.get((namespace, name))
        if lock is not None and lock.acquire(blocking=False):  # not in use: the map keeps no dead keys
            self.locks.pop((namespace, name), None)
            lock.release()
        self._export_phases()

    def _export_phases(self) -> None:
        counts: dict[str, int] = defaultdict(int)
        for phase in self.phases.values():
            counts[phase] += 1
        for phase in WorkflowPhase:
            metrics.WORKFLOWS.labels(phase.value).set(counts.get(phase.value, 0))

    def _reconcile(self, namespace: str, name: str, fresh: bool = False) -> float | None:
        """`fresh`: read the workflow and its Jobs from the API server rather than the watch-fed view."""
        body = None if fresh else self.view.workflow((namespace, name))
        if body is None:
            body = self._read_workflow(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        key = (namespace, name)
        evaluation = (body.get("status") or {}).get("evaluation")
        self.exported[key] = metrics.export_evaluation(namespace, name, evaluation, self.exported.get(key, set()))
        workflow = self._admit(body)
        if workflow is None:
            return None
        if workflow.spec.search() is not None:
            self._reconcile_search(body, workflow)
            return None
        uid = body["metadata"]["uid"]
        status = body.get("status") or {}
        if fresh or (status and not self.view.listed(uid)):  # a workflow that ran before this process
            self._list_jobs(namespace, name, uid)
        elif not status:
            self.view.known_from_the_start(uid)
        cache = CacheLookup(workflow, self.settings.cache_lookup_prefixes)
        decision = decide(
            workflow,
            int(body["metadata"].get("generation", 1)),
            status,
            self.view.jobs(uid),
            cache,
            self._failure_message,
            retry_backoff=self.retry_backoff,
            clock=self.clock,
            start_problem=self._start_problem,
            start_timeout=self.settings.start_timeout_seconds,
            live_pods=lambda job: self._live_pods(namespace, job),
        )
        if not fresh and decision.status.get("phase") == WorkflowPhase.FAILED:
            return self._reconcile(namespace, name, fresh=True)  # never fail on what a watch has not delivered
        types = {label_value(n): p.type for n, p in workflow.spec.passes.items()}
        metrics.time_finished_jobs(self.view.jobs(uid), types, self.timed.setdefault(key, set()), self.started_at)
        decision.events += [("Warning", "CacheEntryRefused", why) for why in cache.refused]
        try:
            created = self._act(workflow, uid, decision)
        except JobRefused as exc:
            self._refuse(body, exc.reason, exc.message)
            return None
        if not created and not fresh:
            return self._reconcile(namespace, name, fresh=True)  # a Job this process has not seen yet
        if not created:  # still there after a fresh list of our own Jobs: the name is someone else's
            taken = job_name_of(workflow, decision)
            message = f"a Job named {taken} exists in {namespace} and is not this workflow's; delete it"
            self._refuse(body, "JobNameTaken", message)
            return None
        self._apply(body, decision)
        phase = decision.status.get("phase") or status.get("phase")
        if phase:
            self.phases[(namespace, name)] = phase
            self._export_phases()
        return decision.requeue_after

    def _reconcile_search(self, body: dict[str, Any], workflow: OptimizationWorkflow) -> None:
        """A search: its trials are workflows of their own (operator/search.py); their events bring
        the search back here."""
        meta = body["metadata"]
        found = workflow.spec.search()
        if found is not None and found[1].sampler == "tpe":
            message = (
                "spec.search_strategy.sampler: tpe runs with `olivekube run` only (it learns from each trial "
                "in the process that runs them; the operator image carries no optuna); in a cluster use "
                "sequential or random"
            )
            self._refuse(body, "NotSupported", message)
            return
        if found is not None and found[1].execution_order == "pass-by-pass":
            message = (
                "spec.search_strategy.execution_order: pass-by-pass runs with `olivekube run` only (each "
                "pass's trials wait for the previous pass's best); in a cluster use joint"
            )
            self._refuse(body, "NotSupported", message)
            return
        children = self.view.owned_workflows(meta["namespace"], meta["uid"])
        decision = decide_search(body, workflow, children, self.clock())
        for child in decision.create:
            try:
                self.view.put_workflow(self.workflows.create(meta["namespace"], child))
            except ApiException as exc:
                if exc.status != 409:  # 409: made before a restart, before its status was written
                    raise
        for trial in decision.delete:
            try:
                self.workflows.delete(meta["namespace"], trial)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        for kind, reason, message in decision.events:
            self._event(body, kind, reason, message)
        status = {**decision.status, "observedGeneration": int(meta.get("generation", 1))}
        if _changes(body.get("status") or {}, status):
            self.view.put_workflow(self.workflows.patch_status(meta["namespace"], meta["name"], status))

    def _admit(self, body: dict[str, Any]) -> OptimizationWorkflow | None:
        """The workflow, or None after marking it Failed (once per generation) when its spec is
        invalid or asks what the admin does not allow."""
        try:
            workflow = workflow_of_object(body)
        except ValidationError as exc:
            problems = "; ".join(str(p) for p in problems_from_error(exc))
            self._refuse(body, "InvalidSpec", f"invalid spec: {problems}")
            return None
        refused = policy_problems(workflow, self.settings)
        if refused:
            self._refuse(body, "NotAllowed", "not allowed: " + "; ".join(f"{f}: {m}" for f, m in refused))
            return None
        local = pod_local_problems(workflow)
        if local:
            self._refuse(body, "PodLocalStore", "; ".join(f"{f}: {m}" for f, m in local))
            return None
        return workflow

    def _refuse(self, body: dict[str, Any], reason: str, message: str) -> None:
        """Mark the workflow Failed with `reason` (once per generation); no Job is created."""
        generation = int(body["metadata"].get("generation", 1))
        status = body.get("status") or {}
        if status.get("observedGeneration") == generation and status.get("phase") == WorkflowPhase.FAILED:
            return
        patch = {
            "phase": WorkflowPhase.FAILED.value,
            "observedGeneration": generation,
            "message": message,
            "conditions": conditions(
                status.get("conditions") or [],
                WorkflowPhase.FAILED,
                reason,
                message,
                generation,
                timestamp(self.clock()),
            ),
        }
        self._apply(body, Decision(patch, events=[("Warning", reason, message)]))

    def _act(self, workflow: OptimizationWorkflow, uid: str, decision: Decision) -> bool:
        """Delete and create the Jobs the decision asks for. False when the Job to create exists
        already (409): the decision was made on a view that lacks it."""
        namespace = workflow.metadata.namespace or "default"
        for name in decision.delete:
            try:
                release(
                    self.batch.delete_namespaced_job(
                        name, namespace, propagation_policy="Background", _preload_content=False
                    )
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
            self.view.forget_job(uid, name)
        if decision.create is None:
            return True
        pass_name, key, attempt = decision.create
        if not self.view.jobs(uid):  # the workflow's first Job: its runner identity first
            self._ensure_identity(workflow, uid)
        if workflow.spec.kubernetes and workflow.spec.kubernetes.queueName:
            problem = self.queues.problem(namespace, workflow.spec.kubernetes.queueName)
            if problem is not None:
                raise JobRefused("QueueNotFound", problem)
        job = build_job(workflow, uid, pass_name, key, attempt, self.settings)
        if job["spec"]["template"]["spec"].get("subdomain"):
            self._create_rendezvous(job, uid)
        try:
            answer = self.batch.create_namespaced_job(namespace, job, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status in (429,) or (exc.status or 500) >= 500:
                raise  # the API server is busy or down: the next event or timer tries again
            raise JobRefused(
                "JobRefused",
                f"the API server refused the Job of pass {pass_name} ({exc.status}): {api_message(exc)}",
            ) from exc
        self.view.put_job(uid, json.loads(answer.data))
        pass_type = workflow.spec.passes[pass_name].type
        metrics.JOBS_CREATED.labels(pass_type).inc()
        if attempt:
            metrics.RETRIES.labels(pass_type).inc()
        return True

    def _create_rendezvous(self, job: dict[str, Any], uid: str) -> None:
        """The headless Service of a several-pod training Job, and (when the admin turned policies on) the
        NetworkPolicy that opens its pods to each other: made before the Job, so that its pods find and
        reach each other from the start (they exist already when a Job's creation is tried again)."""
        namespace = job["metadata"]["namespace"]
        creates: list[tuple[Any, dict[str, Any]]] = [
            (self.core.create_namespaced_service, build_rendezvous_service(job, uid))
        ]
        if self.settings.rendezvous_network_policies:
            creates.append(
                (self.networking.create_namespaced_network_policy, build_rendezvous_network_policy(job, uid))
            )
        for create, body in creates:
            try:
                release(create(namespace, body, _preload_content=False))
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def _read_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self.workflows.get(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self.view.put_workflow(body)
        return body

    def _list_jobs(self, namespace: str, name: str, uid: str) -> None:
        answer = self.batch.list_namespaced_job(
            namespace, label_selector=f"{LABEL_WORKFLOW}={label_value(name)}", _preload_content=False
        )
        listing = json.loads(answer.data)
        mine = [
            j
            for j in listing.get("items") or []
            if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])
        ]
        self.view.replace_jobs(uid, mine, (listing.get("metadata") or {}).get("resourceVersion"))

    def _apply(self, body: dict[str, Any], decision: Decision) -> None:
        meta = body["metadata"]
        if decision.status and _changes(body.get("status") or {}, decision.status):
            self.view.put_workflow(self.workflows.patch_status(meta["namespace"], meta["name"], decision.status))
        for kind, reason, message in decision.events:
            self._event(body, kind, reason, message)
            if reason == "PassCached":
                metrics.PASSES_CACHED.inc()

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        stamp = timestamp(self.clock())
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            source=client.V1EventSource(component="olivekube-operator"),
        )
        try:
            release(self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False))
        except ApiException as exc:
            log.warning("event %s: %s", reason, exc.reason)

    def _ensure_identity(self, workflow: OptimizationWorkflow, uid: str) -> None:
        """Create the workflow's ServiceAccount, Role and RoleBinding (those there already stay)."""
        namespace = workflow.metadata.namespace or "default"
        create = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Role": self.rbac.create_namespaced_role,
            "RoleBinding": self.rbac.create_namespaced_role_binding,
        }
        for obj in build_identity(workflow, uid):
            try:
                release(create[obj["kind"]](namespace, obj, _preload_content=False))
            except ApiException as exc:
                if exc.status == 409:
                    continue
                if exc.status in (429,) or (exc.status or 500) >= 500:
                    raise
                raise JobRefused(
                    "IdentityRefused",
                    f"the API server refused the runner's {obj['kind']} {obj['metadata']['name']} "
                    f"({exc.status}): {api_message(exc)}",
                ) from exc

    def _start_problem(self, job: dict[str, Any]) -> StartProblem | None:
        """Why the Job's pods cannot be created, placed or started, in the cluster's words; None when
        nothing says so (yet). Pods come from the watch-fed view; the Job controller's FailedCreate
        events are listed only for a Job that has no pod after FAILED_CREATE_AFTER_SECONDS (admission
        refused them, a missing ServiceAccount), from one listing per namespace (failed_create.py)."""
        meta = job["metadata"]
        created = meta.get("creationTimestamp")
        age = (self.clock() - parse_timestamp(created)).total_seconds() if created else FAILED_CREATE_AFTER_SECONDS
        pods = self.view.pods(meta["namespace"], meta["name"])
        if not pods and meta.get("uid") and age >= FAILED_CREATE_AFTER_SECONDS:
            message = self.failed_create.message(meta["namespace"], meta["uid"])
            if message:
                return StartProblem(f"FailedCreate: {message}")
        for pod in pods:
            status = pod.get("status") or {}
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting and waiting.get("reason") in CANNOT_START + MAY_PASS:
                    why = f"{waiting['reason']}: {waiting.get('message') or ''}".strip()
                    return StartProblem(why, may_pass=waiting["reason"] in MAY_PASS)
            for condition in status.get("conditions") or []:
                if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                    return StartProblem(f"Unschedulable: {condition.get('message') or ''}".strip(), may_pass=True)
        return None

    def _live_pods(self, namespace: str, job: str) -> int:
        """The Job's pods (from the view) that still run or wait: not Succeeded or Failed, and, once
        deleted, within their grace period (its end is the deletionTimestamp) and a margin: a pod
        left Terminating by a dead node holds up nothing."""
        now = self.clock()
        alive = 0
        for pod in self.view.pods(namespace, job):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            deleted = pod["metadata"].get("deletionTimestamp")
            if deleted and (now - parse_timestamp(deleted)).total_seconds() > TERMINATING_MARGIN_SECONDS:
                continue
            alive += 1
        return alive

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods: from the view, or (a failed Job whose pods no watch delivered, once per
        failure) listed; none when they cannot be read."""
        meta = job["metadata"]
        pods = self.view.pods(meta["namespace"], meta["name"])
        if pods:
            return pods
        try:
            answer = self.core.list_namespaced_pod(
                meta["namespace"],
                label_selector=f"batch.kubernetes.io/job-name={meta['name']}",
                _preload_content=False,
            )
        except ApiException:
            return []
        return list(json.loads(answer.data).get("items") or [])

    def _failure_message(self, job: dict[str, Any]) -> str:
        for pod in self._pods(job):
            status = pod.get("status") or {}
            for cs in status.get("containerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated")
                if terminated and terminated.get("reason") == "OOMKilled":
                    return _oom_message(pod)
                if terminated and terminated.get("message"):
                    return str(terminated["message"]).strip()
                if terminated:
                    return f"exit code {terminated.get('exitCode')} ({terminated.get('reason')})"
            if status.get("reason"):
                return f"{status['reason']}: {status.get('message') or ''}".strip()
        conditions = (job.get("status") or {}).get("conditions") or []
        return (
            next((c.get("message") or c.get("reason") for c in conditions if c.get("type") == "Failed"), "") or ""
        )


def _oom_message(pod: dict[str, Any]) -> str:
    resources = (pod.get("spec") or {}).get("containers", [{}])[0].get("resources") or {}
    limit = (resources.get("limits") or {}).get("memory", "none set")
    return (
        f"OOMKilled: the pass needed more memory than its limit ({limit}); "
        "raise the memory limit in spec.kubernetes.resources"
    )


def _changes(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether a merge patch would change `current` (skips no-op writes)."""
    for key, value in patch.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value or []]
            have = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in current.get(key) or []]
            if strip != have:
                return True
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            if _changes(current[key], value):
                return True
        elif current.get(key) != value:
            return True
    return False
