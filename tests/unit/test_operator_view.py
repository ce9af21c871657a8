"""The operator's watch-fed view: newer copies win, a LIST keeps Jobs created after it, a new uid resets."""

from __future__ import annotations

from typing import Any

from olivekube.operator.view import ClusterView


def _obj(name: str, version: str, uid: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": version}, **extra}


def test_an_older_copy_of_a_workflow_never_replaces_a_newer_one() -> None:
    view = ClusterView()
    view.put_workflow(_obj("wf", "20", status={"phase": "Running"}))
    view.put_workflow(_obj("wf", "19", status={"phase": "Pending"}))
    assert view.workflow(("ns", "wf"))["status"]["phase"] == "Running"  # type: ignore[index]
    view.put_workflow(_obj("wf", "21", status={"phase": "Succeeded"}))
    assert view.workflow(("ns", "wf"))["status"]["phase"] == "Succeeded"  # type: ignore[index]


def test_a_workflow_created_again_under_its_name_replaces_the_old_one_whatever_its_version() -> None:
    view = ClusterView()
    view.put_workflow(_obj("wf", "50", uid="old"))
    view.put_workflow(_obj("wf", "7", uid="new"))
    assert view.workflow(("ns", "wf"))["metadata"]["uid"] == "new"  # type: ignore[index]


def test_copies_handed_out_are_the_callers_own() -> None:
    view = ClusterView()
    view.put_workflow(_obj("wf", "1", status={"phase": "Pending"}))
    copy = view.workflow(("ns", "wf"))
    assert copy is not None
    copy["status"]["phase"] = "Mangled"
    assert view.workflow(("ns", "wf"))["status"]["phase"] == "Pending"  # type: ignore[index]


def test_a_list_keeps_jobs_created_after_it_and_newer_watch_copies() -> None:
    view = ClusterView()
    view.put_job("u1", _obj("job-a", "30", status={"active": 1}))
    view.put_job("u1", _obj("job-c", "40"))  # created after the list below was taken
    view.put_job("u1", _obj("job-gone", "10"))  # deleted before the list
    assert not view.listed("u1")
    view.replace_jobs("u1", [_obj("job-a", "25"), _obj("job-b", "26")], list_version="35")
    names = {j["metadata"]["name"]: j for j in view.jobs("u1")}
    assert sorted(names) == ["job-a", "job-b", "job-c"]
    assert names["job-a"]["status"] == {"active": 1}  # the watch's newer copy
    assert view.listed("u1")


def test_forgetting_a_workflow_drops_its_jobs_and_listing() -> None:
    view = ClusterView()
    view.put_workflow(_obj("wf", "1"))
    view.replace_jobs("u1", [_obj("job-a", "1")], list_version="2")
    view.forget_workflow(("ns", "wf"))
    assert view.workflow(("ns", "wf")) is None
    assert view.jobs("u1") == []
    assert not view.listed("u1")
    view.put_job("u1", _obj("job-b", "3"))
    view.forget_job("u1", "job-b")
    assert view.jobs("u1") == []


def _pod(name: str, version: str, job: str, phase: str) -> dict[str, Any]:
    pod = _obj(name, version, status={"phase": phase})
    pod["metadata"]["labels"] = {"batch.kubernetes.io/job-name": job}
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    return pod


def test_pods_are_held_per_job_newest_copy_and_go_when_deleted() -> None:
    view = ClusterView()
    view.put_pod(_pod("j-a", "10", "j", "Running"))
    view.put_pod(_pod("j-a", "9", "j", "Pending"))  # a late, older copy
    view.put_pod(_pod("k-a", "11", "k", "Pending"))
    view.put_pod({"metadata": {"name": "stray", "namespace": "ns", "resourceVersion": "1"}})  # no Job
    (held,) = view.pods("ns", "j")
    assert held["status"]["phase"] == "Running" and "managedFields" not in held["metadata"]
    view.forget_pod(held)
    assert view.pods("ns", "j") == [] and len(view.pods("ns", "k")) == 1


def test_a_jobs_workflow_is_known_from_a_watch_or_a_list_until_it_goes() -> None:
    view = ClusterView()
    owner = [{"kind": "OptimizationWorkflow", "name": "wf", "uid": "u1"}]
    view.put_workflow(_obj("wf", "1"))
    view.replace_jobs("u1", [{"metadata": {**_obj("job-b", "3")["metadata"], "ownerReferences": owner}}], "3")
    assert view.owner_of_job("ns", "job-b") == "wf"
    view.forget_job("u1", "job-b")
    assert view.owner_of_job("ns", "job-b") is None
    view.put_job("u1", {"metadata": {**_obj("job-c", "4")["metadata"], "ownerReferences": owner}})
    view.forget_workflow(("ns", "wf"))
    assert view.owner_of_job("ns", "job-c") is None


def test_a_job_is_kept_without_its_pod_template_or_managed_fields() -> None:
    """What a decision reads of a Job stays (metadata, status, suspend and parallelism); the pod
    template, which at 2,000 workflows was most of the view, and server-side apply's fields go."""
    view = ClusterView()
    template = {"spec": {"containers": [{"name": "runner", "env": [{"name": "A", "value": "x" * 1000}]}]}}
    job = _obj("j", "3", status={"active": 1}, spec={"suspend": True, "parallelism": 2, "template": template})
    job["metadata"]["managedFields"] = [{"manager": "olivekube"}]
    view.put_job("owner", job)
    view.replace_jobs("other", [_obj("k", "4", spec={"template": template})], "4")
    (kept,) = view.jobs("owner")
    assert kept["spec"] == {"suspend": True, "parallelism": 2} and kept["status"] == {"active": 1}
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["name"] == "j"
    assert view.jobs("other")[0]["spec"] == {}
    assert job["spec"]["template"] == template  # the caller's copy is untouched


def test_a_pod_is_kept_with_what_decisions_read_only() -> None:
    """Status (phase, conditions, container states), metadata, node and each container's resources
    (the OOM message names the memory limit) stay; the runner's env, volumes and command go."""
    view = ClusterView()
    container = {
        "name": "runner",
        "image": "olivekube/runner",
        "env": [{"name": "A", "value": "x" * 1000}],
        "resources": {"limits": {"memory": "8Gi"}},
    }
    spec = {"nodeName": "n1", "containers": [container], "volumes": [{"name": "scratch", "emptyDir": {}}]}
    pod = _pod("j-a", "10", "j", "Running")
    pod["spec"] = spec
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    view.put_pod(pod)
    (kept,) = view.pods("ns", "j")
    assert kept["spec"] == {
        "nodeName": "n1",
        "containers": [{"name": "runner", "resources": {"limits": {"memory": "8Gi"}}}],
    }
    assert kept["status"] == pod["status"] and "managedFields" not in kept["metadata"]
    assert pod["spec"]["containers"][0]["env"]  # the caller's copy is untouched
