"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
