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
