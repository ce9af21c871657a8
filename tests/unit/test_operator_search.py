"""A search in the cluster, decided by the reconciler against fakes of the API: trials as workflows of
their own, at most parallelTrials at once, a trial that shares a running trial's unfinished pass
waits for it, status.search, and a restart that repeats no trial."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from kubernetes.client.rest import ApiException

from olivekube.operator.jobs import OperatorSettings
from olivekube.operator.reconcile import Reconciler
from olivekube.operator.search import SEARCH_LABEL
from tests.helpers.manifests import valid_manifest
from tests.unit.test_operator_reconcile import NOW, FakeBatch, FakeCore, FakeRbac, FakeWorkflows


class SearchWorkflows(FakeWorkflows):
    """FakeWorkflows that also create (a search's trials); `lost_patches` drops that many status writes."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.lost_patches = 0

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (namespace, name) in self.items:
            raise ApiException(status=409)
        self.created.append(name)
        return copy.deepcopy(self.add(body))

    def delete(self, namespace: str, name: str) -> None:
        if self.items.pop((namespace, name), None) is None:
            raise ApiException(status=404)
        self.deleted.append(name)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if self.lost_patches:
            self.lost_patches -= 1
            raise ApiException(status=500)
        return super().patch_status(namespace, name, status)


def search_manifest(parallel: int = 2, **strategy: Any) -> dict[str, Any]:
    doc = valid_manifest()
    doc["metadata"]["name"] = "search"
    spec = doc["spec"]
    spec["search_space"] = {
        "lora": {"r": {"type": "Categorical", "support": [4, 8]}},
        "builder": {"int4_block_size": {"type": "Categorical", "support": [32, 128]}},
    }
    spec["search_strategy"] = {
        "execution_order": "joint",
        "sampler": "sequential",
        "include_pass_params": False,
        **strategy,
    }
    spec["kubernetes"]["search"] = {"parallelTrials": parallel}
    spec["evaluators"] = {
        "e": {
            "metrics": [
                {
                    "name": "accuracy",
                    "type": "accuracy",
                    "data_config": "train",
                    "sub_types": [{"name": "accuracy_score", "priority": 1}],
                },
                {"name": "latency", "type": "latency", "sub_types": [{"name": "avg", "priority": 2}]},
            ]
        }
    }
    spec["evaluator"] = "e"
    return doc


class Cluster:
    """The reconciler, its fakes, and what a trial's own reconciles and Jobs would write to its status."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.workflows, self.batch, self.core = SearchWorkflows(), FakeBatch(), FakeCore()
        self.reconciler = self.restart()
        self.workflows.add(doc)
        self.reconciler.view.put_workflow(self.workflows.get("ml", "search"))

    def restart(self) -> Reconciler:
        self.reconciler = Reconciler(
            OperatorSettings(),
            0,
            workflows=self.workflows,
            batch=self.batch,
            core=self.core,
            rbac=FakeRbac(),
            clock=lambda: NOW,
        )
        for body in self.workflows.items.values():
            self.reconciler.view.put_workflow(copy.deepcopy(body))
        return self.reconciler

    def look(self) -> dict[str, Any]:
        self.reconciler.reconcile("ml", "search")
        return self.workflows.items[("ml", "search")]["status"]

    def trial(self, number: int) -> dict[str, Any]:
        return self.workflows.items[("ml", f"search-trial-{number}")]

    def set_trial(self, number: int, **status: Any) -> None:
        body = self.trial(number)
        body["status"] = {**(body.get("status") or {}), **status}
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        self.reconciler.view.put_workflow(copy.deepcopy(body))

    def finish(self, number: int, accuracy: float, latency: float) -> None:
        final = {"accuracy-accuracy_score": {"value": accuracy}, "latency-avg": {"value": latency}}
        passes = {p: {"phase": "Succeeded"} for p in ("lora", "merge", "builder")}
        out = f"s3://models/out/trials/trial-{number}/versions/v1"
        self.set_trial(
            number,
            phase="Succeeded",
            passes=passes,
            outputs={"uri": out},
            evaluation={"goalsMet": True, "models": {"final": final}},
        )


def test_trials_run_as_workflows_two_at_a_time_and_one_waits_for_a_shared_pass() -> None:
    cluster = Cluster(search_manifest(parallel=2))
    cluster.look()
    assert cluster.workflows.created == ["search-trial-1"]  # no second until the first is seen
    status = cluster.look()
    # Olive's order: trials 1 and 2 (r 4 and r 8, block 32) train LoRAs of their own: both run at once
    assert cluster.workflows.created == ["search-trial-1", "search-trial-2"]
    assert status["phase"] == "Running" and status["search"]["progress"] == "0/4"
    trial = cluster.trial(1)
    assert trial["metadata"]["labels"][SEARCH_LABEL] == "search"
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "uid-search"
    assert (
        trial["spec"]["passes"]["lora"]["r"] == 4 and trial["spec"]["passes"]["builder"]["int4_block_size"] == 32
    )
    assert "search_space" not in trial["spec"] and trial["spec"]["output_dir"] == "s3://models/out/trials/trial-1"
    assert cluster.trial(2)["spec"]["passes"]["lora"]["r"] == 8

    cluster.finish(1, accuracy=0.5, latency=3.0)
    cluster.look()
    assert cluster.workflows.created[-1] == "search-trial-3"  # r 4, block 128: trial 1's LoRA is done
    cluster.set_trial(2, phase="Running", passes={"lora": {"phase": "Succeeded"}, "merge": {"phase": "Running"}})
    cluster.finish(3, accuracy=0.9, latency=5.0)
    cluster.look()
    assert cluster.workflows.created[-1] == "search-trial-3"  # trial 4 shares trial 2's merge, still running
    passes = {"lora": {"phase": "Succeeded"}, "merge": {"phase": "Succeeded"}, "builder": {"phase": "Running"}}
    cluster.set_trial(2, passes=passes)
    cluster.look()
    assert cluster.workflows.created[-1] == "search-trial-4"  # trial 2's merge is done: it starts
    cluster.finish(2, accuracy=0.5, latency=2.0)
    cluster.look()
    cluster.finish(4, accuracy=0.9, latency=6.0)
    status = cluster.look()

    search = status["search"]
    assert cluster.workflows.created == [f"search-trial-{n}" for n in (1, 2, 3, 4)]
    assert status["phase"] == "Succeeded" and search["progress"] == "4/4"
    assert search["reason"].startswith("SpaceExhausted")
    assert search["best"]["number"] == 3 and search["best"]["output"].endswith("trial-3/versions/v1")
    assert search["frontier"] == [3, 2]  # trial 3: most accurate; trial 2: fastest; 1 and 4 dominated
    assert [t["parameters"] for t in search["trials"]][:2] == [
        {"lora": {"r": 4}, "builder": {"int4_block_size": 32}},
        {"lora": {"r": 8}, "builder": {"int4_block_size": 32}},
    ]


def test_a_restart_between_creating_a_trial_and_writing_status_makes_no_second_trial() -> None:
    cluster = Cluster(search_manifest(parallel=1))
    cluster.workflows.lost_patches = 1  # the trial is created, then the status write fails
    with contextlib.suppress(ApiException):
        cluster.look()
    assert cluster.workflows.created == ["search-trial-1"]
    cluster.restart()
    status = cluster.look()
    assert cluster.workflows.created == ["search-trial-1"]
    assert [t["workflow"] for t in status["search"]["trials"]] == ["search-trial-1"]
    cluster.finish(1, accuracy=0.5, latency=3.0)
    cluster.restart()
    status = cluster.look()
    assert cluster.workflows.created == ["search-trial-1", "search-trial-2"]  # the same next suggestion
    assert status["search"]["trials"][1]["parameters"] == {"lora": {"r": 8}, "builder": {"int4_block_size": 32}}


def test_budgets_failures_and_goals_end_a_search_with_the_reason() -> None:
    cluster = Cluster(search_manifest(parallel=1, max_failed_trials=0))
    cluster.look()
    cluster.set_trial(1, phase="Failed", message="spec.passes.builder: out of memory")
    status = cluster.look()
    assert status["phase"] == "Failed" and status["search"]["reason"].startswith("TooManyFailedTrials")
    assert status["search"]["trials"][0]["message"] == "spec.passes.builder: out of memory"
    assert cluster.workflows.created == ["search-trial-1"]

    cluster = Cluster(search_manifest(parallel=1, stop_when_goals_met=True))
    cluster.look()
    cluster.set_trial(1, phase="Failed", evaluation={"goalsMet": False, "models": {"final": {}}})
    cluster.look()
    cluster.finish(2, accuracy=0.7, latency=1.0)
    status = cluster.look()
    assert status["phase"] == "Succeeded" and status["search"]["reason"].startswith("GoalsMet")
    assert [t["phase"] for t in status["search"]["trials"]] == ["GoalsMissed", "Succeeded"]

    cluster = Cluster(search_manifest(parallel=4, max_samples=2))
    status = cluster.look()
    assert len(cluster.workflows.created) == 1  # the second shares the first's LoRA: it waits
    cluster.finish(1, accuracy=0.7, latency=1.0)
    cluster.look()
    cluster.finish(2, accuracy=0.7, latency=1.0)
    status = cluster.look()
    assert status["search"]["reason"].startswith("MaxTrialsReached") and status["search"]["progress"] == "2/2"


def test_a_search_that_meets_its_goals_stops_its_running_trials_and_only_its_own() -> None:
    """With goals met, a running trial cannot change the outcome: its workflow (and so its Jobs) is
    deleted and the trial recorded Stopped. A workflow of the same name the search does not own
    (made by someone else before the search) is never deleted."""
    doc = search_manifest(parallel=2, stop_when_goals_met=True)
    doc["spec"]["search_space"]["lora"]["r"]["support"] = [4]  # trials 1 and 2 share only the LoRA
    cluster = Cluster(doc)
    cluster.look()
    cluster.set_trial(1, phase="Running", passes={"lora": {"phase": "Succeeded"}, "merge": {"phase": "Succeeded"}})
    cluster.look()
    assert cluster.workflows.created == ["search-trial-1", "search-trial-2"]
    cluster.set_trial(2, phase="Running", passes={"lora": {"phase": "Succeeded"}})
    cluster.finish(1, accuracy=0.7, latency=1.0)
    status = cluster.look()
    assert status["search"]["reason"].startswith("GoalsMet") and status["phase"] == "Succeeded"
    assert [t["phase"] for t in status["search"]["trials"]] == ["Succeeded", "Stopped"]
    assert "the search ended (GoalsMet" in status["search"]["trials"][1]["message"]
    assert cluster.workflows.deleted == ["search-trial-2"]
    assert "TrialStopped" in [e.reason for e in cluster.core.events]

    late = Cluster(doc)  # trial 2 created, but the watch has not shown it when the goals are met
    late.look()
    late.set_trial(1, phase="Running", passes={"lora": {"phase": "Succeeded"}, "merge": {"phase": "Succeeded"}})
    late.look()
    unseen = late.reconciler.view.owned_workflows("ml", "uid-search").pop("search-trial-2")
    late.reconciler.view.forget_workflow(("ml", "search-trial-2"))
    late.finish(1, accuracy=0.7, latency=1.0)
    status = late.look()
    assert status["search"]["trials"][1]["phase"] == "Stopped" and late.workflows.deleted == []
    late.reconciler.view.put_workflow(unseen)  # now it is seen: deleted
    late.look()
    assert late.workflows.deleted == ["search-trial-2"]

    foreign = Cluster(search_manifest(parallel=1, max_failed_trials=0))
    foreign.workflows.add({**valid_manifest(), "metadata": {"name": "search-trial-1", "namespace": "ml"}})
    foreign.reconciler.view.put_workflow(foreign.workflows.get("ml", "search-trial-1"))
    foreign.look()  # its create answers 409: the operator takes the name as its own trial's
    foreign.set_trial(1, phase="Running")
    foreign.workflows.items[("ml", "search")]["status"]["search"]["trials"].append(
        {"number": 2, "point": 1, "parameters": {}, "workflow": "search-trial-2", "phase": "Failed"}
    )
    foreign.reconciler.view.put_workflow(foreign.workflows.get("ml", "search"))
    status = foreign.look()
    assert status["search"]["reason"].startswith("TooManyFailedTrials")
    assert foreign.workflows.deleted == [] and ("ml", "search-trial-1") in foreign.workflows.items


def test_a_tpe_search_is_refused_in_the_cluster_with_the_field_named() -> None:
    cluster = Cluster(search_manifest(sampler="tpe"))
    status = cluster.look()
    assert status["phase"] == "Failed" and status["message"].startswith("spec.search_strategy.sampler: tpe runs")
    assert cluster.workflows.created == []


def test_a_pass_by_pass_search_is_refused_in_the_cluster_with_the_field_named() -> None:
    cluster = Cluster(search_manifest(execution_order="pass-by-pass"))
    status = cluster.look()
    assert status["phase"] == "Failed"
    refused = "spec.search_strategy.execution_order: pass-by-pass runs with `olivekube run`"
    assert status["message"].startswith(refused)
    assert cluster.workflows.created == []
