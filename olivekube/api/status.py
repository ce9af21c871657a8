"""`status`: written by the operator (phase, conditions, jobs) and by the runner (progress, artifacts).

Passes are a map keyed by pass name so that the operator and the runner can each merge-patch their
own fields without overwriting the other's.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field
from pydantic.json_schema import JsonDict  # type: ignore[attr-defined]

from olivekube.api.common import MAX_LIST, MAX_PASSES, MAX_STRING, PRESERVE, ApiModel


class WorkflowPhase(str, Enum):
    """Lifecycle phase of a workflow."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class PassPhase(str, Enum):
    """Lifecycle phase of one pass."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(str, Enum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Progressing, Failed.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason for the last transition.")
    message: str | None = Field(None, max_length=32768, description="Human-readable detail.")
    lastTransitionTime: str | None = Field(
        None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observedGeneration: int | None = Field(None, ge=0, description="Generation this condition was set for.")


class Progress(ApiModel):
    """Training or build progress of a pass, written by the runner at a bounded rate."""

    step: int | None = Field(None, ge=0, description="Steps done.")
    totalSteps: int | None = Field(None, ge=0, description="Steps in all.")
    epoch: float | None = Field(None, ge=0, description="Epochs done (fractional).")
    loss: float | None = Field(None, description="Latest training loss.")
    evalLoss: float | None = Field(None, description="Latest eval loss.")
    learningRate: float | None = Field(None, description="Current learning rate.")
    etaSeconds: float | None = Field(None, ge=0, description="Estimated seconds left.")
    checkpointStep: int | None = Field(None, ge=0, description="Step of the newest checkpoint saved to the cache.")
    resumedFromStep: int | None = Field(
        None, ge=0, description="Step of the checkpoint this attempt resumed from (an earlier attempt's)."
    )
    message: str | None = Field(None, max_length=1024, description="What the pass is doing now.")


class Artifact(ApiModel):
    """A published pass output."""

    uri: str = Field(
        max_length=MAX_STRING, description="Where the output lies (s3://, pvc://, file://, azureml://)."
    )
    sha256: str | None = Field(None, max_length=64, description="Digest of the output's manifest of file digests.")
    sizeBytes: int | None = Field(None, ge=0, description="Total size of the output's files.")


class PassStatus(ApiModel):
    """Status of one pass."""

    phase: PassPhase | None = Field(None, description="Pass phase.")
    jobName: str | None = Field(None, max_length=253, description="Job of the current attempt.")
    attempts: int | None = Field(
        None, ge=0, description="Attempts started for chainKey; never lowered, so no Job name is used twice."
    )
    failedJobs: list[str] | None = Field(
        None,
        max_length=64,
        description="Failed attempts' Jobs for chainKey, kept after the Jobs are gone (TTL, deleted by hand): "
        "the retry limit counts them.",
    )
    startedAt: str | None = Field(None, description="Start of the first attempt (RFC 3339).")
    finishedAt: str | None = Field(None, description="End of the pass (RFC 3339).")
    progress: Progress | None = Field(None, description="Progress of the running attempt.")
    metrics: dict[str, float] | None = Field(
        None, max_length=64, description="Final metrics, e.g. train_loss, eval_loss, seconds."
    )
    artifact: Artifact | None = Field(None, description="The pass's published output.")
    chainKey: str | None = Field(
        None,
        max_length=64,
        description="Chain key the attempts and the artifact belong to: a hash of the runner version, the pass's "
        "options, the previous pass's chain key (or the input model) and its data configs.",
    )
    cacheKey: str | None = Field(
        None, max_length=64, description="Deprecated: chainKey as olivekube 0.1 wrote it; read, never written."
    )
    cached: bool | None = Field(None, description="True when the output came from the cache without a run.")
    message: str | None = Field(None, max_length=32768, description="Failure message or note.")


MAX_EVALUATED_MODELS = MAX_PASSES + 2  # a model per pass, the input and the final one
MAX_EVALUATED_METRICS = MAX_LIST * 16  # an evaluator's metrics, each of at most 16 sub-types
EVALUATION_BOUNDS: JsonDict = {
    **PRESERVE,
    "maxProperties": 8,
    "properties": {
        "models": {
            "type": "object",
            "maxProperties": MAX_EVALUATED_MODELS,
            "additionalProperties": {"type": "object", "maxProperties": MAX_EVALUATED_METRICS, **PRESERVE},
        }
    },
}
"""status.evaluation's size, as the runner writes it: a model per pass and the input and final ones,
each with at most the 64 metrics of 16 sub-types an evaluator may have."""


class WorkflowStatus(ApiModel):
    """Observed state of the workflow."""

    phase: WorkflowPhase | None = Field(None, description="Workflow phase.")
    observedGeneration: int | None = Field(None, ge=0, description="Generation of spec last acted on.")
    currentPass: str | None = Field(None, max_length=63, description="Pass running now, or the last one run.")
    progress: str | None = Field(None, max_length=64, description="Passes done of all, e.g. 2/3.")
    conditions: list[Condition] | None = Field(
        None,
        max_length=16,
        description="Kubernetes-style conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    passes: dict[str, PassStatus] | None = Field(None, max_length=MAX_PASSES, description="Status per pass.")
    outputs: Artifact | None = Field(None, description="The final model.")
    evaluation: dict[str, Any] | None = Field(
        None,
        description=(
            "spec.evaluator's results: per model (input, pass:NAME, final) each metric's value, goal, "
            "the input model's value and whether the goal was met; goalsMet."
        ),
        json_schema_extra=EVALUATION_BOUNDS,
    )
    message: str | None = Field(None, max_length=32768, description="Why the workflow is in its phase.")
    search: dict[str, Any] | None = Field(
        None,
        description=(
            "A search's state: sampler, points, parallelTrials, startedAt, progress (trials done/planned), "
            "counts by phase, each trial (number, point, parameters, workflow, phase, metrics, output, message), "
            "best, frontier (trial numbers) and the reason it stopped starting trials."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def finished_pass_fields(
    uri: str, digest: str, size_bytes: int | None, metrics: Any, chain_key: str, cached: bool
) -> dict[str, Any]:
    """The runner's own fields of `status.passes[NAME]` once the pass has its output."""
    return {
        "artifact": {"uri": uri, "sha256": digest, "sizeBytes": size_bytes},
        "metrics": metrics,
        "chainKey": chain_key,
        "cached": cached,
    }
