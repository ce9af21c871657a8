"""The operator's decisions, from spec, status and Jobs alone."""

from __future__ import annotations

from typing import Any

from olivekube.api.workflow import parse_workflow
from olivekube.operator.jobs import job_name
from olivekube.operator.plan import decide
from olivekube.operator.reconcile import _changes
from tests.helpers.manifests import merge_patch, valid_manifest


def workflow(**spec: Any):  # type: ignore[no-untyped-def]
    doc = valid_manifest()
    doc["spec"].update(spec)
    return parse_workflow(doc)


def job(wf, pass_name: str, attempt: int, state: str | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    key = wf.spec.chain_keys()[pass_name]
    conditions = [{"type": state, "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}] if state else []
    return {
        "metadata": {
            "name": job_name("tone", pass_name, key, attempt),
            "labels": {
                "olivekube.io/pass": pass_name,
                "olivekube.io/key": key[:16],
                "olivekube.io/attempt": str(attempt),
            },
        },
        "status": {"conditions": conditions},
    }


def no_cache(pass_name: str, key: str) -> None:
    return None


def plan(wf, status: dict[str, Any], jobs: list[dict[str, Any]], cached=no_cache):  # type: ignore[no-untyped-def]
    return decide(wf, 1, status, jobs, cached, lambda j: "data file missing", retry_backoff=0)


def done(wf, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"phase": "Succeeded", "chainKey": wf.spec.chain_keys()[name], "artifact": {"uri": f"s3://b/{name}"}}


def test_a_new_workflow_starts_its_first_pass() -> None:
    wf = workflow()
    d = plan(wf, {}, [])
    assert d.create == ("lora", wf.spec.chain_keys()["lora"], 0)
    assert d.status["phase"] == "Running" and d.status["progress"] == "0/3"


def test_a_running_job_creates_nothing() -> None:
    wf = workflow()
    d = plan(wf, {}, [job(wf, "lora", 0, None)])
    assert d.create is None and d.status["passes"]["lora"]["phase"] == "Running"


def test_the_job_of_a_pass_just_started_costs_no_second_status_write() -> None:
    """The start's status, applied, then the watch bringing its Job: nothing left to write (at 2,000
    workflows a renamed condition reason alone was 0.58 extra PATCHes per workflow)."""
    wf = workflow()
    started = merge_patch({}, plan(wf, {}, []).status)
    again = plan(wf, started, [job(wf, "lora", 0, None)])
    assert again.create is None and not _changes(started, again.status)


def test_finished_passes_lead_to_the_next_and_then_success() -> None:
    wf = workflow()
    status = {"passes": {"lora": done(wf, "lora")}}
    assert plan(wf, status, [job(wf, "lora", 0, "Complete")]).create[0] == "merge"  # type: ignore[index]
    status["passes"].update(merge=done(wf, "merge"), builder=done(wf, "builder"))
    d = plan(wf, status, [])
    assert d.create is None and d.status["phase"] == "Succeeded" and d.status["progress"] == "3/3"


def test_failures_retry_up_to_the_backoff_limit_then_fail_with_the_message() -> None:
    wf = workflow(kubernetes={"backoffLimit": 1})
    d = plan(wf, {}, [job(wf, "lora", 0, "Failed")])
    assert d.create is not None and d.create[2] == 1
    d = plan(wf, {}, [job(wf, "lora", 0, "Failed"), job(wf, "lora", 1, "Failed")])
    assert d.create is None and d.status["phase"] == "Failed"
    assert "data file missing" in d.status["message"]
    assert plan(wf, {"phase": "Failed", "observedGeneration": 1}, []).create is None


def test_suspend_waits_for_the_running_pass_then_pauses() -> None:
    wf = workflow(suspend=True)
    assert plan(wf, {}, [job(wf, "lora", 0, None)]).status["phase"] == "Running"
    d = plan(wf, {"passes": {"lora": done(wf, "lora")}}, [job(wf, "lora", 0, "Complete")])
    assert d.create is None and d.status["phase"] == "Suspended"


def test_suspend_stops_a_pass_running_on_azure_ml_at_once() -> None:
    aml = {
        "type": "AzureML",
        "aml_compute": "gpu",
        "aml_docker_config": {"base_image": "img"},
        "azureml_client": {"subscription_id": "s", "resource_group": "r", "workspace_name": "w"},
    }
    wf = workflow(suspend=True, systems={"aml": aml}, host="aml", target="aml")
    running = job(wf, "lora", 0, None)
    d = plan(wf, {}, [running])
    assert d.delete == [running["metadata"]["name"]] and d.create is None
    assert d.status["phase"] == "Suspended"
    assert d.status["passes"]["lora"]["phase"] == "Pending"
    resumed = workflow(systems={"aml": aml}, host="aml", target="aml")
    started = plan(resumed, {}, []).status  # what status held while attempt 0 ran
    after_cancel = merge_patch(started, d.status)
    again = plan(resumed, after_cancel, [])
    assert again.create == ("lora", resumed.spec.chain_keys()["lora"], 1)  # not the cancelled Job's name
    assert not [e for e in again.events if e[1] == "PassRetry"]  # a cancel is not a failure


def test_a_cache_hit_skips_the_job() -> None:
    wf = workflow()
    hit = {"uri": "s3://b/cache/x", "digest": "d", "sizeBytes": 3, "metrics": {"train_loss": 1.0}}
    d = plan(wf, {}, [], cached=lambda name, key: hit if name == "lora" else None)
    assert d.status["passes"]["lora"]["cached"] is True
    assert d.create is not None and d.create[0] == "merge"


def test_the_last_pass_runs_its_job_on_a_cache_hit_to_publish_the_output() -> None:
    """Every pass in the cache: the earlier ones are taken without Jobs, the last one's Job publishes
    output_dir (the runner takes the pass from the cache); without it output_dir stayed empty."""
    wf = workflow()
    names = wf.spec.ordered_pass_names()
    hit = {"uri": "s3://b/cache/x", "digest": "d", "sizeBytes": 3}
    d = plan(wf, {}, [], cached=lambda name, key: hit)
    assert all(d.status["passes"][n]["cached"] for n in names[:-1])
    assert d.create is not None and d.create[0] == names[-1]


def test_an_evaluated_pass_is_never_taken_from_the_cache_and_a_missed_goal_is_not_retried() -> None:
    """Its Job measures the model (the runner takes the pass itself from the cache); a Job that ended
    GoalNotMet fails the workflow at once, with that reason."""
    from olivekube.runner.evaluation import GoalNotMet

    metric = {"name": "size", "type": "size_on_disk", "sub_types": [{"name": "bytes"}]}
    wf = workflow(evaluators={"gate": {"metrics": [metric]}}, evaluator="gate", kubernetes={"backoffLimit": 3})
    names = wf.spec.ordered_pass_names()
    hit = {"uri": "s3://b/cache/x", "digest": "d", "sizeBytes": 3}
    status = {"passes": {n: done(wf, n) for n in names[:-1]}}
    d = plan(wf, status, [], cached=lambda name, key: hit)
    assert d.create is not None and d.create[0] == names[-1]
    why = str(GoalNotMet("spec.evaluator", "GoalNotMet: size-bytes = 3, goal threshold 1"))
    d = decide(wf, 1, status, [job(wf, names[-1], 0, "Failed")], no_cache, lambda j: why, retry_backoff=0)
    assert d.create is None and d.status["phase"] == "Failed"
    assert {c["type"]: c for c in d.status["conditions"]}["Failed"]["reason"] == "GoalNotMet"


def test_a_spec_change_reruns_from_the_first_changed_pass() -> None:
    old = workflow()
    status = {"passes": {n: done(old, n) for n in ("lora", "merge", "builder")}}
    changed = valid_manifest()
    changed["spec"]["passes"]["builder"]["int4_block_size"] = 64
    new = parse_workflow(changed)
    d = plan(new, status, [])
    assert d.create is not None and d.create[0] == "builder"
    assert d.status["passes"]["builder"]["artifact"] is None  # the old output no longer applies


def test_a_spec_edit_deletes_the_jobs_it_superseded() -> None:
    before = workflow()
    old = job(before, "lora", 0, None)  # running for the old spec
    after = workflow(
        passes={
            **valid_manifest()["spec"]["passes"],
            "lora": {**valid_manifest()["spec"]["passes"]["lora"], "r": 16},
        }
    )
    d = plan(after, {}, [old])
    assert d.delete == [old["metadata"]["name"]]
    assert d.create == ("lora", after.spec.chain_keys()["lora"], 0)
    assert ("Normal", "JobSuperseded", f"deleting Job {old['metadata']['name']}: the spec changed") in d.events
    finished = job(before, "lora", 0, "Complete")  # a finished Job is history, not deleted
    assert plan(after, {}, [finished]).delete == []


def test_a_job_whose_pods_have_not_started_is_looked_at_again_for_a_while_only() -> None:
    import datetime as dt

    wf = workflow()
    young = job(wf, "lora", 0, None)
    now = dt.datetime(2026, 1, 1, 0, 2, tzinfo=dt.UTC)
    young["metadata"]["creationTimestamp"] = "2026-01-01T00:01:30Z"
    d = decide(wf, 1, {}, [young], no_cache, lambda j: "", retry_backoff=0, clock=lambda: now)
    assert d.requeue_after == 10.0 and d.status["phase"] == "Running"
    young["metadata"]["creationTimestamp"] = "2025-12-31T23:56:00Z"  # past the start timeout (300 s)
    assert decide(wf, 1, {}, [young], no_cache, lambda j: "", clock=lambda: now).requeue_after is None
    young["status"]["ready"] = 1
    young["metadata"]["creationTimestamp"] = "2026-01-01T00:01:30Z"
    assert decide(wf, 1, {}, [young], no_cache, lambda j: "", clock=lambda: now).requeue_after is None
    queued = job(wf, "lora", 0, None) | {"spec": {"suspend": True}}  # Kueue holds it: no polling
    assert decide(wf, 1, {}, [queued], no_cache, lambda j: "", clock=lambda: now).requeue_after is None


def test_a_running_attempt_whose_job_vanished_counts_as_failed_and_the_limit_holds() -> None:
    """A Job removed before the operator saw it end (TTL 0, deleted by hand): without counting it,
    every attempt would start the next one, for ever."""
    wf = workflow(kubernetes={"backoffLimit": 1})
    status = merge_patch({}, plan(wf, {}, []).status)  # attempt 0 started: Running, its jobName recorded
    first = plan(wf, status, [])  # and its Job is gone
    assert first.create is not None and first.create[2] == 1
    assert first.status["passes"]["lora"]["failedJobs"] == [job(wf, "lora", 0, None)["metadata"]["name"]]
    status = merge_patch(status, first.status)
    assert plan(wf, status, [job(wf, "lora", 1, None)]).create is None  # attempt 1 runs: nothing to do
    last = plan(wf, status, [])  # attempt 1's Job vanished too: two failures, the limit is reached
    assert last.create is None and last.status["phase"] == "Failed"
    assert (
        "failed after 2 attempts" in last.status["message"]
        and "was removed before it finished" in last.status["message"]
    )
    resumed = merge_patch(status, {"passes": {"lora": {"phase": "Pending", "jobName": None}}})
    again = plan(wf, resumed, [])  # a Job the operator stopped itself (suspend on Azure ML) is no failure
    assert again.create is not None and again.create[2] == 2
    assert len(again.status["passes"]["lora"]["failedJobs"]) == 1


def test_a_failed_job_deleted_by_hand_still_counts_and_its_name_is_not_reused() -> None:
    wf = workflow(kubernetes={"backoffLimit": 1})
    status = merge_patch({}, plan(wf, {}, []).status)  # attempt 0 started
    first = plan(wf, status, [job(wf, "lora", 0, "Failed")])
    assert first.create is not None and first.create[2] == 1
    status = merge_patch(status, first.status)
    assert status["passes"]["lora"]["failedJobs"] == [job(wf, "lora", 0, None)["metadata"]["name"]]
    # Job 0 is deleted (by hand, or its TTL); attempt 1 fails: two failures, the limit is reached.
    last = plan(wf, status, [job(wf, "lora", 1, "Failed")])
    assert last.create is None and last.status["phase"] == "Failed"
    assert "failed after 2 attempts" in last.status["message"]
    # Both Jobs gone, and no failure seen yet: the next attempt still gets a name never used.
    status = merge_patch({}, plan(wf, {}, []).status)
    status = merge_patch(status, plan(wf, status, [job(wf, "lora", 0, None)]).status)
    assert plan(wf, status, []).create == ("lora", wf.spec.chain_keys()["lora"], 1)


def test_a_succeeded_job_removed_before_the_operator_saw_it_is_a_finished_pass() -> None:
    wf = workflow()
    status = merge_patch({}, plan(wf, {}, []).status)
    key = wf.spec.chain_keys()["lora"]
    runner_wrote = {"passes": {"lora": {"chainKey": key, "artifact": {"uri": "s3://b/lora"}}}}
    d = plan(wf, merge_patch(status, runner_wrote), [])  # the Job's TTL removed it meanwhile
    assert d.create is not None and d.create[0] == "merge"
    assert d.status["passes"]["lora"]["phase"] == "Succeeded"
