"""What to do next for a workflow, decided from its spec, status and Jobs (pure; unit-tested alone).

Level-triggered: the decision depends only on what the cluster holds now, so an operator killed at
any moment decides the same after a restart and creates no duplicate Job (Job names are
deterministic). Attempts and failed Jobs are counted in status as well as from the Jobs there are, so
a Job removed by its TTL or by hand neither resets the retry limit nor frees its name for reuse.

The decision walks the passes in run order and asks each pass a chain of small named rules
(`PASS_RULES`, in the manner of cert-manager's trigger policies): the first rule that has an answer
either declares the pass done (go on to the next) or ends the decision. Time comes from the clock
passed in, never from the system.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from olivekube.api.status import PassPhase, WorkflowPhase
from olivekube.api.systems import AzureMLSystem
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.clock import Clock, parse_timestamp, timestamp, utc_now
from olivekube.core.constants import LABEL_ATTEMPT, LABEL_KEY, LABEL_PASS
from olivekube.operator.jobs import job_name, label_value

DEFAULT_BACKOFF_LIMIT = 2
STARTUP_RECHECK_SECONDS = 10.0
DEFAULT_START_TIMEOUT_SECONDS = 300.0
WAITING = "waiting to start: "
"""How a pass's status message begins while its pods wait (the scheduler's or the kubelet's words)."""


@dataclass(frozen=True)
class StartProblem:
    """Why a Job's pods do not start. `may_pass`: the cluster keeps trying (unschedulable, a pull error,
    a Secret not there yet), so the pass fails only when it still holds at the start timeout."""

    message: str
    may_pass: bool = False


Event = tuple[str, str, str]  # type (Normal/Warning), reason, message


@dataclass
class Decision:
    """A merge patch for status, at most one Job to create, events, and when to look again."""

    status: dict[str, Any]
    create: tuple[str, str, int] | None = None  # pass, chain key, attempt
    delete: list[str] = field(default_factory=list)  # Jobs to delete: superseded, or suspended on Azure ML
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def recorded_chain_key(seen: dict[str, Any]) -> str | None:
    """The chain key a pass's status was written for (`cacheKey` is how olivekube 0.1 named it)."""
    return seen.get("chainKey") or seen.get("cacheKey")


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def job_state(job: dict[str, Any]) -> PassPhase:
    """Succeeded, Failed or Running (a Job still queued counts as running)."""
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return PassPhase.SUCCEEDED
    if _condition(job, "Failed") or _condition(job, "FailureTarget"):
        return PassPhase.FAILED
    return PassPhase.RUNNING


def _finished_at(job: dict[str, Any]) -> dt.datetime | None:
    cond = _condition(job, "Failed") or _condition(job, "FailureTarget")
    stamp = (cond or {}).get("lastTransitionTime")
    return parse_timestamp(stamp) if stamp else None


def conditions(
    previous: list[dict[str, Any]], phase: WorkflowPhase, reason: str, message: str, generation: int, now: str
) -> list[Any]:
    """Ready, Progressing and Failed, each keeping its transition time while its status stays."""
    wanted = {
        "Ready": "True" if phase == WorkflowPhase.SUCCEEDED else "False",
        "Progressing": "True" if phase == WorkflowPhase.RUNNING else "False",
        "Failed": "True" if phase == WorkflowPhase.FAILED else "False",
    }
    old = {c.get("type"): c for c in previous}
    out = []
    for kind, value in wanted.items():
        before = old.get(kind, {})
        stamp = before.get("lastTransitionTime") if before.get("status") == value else None
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp or now,
                "observedGeneration": generation,
            }
        )
    return out


@dataclass
class Planner:
    """One decision in the making: the facts, and the status patch and events gathered so far."""

    workflow: OptimizationWorkflow
    generation: int
    status: dict[str, Any]
    jobs: list[dict[str, Any]]
    cached: Callable[[str, str], dict[str, Any] | None]
    failure_message: Callable[[dict[str, Any]], str]
    retry_backoff: float
    clock: Clock
    start_problem: Callable[[dict[str, Any]], StartProblem | None] = lambda job: None
    start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS  # the admin's; a workflow may ask for less
    live_pods: Callable[[str], int] = lambda job_name: 0  # pods of a Job not yet ended or gone
    passes: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    done: int = 0

    @property
    def now(self) -> str:
        return timestamp(self.clock())

    def start_limit(self) -> float:
        """Seconds a pass's pods may wait to start: the workflow's, held to the admin's."""
        k8s = self.workflow.spec.kubernetes
        asked = k8s.startTimeoutSeconds if k8s and k8s.startTimeoutSeconds else None
        return min(float(asked), self.start_timeout) if asked else self.start_timeout

    def backoff_limit(self) -> int:
        k8s = self.workflow.spec.kubernetes
        return k8s.backoffLimit if k8s and k8s.backoffLimit is not None else DEFAULT_BACKOFF_LIMIT

    def finish(
        self, phase: WorkflowPhase, reason: str, message: str, current_pass: str | None, **extra: Any
    ) -> Decision:
        total = len(self.workflow.spec.passes)
        patch: dict[str, Any] = {
            "phase": phase.value,
            "observedGeneration": self.generation,
            "currentPass": current_pass,
            "progress": f"{self.done}/{total}",
            "message": message,
            "conditions": conditions(
                self.status.get("conditions") or [], phase, reason, message, self.generation, self.now
            ),
            "passes": self.passes or None,
        }
        if phase.value != self.status.get("phase"):
            kind = "Warning" if phase == WorkflowPhase.FAILED else "Normal"
            self.events.append((kind, reason, message))
        patch = {k: v for k, v in patch.items() if v is not None or k == "currentPass"}
        return Decision(patch, events=self.events, **extra)


@dataclass
class PassFacts:
    """One pass as the cluster shows it: its chain key, its status entry, its Jobs (by attempt)."""

    name: str
    key: str
    seen: dict[str, Any]
    jobs: list[dict[str, Any]]

    @property
    def states(self) -> list[PassPhase]:
        return [job_state(j) for j in self.jobs]

    @property
    def counted_here(self) -> bool:
        """Whether status's attempt counts belong to this chain key (the operator writes it at each start)."""
        return recorded_chain_key(self.seen) == self.key

    @property
    def vanished(self) -> str | None:
        """The running attempt's Job, gone before the operator saw it end (a TTL of 0, a failure lost in
        a watch's gap, deleted by hand): a failed attempt, or the retry limit would not hold."""
        name = self.seen.get("jobName")
        if not name or not self.counted_here or self.seen.get("phase") != PassPhase.RUNNING or self.recorded:
            return None
        return None if any(j["metadata"]["name"] == name for j in self.jobs) else str(name)

    @property
    def failed_jobs(self) -> list[str]:
        """This chain key's failed attempts: those status recorded (their Jobs may be gone), those seen,
        and the running one whose Job vanished."""
        recorded = [str(n) for n in self.seen.get("failedJobs") or []] if self.counted_here else []
        failed_now = [str(j["metadata"]["name"]) for j in self.jobs if job_state(j) == PassPhase.FAILED]
        failed_now += [self.vanished] if self.vanished else []
        return recorded + [n for n in failed_now if n not in recorded]

    @property
    def next_attempt(self) -> int:
        """The number of the next attempt: past every attempt started, whether its Job is there or not."""
        started = int(self.seen.get("attempts") or 0) if self.counted_here else 0
        labelled = [int((j["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, "0")) + 1 for j in self.jobs]
        return max([started, *labelled])

    @property
    def recorded(self) -> bool:
        """Whether status holds this chain key's artifact (written by the runner)."""
        return recorded_chain_key(self.seen) == self.key and bool(self.seen.get("artifact"))


DONE = object()
"""A rule's answer when the pass is complete and the next pass is to be looked at."""
Answer = Decision | object | None
PassRule = Callable[[Planner, PassFacts], Answer]


def already_succeeded(p: Planner, f: PassFacts) -> Answer:
    """Status holds this chain key's output, and its Job finished (or is gone: TTL, deleted by hand)."""
    if not f.recorded:
        return None
    if f.seen.get("phase") == PassPhase.SUCCEEDED:
        return DONE
    if f.jobs:
        return None
    p.passes[f.name] = {"phase": PassPhase.SUCCEEDED.value, "finishedAt": f.seen.get("finishedAt") or p.now}
    p.events.append(("Normal", "PassSucceeded", f"pass {f.name} succeeded"))
    return DONE


def taken_from_cache(p: Planner, f: PassFacts) -> Answer:
    """No Job yet, and the store's index has this chain key's output: no Job at all."""
    if f.jobs:
        return None
    spec = p.workflow.spec
    if spec.passes[f.name].evaluator or (spec.evaluator and spec.is_last_pass(f.name)):
        return None  # its Job measures the model and checks the goals (the runner takes the pass from the cache)
    if spec.is_last_pass(f.name) and not isinstance(spec.host_system(f.name), AzureMLSystem):
        # Its Job publishes the model to output_dir with the workflow's own credentials (the runner takes
        # the pass from the cache in seconds); the operator has no business writing where authors point.
        return None
    hit = p.cached(f.name, f.key)
    if hit is None:
        return None
    p.passes[f.name] = {
        "phase": PassPhase.SUCCEEDED.value,
        "cached": True,
        "chainKey": f.key,
        "artifact": {"uri": hit["uri"], "sha256": hit.get("digest"), "sizeBytes": hit.get("sizeBytes")},
        "metrics": hit.get("metrics") or None,
        "finishedAt": p.now,
        "jobName": None,
        "attempts": 0,
        "message": "taken from the cache: no Job",
    }
    p.events.append(("Normal", "PassCached", f"pass {f.name} taken from the cache"))
    return DONE


def job_succeeded(p: Planner, f: PassFacts) -> Answer:
    if PassPhase.SUCCEEDED not in f.states:
        return None
    if f.recorded:
        p.passes[f.name] = {"phase": PassPhase.SUCCEEDED.value, "finishedAt": f.seen.get("finishedAt") or p.now}
        p.events.append(("Normal", "PassSucceeded", f"pass {f.name} succeeded"))
        return DONE
    message = f"pass {f.name}: the runner finished without recording an artifact"
    p.passes[f.name] = {"phase": PassPhase.FAILED.value, "message": message}
    return p.finish(WorkflowPhase.FAILED, "NoArtifact", message, f.name)


def _started(job: dict[str, Any]) -> bool:
    """Whether every pod of the Job is ready or has ended (a training pass on several pods starts
    whole or not at all: some pods holding GPUs while another waits for a node is not a start), a pod
    failed, or the Job waits on purpose (Kueue)."""
    status, spec = job.get("status") or {}, job.get("spec") or {}
    if spec.get("suspend"):
        return True
    if status.get("failed"):
        return True
    pods = int(spec.get("parallelism") or 1)
    return int(status.get("ready") or 0) + int(status.get("succeeded") or 0) >= pods


def _age(p: Planner, job: dict[str, Any]) -> float:
    created = (job.get("metadata") or {}).get("creationTimestamp")
    return (p.clock() - parse_timestamp(created)).total_seconds() if created else 0.0


def _watching_startup(p: Planner, job: dict[str, Any]) -> bool:
    """Whether a Job that has not started is young enough to look at again on a timer: until its start
    timeout has passed (reads come from the watch-fed view: a look costs no API call)."""
    return _age(p, job) < p.start_limit() + STARTUP_RECHECK_SECONDS


def cannot_start(p: Planner, f: PassFacts) -> Answer:
    """A running Job whose pods cannot be created or started (refused by admission, a missing
    ServiceAccount, an image that cannot be pulled): the pass fails with the cluster's own words
    instead of waiting for ever, and the Job goes."""
    if PassPhase.RUNNING not in f.states:
        return None
    job = f.jobs[f.states.index(PassPhase.RUNNING)]
    if _started(job):
        return None
    problem = p.start_problem(job)
    if problem is None:
        return None
    why = problem.message
    if problem.may_pass and _age(p, job) < p.start_limit():
        if f.seen.get("message") != WAITING + why:  # said in status while the pass waits
            p.passes[f.name] = {"message": WAITING + why}
        return None
    if problem.may_pass:
        why = f"{why} (still so after the start timeout, {p.start_limit():.0f}s)"
    p.passes[f.name] = {"phase": PassPhase.FAILED.value, "message": why, "finishedAt": p.now}
    message = f"pass {f.name} cannot start: {why}"
    return p.finish(WorkflowPhase.FAILED, "PodsNotStarting", message, f.name, delete=[job["metadata"]["name"]])


def job_running(p: Planner, f: PassFacts) -> Answer:
    """A Job runs the pass: wait for it; a suspend stops one whose work bills on Azure ML."""
    if PassPhase.RUNNING not in f.states:
        return None
    job = f.jobs[f.states.index(PassPhase.RUNNING)]
    spec = p.workflow.spec
    if spec.suspend and isinstance(spec.host_system(f.name), AzureMLSystem):
        # Azure ML bills while it runs: stop it (the pod cancels its job); resume starts it again.
        p.passes[f.name] = {
            "phase": PassPhase.PENDING.value,
            "jobName": None,
            "message": "Azure ML job cancelled: suspended",
        }
        message = f"suspended: cancelling pass {f.name}"
        return p.finish(WorkflowPhase.SUSPENDED, "Suspended", message, f.name, delete=[job["metadata"]["name"]])
    if f.seen.get("phase") != PassPhase.RUNNING or f.seen.get("jobName") != job["metadata"]["name"]:
        p.passes[f.name] = {
            **p.passes.get(f.name, {}),
            "phase": PassPhase.RUNNING.value,
            "jobName": job["metadata"]["name"],
            "attempts": f.next_attempt,
        }
    if _started(job) and str(f.seen.get("message") or "").startswith(WAITING):
        p.passes[f.name] = {**p.passes.get(f.name, {}), "message": None}  # it started: no longer waiting
    # Until a pod is ready nothing may change on the Job: look again, to catch pods that never start.
    again = None if _started(job) or not _watching_startup(p, job) else STARTUP_RECHECK_SECONDS
    message = f"running pass {f.name}"
    reason = "PassStarted" if _shown(p.status, "PassStarted", message) else "PassRunning"
    return p.finish(WorkflowPhase.RUNNING, reason, message, f.name, requeue_after=again)


def _shown(status: dict[str, Any], reason: str, message: str) -> bool:
    """Whether the conditions already say this: a pass whose Job was just created keeps its PassStarted
    reason while it runs, since a reason renamed alone would cost one status write per workflow."""
    return any(c.get("reason") == reason and c.get("message") == message for c in status.get("conditions") or [])


def suspended(p: Planner, f: PassFacts) -> Answer:
    if not p.workflow.spec.suspend:
        return None
    return p.finish(WorkflowPhase.SUSPENDED, "Suspended", f"suspended before pass {f.name}", f.name)


GOAL_NOT_MET = "GoalNotMet:"
"""How the runner's termination message starts when a model missed an evaluator's goal."""


def out_of_attempts(p: Planner, f: PassFacts) -> Answer:
    failed = f.failed_jobs
    failures = len(failed)
    last = f.jobs[-1] if f.jobs and f.states[-1] == PassPhase.FAILED else None
    gone = f"its Job {f.vanished} was removed before it finished" if f.vanished else None
    why = (p.failure_message(last) if last else gone or f.seen.get("message")) or "the pass's Job failed"
    goal_not_met = GOAL_NOT_MET in why  # a measured model does not change on a retry
    if failures <= p.backoff_limit() and not goal_not_met:
        return None
    p.passes[f.name] = {"phase": PassPhase.FAILED.value, "message": why, "finishedAt": p.now, "failedJobs": failed}
    if goal_not_met:
        return p.finish(WorkflowPhase.FAILED, "GoalNotMet", f"pass {f.name}: {why}", f.name)
    message = f"pass {f.name} failed after {failures} attempts: {why}"
    return p.finish(WorkflowPhase.FAILED, "PassFailed", message, f.name)


def backing_off(p: Planner, f: PassFacts) -> Answer:
    """After a failure, wait retry_backoff * 2^(failures-1) from the failed Job's end."""
    failures = len(f.failed_jobs)
    finished = _finished_at(f.jobs[-1]) if f.jobs and f.states[-1] == PassPhase.FAILED else None
    if finished is None:
        return None
    wait = p.retry_backoff * 2 ** (failures - 1)
    remaining = wait - (p.clock() - finished).total_seconds()
    if remaining <= 0:
        return None
    p.passes[f.name] = {
        "phase": PassPhase.PENDING.value,
        "message": f"retrying in {remaining:.0f}s: {p.failure_message(f.jobs[-1]) or 'the Job failed'}"[:4096],
        "failedJobs": f.failed_jobs,
    }
    message = f"pass {f.name} failed; retrying"
    return p.finish(WorkflowPhase.RUNNING, "PassRetrying", message, f.name, requeue_after=remaining)


def previous_attempt_stopping(p: Planner, f: PassFacts) -> Answer:
    """The failed attempt's pods still run (their grace period: a training pass saves and uploads a
    checkpoint after SIGTERM): the next attempt waits for them, so that it resumes from that
    checkpoint and never trains beside them."""
    last = f.failed_jobs[-1] if f.failed_jobs else None
    alive = p.live_pods(last) if last else 0
    if not alive:
        return None
    p.passes[f.name] = {
        "phase": PassPhase.PENDING.value,
        "message": f"waiting for {alive} pod(s) of {last} to stop before the next attempt",
        "failedJobs": f.failed_jobs,
    }
    message = f"pass {f.name} failed; retrying once its pods have stopped"
    return p.finish(
        WorkflowPhase.RUNNING, "PassRetrying", message, f.name, requeue_after=STARTUP_RECHECK_SECONDS / 2
    )


def start_attempt(p: Planner, f: PassFacts) -> Answer:
    """Create the Job of the next attempt."""
    failed = f.failed_jobs
    if failed:
        p.events.append(("Warning", "PassRetry", f"pass {f.name} failed; attempt {len(failed) + 1}"))
    fresh = not f.counted_here
    attempt = f.next_attempt
    p.passes[f.name] = {
        "phase": PassPhase.RUNNING.value,
        "jobName": job_name(p.workflow.metadata.name, f.name, f.key, attempt),
        "attempts": attempt + 1,
        "failedJobs": failed or None,
        "chainKey": f.key,
        "message": None,  # the wait before this attempt is over
        "startedAt": f.seen.get("startedAt") if not fresh and f.seen.get("startedAt") else p.now,
    }
    if fresh:  # a new chain key: the runner's fields of an older run no longer apply
        cleared = ("artifact", "metrics", "cached", "progress", "message", "cacheKey")
        p.passes[f.name].update(dict.fromkeys(cleared))
    return p.finish(
        WorkflowPhase.RUNNING, "PassStarted", f"running pass {f.name}", f.name, create=(f.name, f.key, attempt)
    )


PASS_RULES: tuple[PassRule, ...] = (
    already_succeeded,
    taken_from_cache,
    job_succeeded,
    cannot_start,
    job_running,
    suspended,
    out_of_attempts,
    backing_off,
    previous_attempt_stopping,
    start_attempt,
)


def _pass_jobs(jobs: list[dict[str, Any]], name: str, key: str) -> list[dict[str, Any]]:
    """The Jobs of one pass for one chain key, by attempt."""

    def labels(job: dict[str, Any]) -> dict[str, str]:
        return dict(job["metadata"].get("labels") or {})

    mine = [
        j for j in jobs if labels(j).get(LABEL_PASS) == label_value(name) and labels(j).get(LABEL_KEY) == key[:16]
    ]
    return sorted(mine, key=lambda j: int(labels(j).get(LABEL_ATTEMPT, "0")))


def decide(
    workflow: OptimizationWorkflow,
    generation: int,
    status: dict[str, Any],
    jobs: list[dict[str, Any]],
    cached: Callable[[str, str], dict[str, Any] | None],
    failure_message: Callable[[dict[str, Any]], str],
    retry_backoff: float = 10.0,
    clock: Clock = utc_now,
    start_problem: Callable[[dict[str, Any]], StartProblem | None] = lambda job: None,
    start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS,
    live_pods: Callable[[str], int] = lambda job_name: 0,
) -> Decision:
    """The next step for `workflow`: `_next_step`, and the deletion of every Job a spec edit superseded.
    `start_problem(job)` says why a Job's pods do not start, or None; one the cluster keeps trying
    fails the pass at `start_timeout` (or the workflow's shorter spec.kubernetes.startTimeoutSeconds).
    `live_pods(job name)` counts a Job's pods that have not ended."""
    planner = Planner(
        workflow,
        generation,
        status,
        jobs,
        cached,
        failure_message,
        retry_backoff,
        clock,
        start_problem,
        start_timeout,
        live_pods,
    )
    decision = _next_step(planner)
    for job in superseded_jobs(workflow, jobs):
        if job not in decision.delete:
            decision.delete.append(job)
            decision.events.append(("Normal", "JobSuperseded", f"deleting Job {job}: the spec changed"))
    return decision


def _next_step(planner: Planner) -> Decision:
    """`planner.cached(pass, key)` finds a published output in the store's index;
    `planner.failure_message(job)` reads why a Job failed (the pod's termination message)."""
    status, generation, jobs = planner.status, planner.generation, planner.jobs
    if status.get("phase") == WorkflowPhase.FAILED and status.get("observedGeneration") == generation:
        return Decision({})  # a failed generation stays failed until the spec changes
    spec = planner.workflow.spec
    current = dict(status.get("passes") or {})
    planner.passes.update({name: None for name in current if name not in spec.passes})  # removed passes
    keys = spec.chain_keys()
    for name in spec.ordered_pass_names():
        facts = PassFacts(name, keys[name], current.get(name) or {}, _pass_jobs(jobs, name, keys[name]))
        answer = next(a for a in (rule(planner, facts) for rule in PASS_RULES) if a is not None)
        if isinstance(answer, Decision):
            return answer
        planner.done += 1
    order = spec.ordered_pass_names()
    message = f"all {len(order)} passes succeeded"
    return planner.finish(WorkflowPhase.SUCCEEDED, "Succeeded", message, order[-1] if order else None)


def superseded_jobs(workflow: OptimizationWorkflow, jobs: list[dict[str, Any]]) -> list[str]:
    """Running Jobs of a spec that is no longer the workflow's: a pass removed, or its chain key changed."""
    wanted = {(label_value(name), key[:16]) for name, key in workflow.spec.chain_keys().items()}
    out = []
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        if job_state(job) == PassPhase.RUNNING and (labels.get(LABEL_PASS), labels.get(LABEL_KEY)) not in wanted:
            out.append(str(job["metadata"]["name"]))
    return out
