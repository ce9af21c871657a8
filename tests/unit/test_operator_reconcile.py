"""The reconciler in process: a workflow read, a decision made, Jobs created and status patched,
against in-memory stand-ins for the three API clients it uses and a clock held still."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from olivekube.api.workflow import parse_workflow
from olivekube.operator.jobs import OperatorSettings
from olivekube.operator.reconcile import Reconciler
from tests.helpers.manifests import merge_patch, valid_manifest

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class Response:
    """What the API clients return for a call made with `_preload_content=False`: its connection goes
    back to the pool only once the body is drained and released. Every one made is in `ANSWERED`."""

    def __init__(self) -> None:
        self.drained = self.released = False
        ANSWERED.append(self)

    def drain_conn(self) -> None:
        self.drained = True

    def release_conn(self) -> None:
        self.released = True


ANSWERED: list[Response] = []


class FakeWorkflows:
    """OptimizationWorkflows by (namespace, name); status patches merged as the API server does."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []

    def add(self, doc: dict[str, Any], generation: int = 1) -> dict[str, Any]:
        """Store a workflow; its stores default to shared ones, as a workflow in a cluster needs."""
        body = copy.deepcopy(doc)
        body["spec"].setdefault("cache_dir", "s3://models/cache")
        body["spec"].setdefault("output_dir", "s3://models/out")
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
        body["status"] = merge_patch(body.get("status") or {}, status)
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(body)


class FakeBatch:
    """Jobs; `conflict` makes the next create answer 409 as for a Job the view has not seen, `foreign`
    holds names taken by Jobs of no workflow, `refusal` makes every create answer that ApiException."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.conflict = False
        self.foreign: set[str] = set()
        self.refusal: ApiException | None = None
        self.lists = 0

    def create_namespaced_job(self, namespace: str, job: dict[str, Any], **_: Any) -> Any:
        name = job["metadata"]["name"]
        if self.refusal is not None:
            raise self.refusal
        if name in self.foreign:
            raise ApiException(status=409)
        if self.conflict or name in self.jobs:
            self.conflict = False
            self.jobs.setdefault(name, {**job, "metadata": {**job["metadata"], "uid": f"job-{name}"}})
            raise ApiException(status=409)
        self.jobs[name] = {**job, "metadata": {**job["metadata"], "uid": f"job-{name}"}}
        return SimpleNamespace(data=json.dumps(self.jobs[name]).encode())

    def list_namespaced_job(self, namespace: str, label_selector: str, **_: Any) -> Any:
        self.lists += 1
        listing = {"items": list(self.jobs.values()), "metadata": {"resourceVersion": "5"}}
        return SimpleNamespace(data=json.dumps(listing).encode())

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> Response:
        self.jobs.pop(name, None)
        return Response()


class FakeCore:
    """Events, and the pods whose termination message explains a failed Job."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.message = "data file missing"
        self.failed_create: dict[str, str] = {}  # Job uid → the Job controller's FailedCreate message
        self.pod_lists = 0
        self.event_lists = 0
        self.accounts: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []

    def create_namespaced_event(self, namespace: str, event: Any, **_: Any) -> Response:
        self.events.append(event)
        return Response()

    def create_namespaced_service_account(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self.accounts.append(body)
        return Response()

    def create_namespaced_service(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self.services.append(body)
        return Response()

    def list_namespaced_event(self, namespace: str, field_selector: str, **_: Any) -> Any:
        """The Job controller's FailedCreate events, as `failed_create` says."""
        self.event_lists += 1
        found = [
            SimpleNamespace(
                involved_object=SimpleNamespace(uid=uid),
                message=message,
                last_timestamp=None,
                event_time=None,
                first_timestamp=None,
            )
            for uid, message in self.failed_create.items()
            if "reason=FailedCreate" in field_selector
        ]
        return SimpleNamespace(items=found)

    def list_namespaced_pod(self, namespace: str, label_selector: str, **_: Any) -> Any:
        """A failed Job's pod, ended with `message` (read when no watch delivered it)."""
        self.pod_lists += 1
        terminated = {"message": self.message, "exitCode": 1, "reason": "Error"}
        pod = {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}
        return SimpleNamespace(data=json.dumps({"items": [pod]}).encode())


def waiting_pod(job: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The Job's pod as the pod watch delivers it, its container waiting for `reason`."""
    meta = job["metadata"]
    return {
        "metadata": {
            "name": f"{meta['name']}-abcde",
            "namespace": meta["namespace"],
            "labels": {"batch.kubernetes.io/job-name": meta["name"]},
            "resourceVersion": "7",
        },
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}]},
    }


class FakeRbac:
    """Roles and RoleBindings by name."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def _create(self, body: dict[str, Any]) -> None:
        key = f"{body['kind']}/{body['metadata']['name']}"
        if key in self.objects:
            raise ApiException(status=409)
        self.objects[key] = body

    def create_namespaced_role(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self._create(body)
        return Response()

    def create_namespaced_role_binding(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self._create(body)
        return Response()


@pytest.fixture
def parts() -> tuple[Reconciler, FakeWorkflows, FakeBatch, FakeCore]:
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(),
        retry_backoff=0,
        workflows=workflows,
        batch=batch,
        core=core,
        rbac=FakeRbac(),
        clock=lambda: NOW,
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


def test_every_answer_read_raw_gives_its_connection_back(parts) -> None:  # type: ignore[no-untyped-def]
    """Identity and event answers are not deserialised; unreleased, each would hold its connection
    until collected, and the next call would open a new TLS connection (the deletion of a Job: below,
    in the test of pods that cannot be created)."""
    reconciler, workflows, _, _ = parts
    ANSWERED.clear()
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    assert len(ANSWERED) == 4  # ServiceAccount, Role, RoleBinding, the PassStarted event
    assert all(r.drained and r.released for r in ANSWERED)


def test_reconciling_again_creates_no_second_job_and_writes_nothing_new(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    patches = len(workflows.patches)
    for _ in range(2):  # the start's status already says what the Job shows
        reconciler.reconcile("ml", "tone")
        assert len(batch.jobs) == 1 and len(workflows.patches) == patches
    assert batch.lists == 0  # seen before its first status: its Jobs are all this process's or the watch's


def test_a_workflow_with_a_status_from_before_this_process_has_its_jobs_listed_once(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    restarted = Reconciler(
        OperatorSettings(),
        0,
        workflows=workflows,
        batch=batch,
        core=FakeCore(),
        rbac=FakeRbac(),
        clock=lambda: NOW,
    )
    for _ in range(3):
        restarted.reconcile("ml", "tone")
    assert batch.lists == 1 and len(batch.jobs) == 1


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


def _cached_output(cache: Path, scope: str, name: str) -> tuple[str, str]:
    """A published pass output in `scope`'s part of the cache: (uri, digest)."""
    from olivekube.storage import build_manifest

    folder = cache / "passes" / scope / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights of " + scope.encode())
    manifest = build_manifest(folder, {"kind": "adapter"})
    (folder / "olivekube-manifest.json").write_text(manifest.to_json())
    return f"file://{folder}", manifest.digest


def _data_uri(cache: Path) -> str:
    return f"file://{cache.parent / 'data' / 'tone.json'}"


def _model_uri(cache: Path) -> str:
    return f"file://{cache.parent / 'model'}"


def _index(cache: Path, scope: str, key: str, uri: str, digest: str, **recorded: Any) -> None:
    """An index entry as the runner writes it, with the input model's and data's versions it read
    (those of now by default)."""
    from olivekube.storage import store_for

    data, model = _data_uri(cache), _model_uri(cache)
    entry = cache / "index" / scope / key
    entry.parent.mkdir(parents=True, exist_ok=True)
    fields = {
        "input": "digest-of-the-input-model",
        "inputVersions": {model: store_for(model).folder_version(model)},
        "data": {data: store_for(data).file_version(data)},
    }
    fields.update(recorded)
    entry.write_text(
        json.dumps({"uri": uri, "digest": digest, "sizeBytes": 1, "metrics": {"train_loss": 1.0}, **fields})
    )


def _shared_cache_parts(
    tmp_path: Path, lookups: bool = True
) -> tuple[Reconciler, FakeWorkflows, FakeBatch, FakeCore]:
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    prefixes = (f"file://{tmp_path}",) if lookups else ()
    settings = OperatorSettings(cache_lookup_prefixes=prefixes)
    return (
        Reconciler(settings, 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: NOW),
        workflows,
        batch,
        core,
    )


def _workflow_over(cache: Path) -> dict[str, Any]:
    doc = valid_manifest()
    doc["spec"]["cache_dir"] = f"file://{cache}"  # a shared file system, mounted in the pods
    doc["spec"]["kubernetes"]["volumes"] = [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}]
    doc["spec"]["kubernetes"]["volumeMounts"] = [{"name": "shared", "mountPath": str(cache)}]
    # lora is not the last pass: the last one's Job always runs, to publish output_dir
    doc["spec"]["passes"] = {"lora": doc["spec"]["passes"]["lora"], "merge": {"type": "MergeAdapterWeights"}}
    data = cache.parent / "data" / "tone.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text('[{"phrase": "hi", "tone": "Joy"}]')
    doc["spec"]["data_configs"][0]["load_dataset_config"]["data_files"] = _data_uri(cache)
    model = cache.parent / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text('{"model_type": "phi3"}')
    doc["spec"]["input_model"]["model_path"] = _model_uri(cache)
    return doc


def test_an_index_entry_of_the_workflows_own_namespace_completes_the_pass_without_a_job(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "mine"))
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["passes"]["lora"]["cached"] is True
    assert [job["metadata"]["labels"]["olivekube.io/pass"] for job in batch.jobs.values()] == ["merge"]


def test_another_namespace_cannot_plant_a_cache_entry_that_this_one_uses(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, core = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    planted_uri, planted_digest = _cached_output(cache, "team-b", "planted")
    _index(cache, "ml", key, planted_uri, planted_digest)  # B wrote an entry for A's key, pointing at B's output
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert len(batch.jobs) == 1 and status["passes"]["lora"].get("cached") is None
    refused = [e.message for e in core.events if e.reason == "CacheEntryRefused"]
    assert refused and "outside this namespace" in refused[0] and planted_uri in refused[0]


def test_an_entry_whose_output_does_not_match_it_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, core = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    uri, _ = _cached_output(cache, "ml", "swapped")
    _index(cache, "ml", key, uri, "0" * 64)
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1 and "does not match" in " ".join(e.message for e in core.events)


@pytest.mark.parametrize(
    ("made_up", "refused"),
    [
        ({"data": {}}, "other data files"),  # claims to have read no data: nothing would be compared
        ({"models": {"adapters.x": {"path": "file:///x", "digest": "0"}}}, "other models"),
        ({"adapter": {"path": "file:///x", "digest": "0"}}, "other adapter"),
        ({"inputVersions": {}}, None),  # claims nothing about the input model
        ({"inputVersions": {"file:///elsewhere": "sha256:0"}}, None),
    ],
)
def test_a_planted_entry_in_the_namespaces_own_part_with_made_up_inputs_is_not_taken(
    tmp_path: Path, made_up: dict[str, Any], refused: str | None
) -> None:
    """Whoever can write to this namespace's part of the cache plants an entry (and an output that
    matches it) whose recorded inputs are made up: what the operator compares comes from the spec."""
    cache = tmp_path / "cache"
    reconciler, workflows, batch, core = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "planted"), **made_up)
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert len(batch.jobs) == 1 and status["passes"]["lora"].get("cached") is None
    messages = [e.message for e in core.events if e.reason == "CacheEntryRefused"]
    assert (refused in " ".join(messages)) if refused else not messages


def test_a_first_pass_entry_is_not_taken_once_the_input_model_changed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "mine"))
    (cache.parent / "model" / "config.json").write_text('{"model_type": "phi3", "hidden_size": 8}')
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    assert (
        len(batch.jobs) == 1 and workflows.items[("ml", "tone")]["status"]["passes"]["lora"].get("cached") is None
    )


def test_the_operator_reads_no_cache_the_admin_did_not_name(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path, lookups=False)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "mine"))
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1  # the pass's Job, with the workflow's own credentials, finds it instead


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image", "docker.io/evil/miner:1"),
        ("serviceAccountName", "cluster-admin-sa"),
        ("priorityClassName", "system-cluster-critical"),
    ],
)
def test_what_the_admin_did_not_allow_fails_the_workflow_before_any_job(parts, field: str, value: str) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    doc = valid_manifest()
    doc["spec"]["kubernetes"][field] = value
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert batch.jobs == {} and status["phase"] == "Failed"
    assert f"spec.kubernetes.{field}: {value} is not allowed" in status["message"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (
        failed["status"] == "True"
        and failed["reason"] == "NotAllowed"
        and f"spec.kubernetes.{field}" in failed["message"]
    )
    assert reasons(core) == ["NotAllowed"]


def test_what_the_admin_allowed_runs() -> None:
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    settings = OperatorSettings(
        allowed_images=("registry.example.com/ml/",),
        allowed_service_accounts=("trainer",),
        allowed_priority_classes=("batch-low",),
    )
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: NOW
    )
    doc = valid_manifest()
    doc["spec"]["kubernetes"].update(
        image="registry.example.com/ml/olivekube-runner:2",
        serviceAccountName="trainer",
        priorityClassName="batch-low",
    )
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer" and pod["containers"][0]["image"].startswith(
        "registry.example.com/ml/"
    )


@pytest.mark.parametrize(
    ("stores", "field"),
    [
        ({"cache_dir": None}, "spec.cache_dir"),
        ({"output_dir": "outputs/tone"}, "spec.output_dir"),
        ({"output_dir": "file:///models/tone"}, "spec.output_dir"),
    ],
)
def test_stores_in_the_pods_own_file_system_are_refused_before_any_job(parts, stores, field) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    doc = valid_manifest()
    doc["spec"].update({k: v for k, v in stores.items() if v is not None})
    body = workflows.add(doc)
    for key, value in stores.items():
        if value is None:
            workflows.items[("ml", "tone")]["spec"].pop(key)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert batch.jobs == {} and status["phase"] == "Failed" and body
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (
        failed["reason"] == "PodLocalStore" and f"{field}: " in failed["message"] and "pvc://" in failed["message"]
    )


def test_a_job_the_api_server_refuses_fails_the_workflow_with_its_message(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    refusal = ApiException(status=403)
    refusal.body = json.dumps(
        {"message": 'jobs "tone-lora" is forbidden: exceeded quota: compute, requested: cpu=4'}
    )
    batch.refusal = refusal
    workflows.add(valid_manifest())
    assert reconciler.reconcile("ml", "tone") is None
    status = workflows.items[("ml", "tone")]["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (
        status["phase"] == "Failed" and failed["reason"] == "JobRefused" and "exceeded quota" in failed["message"]
    )
    assert reasons(core) == ["JobRefused"]


def test_a_job_name_held_by_a_job_of_no_workflow_fails_the_workflow(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    doc = valid_manifest()
    workflows.add(doc)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    from olivekube.operator.jobs import job_name

    batch.foreign.add(job_name("tone", "lora", key, 0))
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Failed" and "is not this workflow's" in status["message"] and batch.jobs == {}
    assert reasons(core) == ["JobNameTaken"]


def test_pods_that_cannot_be_created_fail_the_workflow_with_the_clusters_words() -> None:
    now = [NOW]
    ANSWERED.clear()
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(), 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    workflows.add(valid_manifest())
    assert reconciler.reconcile("ml", "tone") is None
    (job,) = batch.jobs.values()
    job["metadata"]["creationTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    reconciler.view.put_job(job["metadata"]["ownerReferences"][0]["uid"], job)
    core.failed_create = {
        job["metadata"]["uid"]: 'pods "tone-lora-x" is forbidden: error looking up service account ml/ghost'
    }
    assert reconciler.reconcile("ml", "tone") == 10.0  # no pod yet, but a young Job: no LIST, look again
    assert core.event_lists == 0
    now[0] = NOW + dt.timedelta(seconds=10)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Failed" and "service account ml/ghost" in status["message"]
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "PodsNotStarting"
    assert batch.jobs == {}, "the Job that cannot start is deleted"
    assert ANSWERED and all(r.released for r in ANSWERED)


def test_jobs_without_pods_share_one_event_listing_per_namespace() -> None:
    """40 Jobs whose pods the Job controller has not made yet, each looked at every 10 s for a
    minute: one FailedCreate listing per namespace per 5 s serves them all (240 LISTs before)."""
    now = [NOW]
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(), 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    names = [f"tone-{i}" for i in range(40)]
    for name in names:
        doc = valid_manifest()
        doc["metadata"]["name"] = name
        doc["spec"]["passes"]["lora"]["r"] = 1 + len(workflows.items)  # a Job name of its own
        workflows.add(doc)
        reconciler.reconcile("ml", name)
    for job in batch.jobs.values():
        job["metadata"]["creationTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
        reconciler.view.put_job(job["metadata"]["ownerReferences"][0]["uid"], job)
    for seconds in range(10, 70, 10):
        now[0] = NOW + dt.timedelta(seconds=seconds)
        for name in names:
            reconciler.reconcile("ml", name)
    assert len(batch.jobs) == 40 and core.event_lists == 6  # one per look at the namespace, 10 s apart
    doomed = next(iter(batch.jobs.values()))
    owner = doomed["metadata"]["ownerReferences"][0]["name"]
    core.failed_create = {doomed["metadata"]["uid"]: "exceeded quota: compute-resources"}
    now[0] = NOW + dt.timedelta(seconds=80)
    reconciler.reconcile("ml", owner)
    assert core.event_lists == 7
    status = workflows.items[("ml", owner)]["status"]
    assert status["phase"] == "Failed" and "exceeded quota: compute-resources" in status["message"]


def test_a_job_with_pods_costs_no_list_while_it_waits_to_start() -> None:
    """A Job whose pod waits (for a node, its image) is looked at again from the view: no event or
    pod LIST however often, the load that drowned the API server at 2,000 workflows."""
    now = [NOW]
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(), 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    job["metadata"]["creationTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    reconciler.view.put_job(job["metadata"]["ownerReferences"][0]["uid"], job)
    pending = waiting_pod(job, "ContainerCreating", "")
    reconciler.view.put_pod(pending)
    for seconds in range(0, 120, 10):
        now[0] = NOW + dt.timedelta(seconds=seconds)
        reconciler.reconcile("ml", "tone")
    assert (core.pod_lists, core.event_lists) == (0, 0)
    assert workflows.items[("ml", "tone")]["status"]["phase"] == "Running"
    assert reconciler.view.owner_of_job("ml", job["metadata"]["name"]) == "tone"
    reconciler.view.forget_pod(pending)
    assert reconciler.view.pods("ml", job["metadata"]["name"]) == []


def unschedulable_pod(job: dict[str, Any], message: str) -> dict[str, Any]:
    """The Job's pod as the scheduler leaves it when no node fits."""
    pod = waiting_pod(job, "", "")
    pod["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
    }
    return pod


START_PROBLEMS = {
    "ErrImagePull": lambda job: waiting_pod(job, "ErrImagePull", "registry.example.com: i/o timeout"),
    "ImagePullBackOff": lambda job: waiting_pod(job, "ImagePullBackOff", "registry.example.com: i/o timeout"),
    "CreateContainerConfigError": lambda job: waiting_pod(
        job, "CreateContainerConfigError", 'secret "s" not found'
    ),
    "Unschedulable": lambda job: unschedulable_pod(job, "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
}


@pytest.mark.parametrize("reason", sorted(START_PROBLEMS))
@pytest.mark.parametrize(("admin", "asked", "limit"), [(90, None, 90), (300, 60, 60), (60, 600, 60)])
def test_a_start_problem_the_cluster_retries_says_why_and_fails_the_pass_at_the_start_timeout(
    reason: str, admin: int, asked: int | None, limit: int
) -> None:
    now = [NOW]
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    settings = OperatorSettings(start_timeout_seconds=admin)
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    doc = valid_manifest()
    if asked:
        doc["spec"]["kubernetes"]["startTimeoutSeconds"] = asked
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    job["metadata"]["creationTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    reconciler.view.put_job(job["metadata"]["ownerReferences"][0]["uid"], job)
    reconciler.view.put_pod(START_PROBLEMS[reason](job))
    for seconds in (5, limit // 2, limit - 5):
        now[0] = NOW + dt.timedelta(seconds=seconds)
        assert reconciler.reconcile("ml", "tone") is not None, seconds  # still looked at again
        status = workflows.items[("ml", "tone")]["status"]
        assert status["phase"] == "Running", seconds
        assert status["passes"]["lora"]["message"].startswith(f"waiting to start: {reason}: "), status
    now[0] = NOW + dt.timedelta(seconds=limit + 5)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "PodsNotStarting" and f"{reason}: " in failed["message"]
    assert f"after the start timeout, {limit}s" in failed["message"]
    assert (core.pod_lists, core.event_lists) == (0, 0), "pods come from the watch, and this Job has one"


def test_an_invalid_image_name_fails_the_pass_at_once(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, _ = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    reconciler.view.put_pod(waiting_pod(job, "InvalidImageName", 'couldn\'t parse image name "a b"'))
    reconciler.reconcile("ml", "tone")
    assert workflows.items[("ml", "tone")]["status"]["phase"] == "Failed"


def test_a_deleted_workflows_lock_is_dropped(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, _, _ = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    assert ("ml", "tone") in reconciler.locks
    reconciler.forget("ml", "tone")
    assert reconciler.locks == {}


def test_the_first_job_comes_with_an_identity_that_reaches_only_its_workflow(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, workflows, batch, core = parts
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "olivekube-runner-tone-uid-tone"
    assert [a["metadata"]["name"] for a in core.accounts] == ["olivekube-runner-tone-uid-tone"]
    role = reconciler.rbac.objects["Role/olivekube-runner-tone-uid-tone"]
    assert {tuple(r["resourceNames"]) for r in role["rules"]} == {("tone",)}
    binding = reconciler.rbac.objects["RoleBinding/olivekube-runner-tone-uid-tone"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "olivekube-runner-tone-uid-tone", "namespace": "ml"}
    ]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-tone" for o in [role, binding, *core.accounts])


def test_an_entry_is_not_taken_once_the_data_it_was_trained_on_changed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "mine"))
    (tmp_path / "data" / "tone.json").write_text('[{"phrase": "hi", "tone": "Sad"}]')  # same URI, new bytes
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1  # the pass trains again


def test_an_entry_is_not_taken_when_its_data_lies_where_the_operator_may_not_read(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    _index(cache, "ml", key, *_cached_output(cache, "ml", "mine"), data={"s3://elsewhere/d.json": "etag:1"})
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 1


def test_a_later_pass_is_not_taken_when_the_pass_before_it_produced_something_else(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reconciler, workflows, batch, _ = _shared_cache_parts(tmp_path)
    doc = _workflow_over(cache)
    doc["spec"]["passes"]["merge"] = {"type": "MergeAdapterWeights"}
    keys = parse_workflow(doc).spec.chain_keys()
    lora_uri, lora_digest = _cached_output(cache, "ml", "lora-retrained")
    _index(cache, "ml", keys["lora"], lora_uri, lora_digest)
    merged_uri, merged_digest = _cached_output(cache, "ml", "merged-from-the-old-adapter")
    _index(cache, "ml", keys["merge"], merged_uri, merged_digest, input="digest-of-the-old-adapter", data={})
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["passes"]["lora"]["cached"] is True
    assert [job["metadata"]["labels"]["olivekube.io/pass"] for job in batch.jobs.values()] == ["merge"]


def _with_writable_prefixes(*prefixes: str) -> tuple[Reconciler, FakeWorkflows, FakeBatch]:
    workflows, batch = FakeWorkflows(), FakeBatch()
    settings = OperatorSettings(writable_prefixes=prefixes)
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=FakeCore(), rbac=FakeRbac(), clock=lambda: NOW
    )
    return reconciler, workflows, batch


@pytest.mark.parametrize(
    ("cache_dir", "output_dir", "refused"),
    [
        ("s3://models/teams/ml/cache", "s3://models/teams/ml/onnx", None),
        ("s3://models/teams/ml/cache", "s3://models/teams/ml-b/onnx", "spec.output_dir"),
        ("s3://models/teams/other/cache", "s3://models/teams/ml/onnx", "spec.cache_dir"),
        ("s3://models/teams/ml/cache", "s3://models/teams/ml/../other/onnx", "spec.output_dir"),
        ("s3://models/teams/ml", "s3://models/shared/onnx", "spec.output_dir"),
    ],
)
def test_cache_and_output_lie_under_the_prefixes_the_admin_gave_the_namespace(
    cache_dir: str, output_dir: str, refused: str | None
) -> None:
    reconciler, workflows, batch = _with_writable_prefixes("s3://models/teams/{namespace}")
    doc = valid_manifest()
    doc["spec"].update(cache_dir=cache_dir, output_dir=output_dir)
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")].get("status") or {}
    if refused is None:
        assert len(batch.jobs) == 1, status
        return
    assert batch.jobs == {} and status["phase"] == "Failed"
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "NotAllowed" and f"{refused}: " in failed["message"], failed["message"]
    assert "allowed: s3://models/teams/ml/" in failed["message"]


def test_a_workflow_outside_the_namespaces_the_admin_opened_fails_before_any_job() -> None:
    workflows, batch = FakeWorkflows(), FakeBatch()
    settings = OperatorSettings(runner_namespaces=("team-a",))
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=FakeCore(), rbac=FakeRbac(), clock=lambda: NOW
    )
    workflows.add(valid_manifest())  # in namespace ml
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert batch.jobs == {} and failed["reason"] == "NotAllowed"
    assert (
        "metadata.namespace: ml is not a namespace the cluster admin opened to workflows (team-a)"
        in (failed["message"])
    )


class FakeNetworking:
    def __init__(self) -> None:
        self.policies: list[dict[str, Any]] = []

    def create_namespaced_network_policy(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self.policies.append(body)
        return Response()


@pytest.mark.parametrize("policies", [True, False])
def test_a_job_on_several_pods_gets_its_rendezvous_and_network_policy_before_it(policies: bool) -> None:
    """With policies on (the chart's default), the Job's pods are opened to each other by a policy of
    their own; it exists before the Job, as the Service does, so no pod starts unreachable."""
    workflows, batch, core, networking = FakeWorkflows(), FakeBatch(), FakeCore(), FakeNetworking()
    seen_when_made: list[int] = []
    create = batch.create_namespaced_job

    def create_job(namespace: str, job: dict[str, Any], **kwargs: Any) -> Any:
        seen_when_made.append(len(core.services) + len(networking.policies))
        return create(namespace, job, **kwargs)

    batch.create_namespaced_job = create_job  # type: ignore[method-assign]
    settings = OperatorSettings(rendezvous_network_policies=policies)
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), networking=networking
    )
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["training"] = {"passes": {"lora": {"numNodes": 2}}}
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    (service,) = core.services
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert [p["metadata"]["name"] for p in networking.policies] == (
        [service["metadata"]["name"]] if policies else []
    )
    assert seen_when_made == [1 + policies]


def test_each_job_that_ends_is_timed_once_by_pass_type_and_result(parts) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    reconciler, workflows, batch, _ = parts
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["backoffLimit"] = 3
    workflows.add(doc)
    labels = {"pass_type": "LoRA", "result": "Failed"}

    def observed() -> tuple[float, float]:
        count = REGISTRY.get_sample_value("olivekube_pass_duration_seconds_count", labels) or 0.0
        return count, REGISTRY.get_sample_value("olivekube_pass_duration_seconds_sum", labels) or 0.0

    before = observed()
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    ended = {"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-02T03:05:05Z"}  # NOW + 60 s
    job["status"] = {"startTime": "2026-01-02T03:04:05Z", "conditions": [ended]}
    reconciler.view.put_job("uid-tone", job)
    for _ in range(3):  # looked at again and again: observed once
        reconciler.reconcile("ml", "tone")
    after = observed()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 60.0)


def test_the_next_attempt_waits_for_the_failed_attempts_pods_to_stop() -> None:
    """A failed attempt's pod still in its grace period (uploading a checkpoint after SIGTERM) holds
    the retry; once it is gone, or past its grace period by the margin (a dead node), the retry starts."""
    now = [NOW]
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    reconciler = Reconciler(
        OperatorSettings(), 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    workflows.add(valid_manifest())
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    failed = {"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-02T03:00:00Z"}
    job["status"] = {"conditions": [failed]}
    reconciler.view.put_job("uid-tone", job)
    terminating = waiting_pod(job, "", "")
    terminating["status"] = {"phase": "Running"}
    terminating["metadata"]["deletionTimestamp"] = "2026-01-02T03:06:05Z"  # NOW + its 120 s grace
    reconciler.view.put_pod(terminating)
    assert reconciler.reconcile("ml", "tone") == 5.0
    assert len(batch.jobs) == 1
    assert "waiting for 1 pod(s)" in workflows.items[("ml", "tone")]["status"]["passes"]["lora"]["message"]
    now[0] = NOW + dt.timedelta(seconds=120 + 31)  # past its grace period and the margin: a dead node
    reconciler.reconcile("ml", "tone")
    assert len(batch.jobs) == 2
    assert "message" not in workflows.items[("ml", "tone")]["status"]["passes"]["lora"]  # no longer waiting
    ended = waiting_pod(job, "", "") | {"status": {"phase": "Failed"}}
    reconciler.view.put_pod(ended)
    assert reconciler._live_pods("ml", job["metadata"]["name"]) == 0


def test_a_training_pass_on_two_pods_with_one_unschedulable_is_released_at_the_start_timeout() -> None:
    """Pod 0 runs (and holds its GPUs), pod 1 fits no node: not a start. The pass says why, and at the
    start timeout the attempt fails and its Job goes, releasing pod 0's GPUs."""
    now = [NOW]
    workflows, batch, core = FakeWorkflows(), FakeBatch(), FakeCore()
    settings = OperatorSettings(start_timeout_seconds=60)
    reconciler = Reconciler(
        settings, 0, workflows=workflows, batch=batch, core=core, rbac=FakeRbac(), clock=lambda: now[0]
    )
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["training"] = {"passes": {"lora": {"numNodes": 2}}}
    workflows.add(doc)
    reconciler.reconcile("ml", "tone")
    (job,) = batch.jobs.values()
    job["metadata"]["creationTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    job["status"] = {"active": 2, "ready": 1}
    reconciler.view.put_job("uid-tone", job)
    running = waiting_pod(job, "", "") | {"status": {"phase": "Running"}}
    pending = unschedulable_pod(job, "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    pending["metadata"]["name"] += "-1"
    for pod in (running, pending):
        reconciler.view.put_pod(pod)
    now[0] = NOW + dt.timedelta(seconds=30)
    assert reconciler.reconcile("ml", "tone") is not None
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Running" and "Unschedulable" in status["passes"]["lora"]["message"]
    now[0] = NOW + dt.timedelta(seconds=65)
    reconciler.reconcile("ml", "tone")
    status = workflows.items[("ml", "tone")]["status"]
    assert status["phase"] == "Failed" and "Insufficient nvidia.com/gpu" in status["message"]
    assert batch.jobs == {}
