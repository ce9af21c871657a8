"""`spec.kubernetes`: settings of the Jobs that run passes, with Kubernetes' own field names."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from olivekube.api.common import MAX_LIST, MAX_PASSES, MAX_STRING, PRESERVE, ApiModel


class PullPolicy(str, Enum):
    """Container image pull policy."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ResourceRequirements(ApiModel):
    """Container resources (corev1.ResourceRequirements)."""

    requests: dict[str, int | str] | None = Field(
        None,
        max_length=16,
        description="Minimum resources, e.g. cpu: 4, memory: 32Gi.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-int-or-string": True}},
    )
    limits: dict[str, int | str] | None = Field(
        None,
        max_length=16,
        description="Maximum resources, e.g. nvidia.com/gpu: 1.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-int-or-string": True}},
    )


class TolerationOperator(str, Enum):
    """How a toleration matches a taint."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(str, Enum):
    """Taint effect."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """corev1.Toleration."""

    key: str | None = Field(None, max_length=317, description="Taint key; empty with Exists matches all.")
    operator: TolerationOperator | None = Field(None, description="Exists or Equal. Default Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value for Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect to match; empty matches all.")
    tolerationSeconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")


class EnvVar(ApiModel):
    """corev1.EnvVar."""

    name: str = Field(min_length=1, max_length=256, description="Variable name.")
    value: str | None = Field(None, max_length=MAX_STRING, description="Variable value.")
    valueFrom: dict[str, Any] | None = Field(
        None,
        description="Source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
        json_schema_extra=PRESERVE,
    )


class PassResources(ApiModel):
    """Container resources, for every pass and per pass."""

    default: ResourceRequirements | None = Field(
        None,
        description=(
            "Resources of every pass's container. Default: training passes whose system has a gpu "
            "accelerator request nvidia.com/gpu: 1; other passes request CPU only."
        ),
    )
    passes: dict[str, ResourceRequirements] | None = Field(
        None, max_length=MAX_PASSES, description="Resources per pass name, replacing the default."
    )


class KubernetesSettings(ApiModel):
    """Settings of the Jobs that run the passes. Field names and meanings are Kubernetes' own."""

    image: str | None = Field(
        None, max_length=1024, description="Runner image. Default: the operator's --runner-image."
    )
    imagePullPolicy: PullPolicy | None = Field(None, description="Image pull policy.")
    imagePullSecrets: list[str] | None = Field(
        None, max_length=16, description="Names of image pull Secrets in the workflow's namespace."
    )
    serviceAccountName: str | None = Field(
        None, max_length=253, description="Service account of the pass pods. Default: olivekube-runner."
    )
    resources: PassResources | None = Field(None, description="Container resources, default and per pass.")
    nodeSelector: dict[str, str] | None = Field(None, max_length=MAX_LIST, description="Node labels to require.")
    tolerations: list[Toleration] | None = Field(None, max_length=MAX_LIST, description="Pod tolerations.")
    affinity: dict[str, Any] | None = Field(
        None, description="Pod affinity (corev1.Affinity).", json_schema_extra=PRESERVE
    )
    env: list[EnvVar] | None = Field(None, max_length=MAX_LIST, description="Extra environment variables.")
    envFrom: list[dict[str, Any]] | None = Field(
        None,
        max_length=16,
        description="Environment from Secrets or ConfigMaps (corev1.EnvFromSource), e.g. store credentials.",
        json_schema_extra={"items": PRESERVE},
    )
    volumes: list[dict[str, Any]] | None = Field(
        None,
        max_length=16,
        description="Pod volumes (corev1.Volume), e.g. a model cache PersistentVolumeClaim.",
        json_schema_extra={"items": PRESERVE},
    )
    volumeMounts: list[dict[str, Any]] | None = Field(
        None,
        max_length=16,
        description="Mounts of those volumes in the runner container (corev1.VolumeMount).",
        json_schema_extra={"items": PRESERVE},
    )
    priorityClassName: str | None = Field(None, max_length=253, description="Priority class of the pods.")
    queueName: str | None = Field(
        None,
        max_length=253,
        description="Kueue LocalQueue: Jobs get the kueue.x-k8s.io/queue-name label and start suspended.",
    )
    backoffLimit: int | None = Field(
        None, ge=0, le=100, description="Retries of a failed pass before the workflow fails. Default 2."
    )
    activeDeadlineSeconds: int | None = Field(
        None, ge=1, description="Wall-clock limit of one pass attempt, in seconds."
    )
    ttlSecondsAfterFinished: int | None = Field(
        None, ge=0, description="Delete finished Jobs after this many seconds."
    )
