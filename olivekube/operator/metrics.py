"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from olivekube.api.common import MAX_NAME_LEN
from olivekube.api.status import MAX_EVALUATED_METRICS, MAX_EVALUATED_MODELS, PassPhase
from olivekube.core.clock import parse_timestamp
from olivekube.core.constants import LABEL_PASS
from olivekube.operator.plan import job_state

WORKFLOWS = Gauge("olivekube_workflows", "Workflows by phase", ["phase"])
JOBS_CREATED = Counter("olivekube_jobs_created_total", "Jobs created, one per pass attempt", ["pass_type"])
RETRIES = Counter("olivekube_pass_retries_total", "Pass attempts after a failure", ["pass_type"])
PASSES_CACHED = Counter("olivekube_passes_cached_total", "Passes taken from the cache without a Job")
PASS_DURATION = Histogram(
    "olivekube_pass_duration_seconds",
    "Duration of pass Jobs that finished",
    ["pass_type", "result"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
RECONCILE_ERRORS = Counter("olivekube_reconcile_errors_total", "Reconciles that raised")
RECONCILES = Counter("olivekube_reconciles_total", "Reconciles done")
EVALUATION = Gauge(
    "olivekube_evaluation_value",
    "A metric of a model the workflow's evaluator measured (status.evaluation)",
    ["namespace", "workflow", "model", "metric"],
)
GOAL_MET = Gauge(
    "olivekube_evaluation_goal_met",
    "1 when the metric's goal was met, 0 when not (metrics with a goal only)",
    ["namespace", "workflow", "model", "metric"],
)


# status.evaluation is written by the runner, so by whoever controls a runner pod: only what an
# evaluator can produce becomes a label set (models input, final and pass:NAME; at most 64 metrics of
# 16 sub-types each, as the API allows), so a status cannot grow the operator's memory without bound.
MODEL_LABEL = re.compile(rf"^(input|final|pass:[A-Za-z0-9_.-]{{1,{MAX_NAME_LEN}}})$")
METRIC_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,160}$")


def time_finished_jobs(
    jobs: list[dict[str, Any]], pass_types: dict[str, str], timed: set[str], since: dt.datetime
) -> None:
    """PASS_DURATION: each Job (of one workflow) that ended after `since` (this process's start), once;
    `timed` holds the uids already observed, `pass_types` maps a Job's pass label to its pass type."""
    for job in jobs:
        uid, state = job["metadata"].get("uid"), job_state(job)
        if not uid or uid in timed or state == PassPhase.RUNNING:
            continue
        status = job.get("status") or {}
        failed = (c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("type") == "Failed")
        ended = status.get("completionTime") or next(failed, None)
        if not status.get("startTime") or not ended or parse_timestamp(ended) < since:
            continue
        timed.add(uid)
        seconds = (parse_timestamp(ended) - parse_timestamp(status["startTime"])).total_seconds()
        pass_type = pass_types.get((job["metadata"].get("labels") or {}).get(LABEL_PASS, ""), "unknown")
        PASS_DURATION.labels(pass_type, state.value).observe(max(seconds, 0.0))


def evaluation_samples(evaluation: dict[str, Any] | None) -> list[tuple[str, str, float, float | None]]:
    """(model, metric, value, goal met as 1/0 or None) for each value in status.evaluation that an
    evaluator could have written; anything else is left out."""
    out = []
    models = (evaluation or {}).get("models")
    models = models if isinstance(models, dict) else {}
    named = [(m, v) for m, v in models.items() if MODEL_LABEL.match(str(m)) and isinstance(v, dict)]
    for model, values in named[:MAX_EVALUATED_MODELS]:
        metrics = [(k, e) for k, e in values.items() if METRIC_LABEL.match(str(k))]
        for metric, entry in metrics[:MAX_EVALUATED_METRICS]:
            if isinstance(entry, dict) and isinstance(entry.get("value"), int | float):
                met = entry.get("met")
                out.append(
                    (str(model), str(metric), float(entry["value"]), None if met is None else float(bool(met)))
                )
    return out


def export_evaluation(
    namespace: str, workflow: str, evaluation: dict[str, Any] | None, previous: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Set the gauges of one workflow's evaluation, remove the samples it no longer has; returns
    the (model, metric) pairs now exported."""
    now = set()
    for model, metric, value, met in evaluation_samples(evaluation):
        EVALUATION.labels(namespace, workflow, model, metric).set(value)
        if met is not None:
            GOAL_MET.labels(namespace, workflow, model, metric).set(met)
        now.add((model, metric))
    for model, metric in previous - now:
        for gauge in (EVALUATION, GOAL_MET):
            with contextlib.suppress(KeyError):  # never exported: it had no goal
                gauge.remove(namespace, workflow, model, metric)
    return now
