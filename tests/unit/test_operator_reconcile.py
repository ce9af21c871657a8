"""The reconciler in process: a workflow read, a decision made, Jobs created and status patched,
against in-memory stand-ins for the three API clients it uses and a clock held still."""

from __future__ import annotations

import copy
import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from olivekube.operator.jobs import OperatorSettings
from olivekube.operator.reconcile import Reconciler
from tests.helpers.manifests import valid_manifest

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class FakeWorkflows:
    """OptimizationWorkflows by (namespace, name); status patches merged as the API server does."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []

    def add(self, doc: dict[str, Any], generation: int = 1) -> dict[str, Any]:
        body = copy.deepcopy(doc)
        meta = body["metadata"]
        meta.update(uid=f"uid-{meta['name']}", generation=generation, resourceVersion="1")
        self.items[(meta["namespace"], meta["name"])] = body
        return body

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.items:
            raise ApiException(status=404)
        return copy.deepcopy(self.items[(namespace, name)])

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(copy.deepcopy(status))
        body = self.items[(namespace, name)]
        body["status"] = _merge(body.get("status") or {}, status)
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(body)


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class FakeBatch:
    """Jobs; `conflict` makes the next create answer 409 as for a Job the view has not seen."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.conflict = False

    def create_namespaced_job(self, namespace: str, job: dict[str, Any], **_: Any) -> Any:
        name = job["metadata"]["name"]
        if self.conflict or name in self.jobs:
            self.conflict = False
            self.jobs.setdefault(name, {**job, "metadata": {**job["metadata"], "uid": f"job-{name}"}})
            raise ApiException(status=409)
        self.jobs[name] = {**job, "metadata": {**job["metadata"], "uid": f"job-{name}"}}
        return SimpleNamespace(data=json.dumps(self.jobs[name]).encode())

    def list_namespaced_job(self, namespace: str, label_selector: str, **_: Any) -> Any:
        listing = {"items": list(self.jobs.values()), "metadata": {"resourceVersion": "5"}}
        return SimpleNamespace(data=json.dumps(listing).encode())

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> None:
        self.jobs.pop(name, None)


class FakeCore:
    """Events, and the pods whose termination message explains a failed Job."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.message = "data file missing"

    def create_namespaced_event(self, namespace: str, event: Any, **_: Any) -> None:
        self.events.append(event)

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        terminated = SimpleNamespace(message=self.message, exit_code=1, reason="Error")
        status = SimpleNamespace(
            container_statuses=[SimpleNamespace(state=SimpleNamespace(terminated=terminated))]
        )
        return SimpleNamespace(items=[SimpleNamespace(status=status)])


@pytest.fixture
def parts() -> tuple[Reconciler, FakeWorkflows, FakeBatch, FakeCore]:
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(), retry_backoff=0, workflows=workflows, batch=batch, core=core, clock=lambda: NOW
    )
    return reconciler, workflows, batch, core


def reasons(core: FakeCore) -> list[str]:
    return [e.reason for e in core.events]


def test_a_new_workflow_gets_its_first_job_and_a_running_status(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    workflows.add(valid_manifest())
    assert reconciler.reconcile("ml", "tone") is None
    (job,) = batch.jobs.values()
    assert job["metadata"]["labels"]["olivekube.io/pass"] == "lora"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-tone"
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Running" and status["passes"]["lora"]["jobName"] == job["metadata"]["name"]
    assert status["passes"]["lora"]["startedAt"] == "2026-01-02T03:04:05Z"
    assert reasons(core) == ["PassStarted"]
    assert core.events[0].first_timestamp == "2026-01-02T03:04:05Z"


def test_reconciling_again_creates_no_second_job_and_writes_nothing_new(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    patches = len(workflows.patches)
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1 and len(workflows.patches) == patches + 1  # Running as the Job shows it
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1 and len(workflows.patches) == patches + 1


def test_a_job_that_exists_but_was_not_seen_is_found_by_a_fresh_list(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    workflows.add(valid_manifest())
    batch.conflict = True
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Running" and status["passes"]["lora"]["attempts"] == 1


def test_an_invalid_spec_fails_once_with_the_field_named(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    doc = valid_manifest()
    doc["spec"]["passes"]["lora"]["r"] = 0
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Failed" and "spec.passes.lora.r" in status["message"]
    assert batch.jobs == {} and reasons(core) == ["InvalidSpec"]
    reconciler.reconcile("ml", "tone")
    assert len(workflows.patches) == 1 and reasons(core) == ["InvalidSpec"]


def test_failed_jobs_are_retried_then_fail_with_the_pods_message(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["backoffLimit"] = 1
    workflows.add(doc)
    failed = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-02T03:00:00Z"}]}
    for _ in range(2):
        reconciler.reconcile("ml", "tone")
        for job in batch.jobs.values():
            job["status"] = failed
            reconciler.view.put_job("uid-tone", job)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert len(batch.jobs) == 2 and status["phase"] == "Failed"
    assert status["passes"]["lora"]["message"] == "data file missing"
    assert "PassRetry" in reasons(core) and reasons(core)[-1] == "PassFailed"


def test_a_deleted_workflow_is_left_alone(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    body = workflows.add(valid_manifest())
    workflows.items[("ml", "tone")]["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    assert reconciler.reconcile("ml", "tone") is None
    assert batch.jobs == {} and workflows.patches == [] and body
    assert reconciler.reconcile("ml", "absent") is None
