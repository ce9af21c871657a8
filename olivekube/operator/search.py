"""A workflow that searches, in a cluster: each trial is a workflow of its own (as Katib's Trials
are its Experiment's), owned by the search and run by the same operator, so every trial gets what a
workflow gets (its Jobs, retries, start timeout, the cache, the admin's policy).

`decide_search` is pure: from the search's spec, its status and its trials as the watch shows them,
it says which trials to create and what the search's status is now. Everything it needs to go on
after a restart is in `status.search`: the trials told so far (their points), so a sampler rebuilt
from them suggests the same next points, and a trial created but not yet written to status is
found again under the same name (its number), never made twice.

Trials share the cache: a pass with the same options on the same input runs once. A trial whose
chain shares a pass with a running trial that has not finished that pass waits for it (the
operator then takes the pass from the cache without a Job) rather than running it again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from olivekube.api.common import API_VERSION, KIND
from olivekube.api.workflow import OptimizationWorkflow, parse_workflow
from olivekube.core.clock import parse_timestamp, timestamp
from olivekube.search.config import concrete
from olivekube.search.results import Objective, frontier, rank
from olivekube.search.samplers import Sampler
from olivekube.search.space import Point

SEARCH_LABEL = "olivekube.io/search"
TRIAL_LABEL = "olivekube.io/trial"
DEFAULT_PARALLEL_TRIALS = 1
DONE = ("Succeeded", "GoalsMissed", "Failed", "Stopped")
SPACE_EXHAUSTED = "SpaceExhausted: every point was tried"
STOPS_RUNNING_TRIALS = ("GoalsMet", "MaxTimeReached", "TooManyFailedTrials")
"""Reasons that end a search before its running trials end: those trials are stopped (their workflows
deleted, and with them their Jobs and pods), as their results can no longer change the outcome or
the budget is spent. A search that ran out of points or of trials to start lets the running ones end."""


@dataclass
class SearchDecision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    """Trial workflows to stop: only ever the search's own (owned by it, as the watch shows them)."""
    events: list[tuple[str, str, str]] = field(default_factory=list)


def trial_name(search: str, number: int) -> str:
    return f"{search}-trial-{number}"


def objectives_of(workflow: OptimizationWorkflow) -> list[Objective]:
    """The evaluator's sub-metrics, named as status.evaluation names them (METRIC-SUBTYPE)."""
    spec = workflow.spec
    evaluator = (spec.evaluators or {}).get(spec.evaluator or "")
    if evaluator is None:
        return []
    return [
        Objective(
            f"{metric.name}-{sub.name}",
            sub.priority if sub.priority is not None else -1,
            metric.higher_is_better(sub),
        )
        for metric in evaluator.metrics
        for sub in metric.sub_types
    ]


def _trial_state(child: dict[str, Any]) -> dict[str, Any]:
    """A trial's phase, metrics, output and message, from its workflow's status."""
    status = child.get("status") or {}
    evaluation = status.get("evaluation") or {}
    final = (evaluation.get("models") or {}).get("final") or {}
    metrics = {k: float(v["value"]) for k, v in final.items() if isinstance(v, dict) and "value" in v}
    phase = status.get("phase") or "Pending"
    if phase == "Failed" and evaluation.get("goalsMet") is False:
        phase = "GoalsMissed"
    elif phase not in DONE:
        phase = "Running" if status else "Pending"
    state: dict[str, Any] = {"phase": phase, "metrics": metrics}
    if (status.get("outputs") or {}).get("uri"):
        state["output"] = status["outputs"]["uri"]
    if phase in ("Failed", "GoalsMissed") and status.get("message"):
        state["message"] = str(status["message"])[:1024]
    return state


def _trial_body(search: dict[str, Any], point: Point, number: int) -> dict[str, Any]:
    """The trial's workflow: the search's spec with the point filled in, its output in a folder of
    its own under the search's output_dir, owned by the search (deleted with it)."""
    meta = search["metadata"]
    doc = concrete({"spec": copy.deepcopy(search["spec"])}, point)
    spec = doc["spec"]
    spec.pop("search_strategy", None)
    if spec.get("output_dir"):
        spec["output_dir"] = f"{spec['output_dir'].rstrip('/')}/trials/trial-{number}"
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"], "controller": True}
    labels = {**(meta.get("labels") or {}), SEARCH_LABEL: meta["name"], TRIAL_LABEL: str(number)}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": trial_name(meta["name"], number),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


def _waits_for_a_running_prefix(
    body: dict[str, Any], trials: list[dict[str, Any]], children: dict[str, Any]
) -> bool:
    """Whether a pass of this trial is a pass (same chain key) that a running trial has not finished."""
    try:
        keys = set(parse_workflow(body).spec.chain_keys().values())
    except ValueError:
        return False  # an invalid point: its workflow fails on its own, at once
    for trial in trials:
        if trial.get("phase") in DONE:
            continue
        child = children.get(trial["workflow"])
        if child is None:
            return True  # just created, not seen yet: its passes are not known to be done
        try:
            theirs = parse_workflow(child).spec.chain_keys()
        except ValueError:
            continue
        passes = (child.get("status") or {}).get("passes") or {}
        for name, key in theirs.items():
            if key in keys and (passes.get(name) or {}).get("phase") != "Succeeded":
                return True
    return False


def _stop_reason(search: Any, trials: list[dict[str, Any]], started: str | None, now: Any) -> str | None:
    """Why no new trial starts (Katib-like reasons), or None."""
    failed = sum(t.get("phase") == "Failed" for t in trials)
    if search.max_failed_trials is not None and failed > search.max_failed_trials:
        return f"TooManyFailedTrials: {failed} failed (max_failed_trials {search.max_failed_trials})"
    if search.stop_when_goals_met and any(t.get("phase") == "Succeeded" for t in trials):
        return "GoalsMet: a trial met every goal (stop_when_goals_met)"
    budget = search.budget()
    if budget is not None and len(trials) >= budget:
        return f"MaxTrialsReached: {len(trials)} trials (max_samples/max_iter)"
    spent = (now - parse_timestamp(started)).total_seconds() if started else 0.0
    if search.max_time is not None and trials and spent >= search.max_time:
        return f"MaxTimeReached: max_time {search.max_time:g}s"
    return None


def decide_search(
    body: dict[str, Any], workflow: OptimizationWorkflow, children: dict[str, dict[str, Any]], now: Any
) -> SearchDecision:
    found = workflow.spec.search()
    assert found is not None
    space, strategy = found
    before = (body.get("status") or {}).get("search") or {}
    started = before.get("startedAt") or timestamp(now)
    trials = [dict(t) for t in before.get("trials") or []]
    for trial in trials:
        if trial["workflow"] in children and trial.get("phase") not in DONE:
            trial.update(_trial_state(children[trial["workflow"]]))
    kube = workflow.spec.kubernetes
    parallel = (kube.search.parallelTrials if kube and kube.search else None) or DEFAULT_PARALLEL_TRIALS
    decision = SearchDecision(status={})
    reason = before.get("reason") or _stop_reason(strategy, trials, started, now)
    sampler = Sampler(space, strategy.sampler, strategy.seed, told=[t["point"] for t in trials])
    while reason is None and sum(t.get("phase") not in DONE for t in trials) < parallel:
        point = sampler.suggest()
        if point is None:
            reason = SPACE_EXHAUSTED
            break
        number = len(trials) + 1
        child = _trial_body(body, point, number)
        if _waits_for_a_running_prefix(child, trials, children):
            break
        decision.create.append(child)
        trials.append(
            {
                "number": number,
                "point": point.index,
                "parameters": point.parameters(),
                "workflow": child["metadata"]["name"],
                "phase": "Pending",
            }
        )
        decision.events.append(("Normal", "TrialCreated", f"trial {number}: {point.parameters()}"))
        reason = _stop_reason(strategy, trials, started, now)
    if reason is None and sampler.suggest() is None and all(t.get("phase") in DONE for t in trials):
        reason = SPACE_EXHAUSTED
    if reason is not None and reason.startswith(STOPS_RUNNING_TRIALS):
        _stop_running_trials(trials, reason, decision)
    decision.delete = [
        t["workflow"]
        for t in trials
        if t.get("phase") == "Stopped"
        and t["workflow"] in children
        and not children[t["workflow"]]["metadata"].get("deletionTimestamp")
    ]
    decision.status = _status(workflow, space, strategy, trials, started, reason, parallel)
    return decision


def _stop_running_trials(trials: list[dict[str, Any]], reason: str, decision: SearchDecision) -> None:
    """Mark the trials not done Stopped; their workflows are deleted once the watch shows them as the
    search's own (a trial created just before may not be seen yet: it is deleted when it is)."""
    for trial in trials:
        if trial.get("phase") in DONE:
            continue
        trial.update(phase="Stopped", message=f"stopped: the search ended ({reason})")
        decision.events.append(("Normal", "TrialStopped", f"trial {trial['number']}: the search ended ({reason})"))


def _status(
    workflow: OptimizationWorkflow,
    space: Any,
    strategy: Any,
    trials: list[dict[str, Any]],
    started: str,
    reason: str | None,
    parallel: int,
) -> dict[str, Any]:
    budget = strategy.budget()
    total = min(budget, len(space)) if budget is not None else len(space)
    done = [t for t in trials if t.get("phase") in DONE]
    counts = {p: sum(t.get("phase") == p for t in trials) for p in ("Pending", "Running", *DONE)}
    search: dict[str, Any] = {
        "sampler": strategy.sampler,
        "points": len(space),
        "parallelTrials": parallel,
        "startedAt": started,
        "progress": f"{len(done)}/{total}",
        "counts": counts,
        "trials": trials,
    }
    objectives = objectives_of(workflow)
    candidates = {str(t["number"]): t.get("metrics") or {} for t in trials if t.get("phase") == "Succeeded"}
    ranked = rank(candidates, objectives, goals_first=False)
    if ranked:
        best = next(t for t in trials if str(t["number"]) == ranked[0])
        kept = ("number", "workflow", "parameters", "metrics", "output")
        search["best"] = {k: best[k] for k in kept if k in best}
        search["frontier"] = [int(n) for n in frontier(candidates, objectives)]
    status: dict[str, Any] = {"search": search, "progress": search["progress"]}
    ended = reason is not None and len(done) == len(trials)
    if reason is not None:
        search["reason"] = reason
    if not ended:
        status.update(phase="Running", message=f"search: {search['progress']} trials done")
    elif ranked:
        best = search["best"]
        status.update(
            phase="Succeeded",
            message=f"search ended ({reason}); best: trial {best['number']} {best['parameters']}",
        )
    else:
        status.update(phase="Failed", message=f"search ended ({reason}); no trial succeeded and met every goal")
    return status
