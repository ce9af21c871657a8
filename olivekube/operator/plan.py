"""What to do next for a workflow, decided from its spec, status and Jobs (pure; unit-tested alone).

Level-triggered: the decision depends only on what the cluster holds now, so an operator killed at
any moment decides the same after a restart and creates no duplicate Job (Job names are
deterministic, and the attempt number is the count of this pass's Jobs for its chain key).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from olivekube.api.chain import chain_keys
from olivekube.api.systems import AzureMLSystem
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.operator.jobs import LABEL_KEY, LABEL_PASS, job_name, label_value

DEFAULT_BACKOFF_LIMIT = 2
Event = tuple[str, str, str]  # type (Normal/Warning), reason, message


@dataclass
class Decision:
    """A merge patch for status, at most one Job to create, events, and when to look again."""

    status: dict[str, Any]
    create: tuple[str, str, int] | None = None  # pass, chain key, attempt
    delete: str | None = None  # a Job to delete (a suspended pass whose work runs on Azure ML)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def job_state(job: dict[str, Any]) -> str:
    """Succeeded, Failed or Running (a Job still queued counts as running)."""
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return "Succeeded"
    if _condition(job, "Failed") or _condition(job, "FailureTarget"):
        return "Failed"
    return "Running"


def _finished_at(job: dict[str, Any]) -> dt.datetime | None:
    cond = _condition(job, "Failed") or _condition(job, "FailureTarget")
    stamp = (cond or {}).get("lastTransitionTime")
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _conditions(
    previous: list[dict[str, Any]], phase: str, reason: str, message: str, generation: int
) -> list[Any]:
    wanted = {
        "Ready": "True" if phase == "Succeeded" else "False",
        "Progressing": "True" if phase in ("Pending", "Running") else "False",
        "Failed": "True" if phase == "Failed" else "False",
    }
    old = {c.get("type"): c for c in previous}
    out = []
    for kind, value in wanted.items():
        before = old.get(kind, {})
        stamp = before.get("lastTransitionTime") if before.get("status") == value else now()
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp or now(),
                "observedGeneration": generation,
            }
        )
    return out


def decide(
    workflow: OptimizationWorkflow,
    generation: int,
    status: dict[str, Any],
    jobs: list[dict[str, Any]],
    cached: Callable[[str, str], dict[str, Any] | None],
    failure_message: Callable[[dict[str, Any]], str],
    retry_backoff: float = 10.0,
) -> Decision:
    """The next step for `workflow`. `cached(pass, key)` finds a published output in the store's
    index; `failure_message(job)` reads why a Job failed (the pod's termination message)."""
    spec = workflow.spec
    keys = chain_keys(spec)
    order = spec.ordered_pass_names()
    k8s = spec.kubernetes
    backoff_limit = k8s.backoffLimit if k8s and k8s.backoffLimit is not None else DEFAULT_BACKOFF_LIMIT
    current = dict(status.get("passes") or {})
    passes: dict[str, Any] = {name: None for name in current if name not in spec.passes}  # removed passes
    events: list[Event] = []
    if status.get("phase") == "Failed" and status.get("observedGeneration") == generation:
        return Decision({})  # a failed generation stays failed until the spec changes

    def finish(
        phase: str, reason: str, message: str, current_pass: str | None, done: int, **extra: Any
    ) -> Decision:
        patch: dict[str, Any] = {
            "phase": phase,
            "observedGeneration": generation,
            "currentPass": current_pass,
            "progress": f"{done}/{len(order)}",
            "message": message,
            "conditions": _conditions(status.get("conditions") or [], phase, reason, message, generation),
            "passes": passes or None,
        }
        if phase != status.get("phase"):
            events.append(("Warning" if phase == "Failed" else "Normal", reason, message))
        decision = Decision({k: v for k, v in patch.items() if v is not None or k == "currentPass"}, events=events)
        for key, value in extra.items():
            setattr(decision, key, value)
        return decision

    done = 0
    for name in order:
        key = keys[name]
        seen = current.get(name) or {}
        if seen.get("phase") == "Succeeded" and seen.get("cacheKey") == key and seen.get("artifact"):
            done += 1
            continue
        mine = [
            j
            for j in jobs
            if j["metadata"].get("labels", {}).get(LABEL_PASS) == label_value(name)
            and j["metadata"].get("labels", {}).get(LABEL_KEY) == key[:16]
        ]
        mine.sort(key=lambda j: int(j["metadata"]["labels"].get("olivekube.io/attempt", "0")))
        if not mine:
            hit = cached(name, key)
            if hit is not None:
                passes[name] = {
                    "phase": "Succeeded",
                    "cached": True,
                    "cacheKey": key,
                    "artifact": {
                        "uri": hit["uri"],
                        "sha256": hit.get("digest"),
                        "sizeBytes": hit.get("sizeBytes"),
                    },
                    "metrics": hit.get("metrics") or None,
                    "finishedAt": now(),
                    "jobName": None,
                    "attempts": 0,
                    "message": "taken from the cache: no Job",
                }
                events.append(("Normal", "PassCached", f"pass {name} taken from the cache"))
                done += 1
                continue
        states = [job_state(j) for j in mine]
        if "Succeeded" in states:
            if seen.get("cacheKey") == key and seen.get("artifact"):
                passes[name] = {"phase": "Succeeded", "finishedAt": seen.get("finishedAt") or now()}
                events.append(("Normal", "PassSucceeded", f"pass {name} succeeded"))
                done += 1
                continue
            message = f"pass {name}: the runner finished without recording an artifact"
            passes[name] = {"phase": "Failed", "message": message}
            return finish("Failed", "NoArtifact", message, name, done)
        if "Running" in states:
            job = mine[states.index("Running")]
            if spec.suspend and isinstance(spec.host_system(name), AzureMLSystem):
                # Azure ML bills while it runs: stop it (the pod cancels its job); resume starts it again.
                passes[name] = {
                    "phase": "Pending",
                    "jobName": None,
                    "message": "Azure ML job cancelled: suspended",
                }
                decision = finish("Suspended", "Suspended", f"suspended: cancelling pass {name}", name, done)
                decision.delete = job["metadata"]["name"]
                return decision
            if seen.get("phase") != "Running" or seen.get("jobName") != job["metadata"]["name"]:
                passes[name] = {"phase": "Running", "jobName": job["metadata"]["name"], "attempts": len(mine)}
            return finish("Running", "PassRunning", f"running pass {name}", name, done)
        if spec.suspend:
            return finish("Suspended", "Suspended", f"suspended before pass {name}", name, done)
        failures = states.count("Failed")
        if failures > backoff_limit:
            why = failure_message(mine[-1]) or "the pass's Job failed"
            message = f"pass {name} failed after {failures} attempts: {why}"
            passes[name] = {"phase": "Failed", "message": why, "finishedAt": now(), "attempts": failures}
            return finish("Failed", "PassFailed", message, name, done)
        if failures:
            finished = _finished_at(mine[-1])
            wait = retry_backoff * 2 ** (failures - 1)
            if finished is not None:
                remaining = wait - (dt.datetime.now(dt.UTC) - finished).total_seconds()
                if remaining > 0:
                    passes[name] = {"phase": "Pending", "message": f"retrying in {remaining:.0f}s"}
                    return finish(
                        "Running",
                        "PassRetrying",
                        f"pass {name} failed; retrying",
                        name,
                        done,
                        requeue_after=remaining,
                    )
            events.append(("Warning", "PassRetry", f"pass {name} failed; attempt {failures + 1}"))
        fresh = seen.get("cacheKey") != key
        passes[name] = {
            "phase": "Running",
            "jobName": job_name(workflow.metadata.name, name, key, len(mine)),
            "attempts": len(mine) + 1,
            "startedAt": seen.get("startedAt") if not fresh and seen.get("startedAt") else now(),
        }
        if fresh:  # a new chain key: the runner's fields of an older run no longer apply
            passes[name].update(
                artifact=None, metrics=None, cached=None, progress=None, message=None, cacheKey=None
            )
        decision = finish("Running", "PassStarted", f"running pass {name}", name, done)
        decision.create = (name, key, len(mine))
        return decision
    return finish(
        "Succeeded", "Succeeded", f"all {len(order)} passes succeeded", order[-1] if order else None, done
    )
