"""`spec.kubernetes`: settings of the Jobs that run passes, with Kubernetes' own field names."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from olivekube.api.common import MAX_LIST, MAX_PASSES, MAX_STRING, PRESERVE, ApiModel
from olivekube.core.constants import (
    ATTEMPT_ENV,
    MASTER_ADDR_ENV,
    NPROC_PER_NODE_ENV,
    NUM_NODES_ENV,
    PVC_MOUNTS_ENV,
    SCRATCH_DIR,
    SCRATCH_VOLUME,
    WORKFLOW_ENV,
)


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


OPERATOR_ENV_NAMES = (
    "HOME", "TMPDIR", ATTEMPT_ENV, NPROC_PER_NODE_ENV, NUM_NODES_ENV, MASTER_ADDR_ENV, WORKFLOW_ENV,
    PVC_MOUNTS_ENV,
)  # fmt: skip
"""Set by the operator in runner containers (the scratch space, the attempt, the training topology,
the mounted claims): a workflow's env may not name them, whoever wrote it."""

GUARDED_ENV_PREFIXES = (
    "OLIVEKUBE_", "AWS_", "AZURE_", "ARM_", "AZUREML_", "MSI_", "IDENTITY_", "GOOGLE_", "HF_", "HUGGING_FACE_",
    "KUBERNETES_", "LD_", "PYTHON", "SSL_", "REQUESTS_", "CURL_", "NCCL_", "TORCHELASTIC_",
)  # fmt: skip
GUARDED_ENV_NAMES = (
    "HOME", "TMPDIR", "PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
    "https_proxy", "no_proxy", "all_proxy", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE",
    "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
)  # fmt: skip
"""Variables that the runner, its libraries or the stores read to find credentials, endpoints, code or
peers: only a user who may create Jobs in the namespace may set them (the chart's admission policy;
its lists are these). Others (TOKENIZERS_PARALLELISM, OMP_NUM_THREADS) are every author's to set."""


def guarded_env_name(name: str) -> bool:
    return name in GUARDED_ENV_NAMES or name.startswith(GUARDED_ENV_PREFIXES)


class EnvVar(ApiModel):
    """corev1.EnvVar."""

    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!(self.name in {list(OPERATOR_ENV_NAMES)})",
                    "message": f"the operator sets these in runner pods: {', '.join(OPERATOR_ENV_NAMES)}",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=256, description="Variable name.")
    value: str | None = Field(None, max_length=MAX_STRING, description="Variable value.")
    valueFrom: dict[str, Any] | None = Field(
        None,
        description="Source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
        json_schema_extra=PRESERVE,
    )

    @model_validator(mode="after")
    def _not_the_operators(self) -> EnvVar:
        if self.name in OPERATOR_ENV_NAMES:
            owned = ", ".join(OPERATOR_ENV_NAMES)
            raise ValueError(f"name: {self.name} is the operator's to set in runner pods ({owned})")
        return self


class NameRef(ApiModel):
    """A reference by name to an object in the workflow's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Object name.")
    optional: bool | None = Field(None, description="Whether the object may be missing.")


class EnvFromSource(ApiModel):
    """corev1.EnvFromSource: every key of a Secret or ConfigMap as environment variables."""

    prefix: str | None = Field(None, max_length=256, description="Prefix of every variable name.")
    secretRef: NameRef | None = Field(None, description="The Secret.")
    configMapRef: NameRef | None = Field(None, description="The ConfigMap.")


class KeyToPath(ApiModel):
    """One key of a Secret or ConfigMap as a file."""

    key: str = Field(min_length=1, max_length=253, description="The key.")
    path: str = Field(min_length=1, max_length=4096, description="Relative file path.")
    mode: int | None = Field(None, ge=0, le=511, description="File mode bits.")


class SecretVolumeSource(ApiModel):
    """corev1.SecretVolumeSource."""

    secretName: str = Field(min_length=1, max_length=253, description="Secret in the workflow's namespace.")
    items: list[KeyToPath] | None = Field(None, max_length=MAX_LIST, description="Keys to project.")
    defaultMode: int | None = Field(None, ge=0, le=511, description="File mode bits.")
    optional: bool | None = Field(None, description="Whether the Secret may be missing.")


class ConfigMapVolumeSource(ApiModel):
    """corev1.ConfigMapVolumeSource."""

    name: str = Field(min_length=1, max_length=253, description="ConfigMap in the workflow's namespace.")
    items: list[KeyToPath] | None = Field(None, max_length=MAX_LIST, description="Keys to project.")
    defaultMode: int | None = Field(None, ge=0, le=511, description="File mode bits.")
    optional: bool | None = Field(None, description="Whether the ConfigMap may be missing.")


class PersistentVolumeClaimVolumeSource(ApiModel):
    """corev1.PersistentVolumeClaimVolumeSource."""

    claimName: str = Field(min_length=1, max_length=253, description="Claim in the workflow's namespace.")
    readOnly: bool | None = Field(None, description="Mount read-only.")


class EmptyDirVolumeSource(ApiModel):
    """corev1.EmptyDirVolumeSource."""

    medium: Literal["", "Memory"] | None = Field(None, description="Storage medium: node disk or Memory.")
    sizeLimit: int | str | None = Field(
        None, description="Size limit, e.g. 10Gi.", json_schema_extra={"x-kubernetes-int-or-string": True}
    )


class CSIVolumeSource(ApiModel):
    """corev1.CSIVolumeSource (an inline CSI volume)."""

    driver: str = Field(min_length=1, max_length=253, description="CSI driver name.")
    readOnly: bool | None = Field(None, description="Mount read-only.")
    fsType: str | None = Field(None, max_length=63, description="File system type.")
    volumeAttributes: dict[str, str] | None = Field(
        None, max_length=MAX_LIST, description="Driver-specific attributes."
    )
    nodePublishSecretRef: NameRef | None = Field(None, description="Secret passed to the driver.")


class EphemeralVolumeSource(ApiModel):
    """corev1.EphemeralVolumeSource: a claim made for the pod and deleted with it."""

    volumeClaimTemplate: dict[str, Any] = Field(
        description="The claim's template (corev1.PersistentVolumeClaimTemplate).", json_schema_extra=PRESERVE
    )


VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "csi", "ephemeral")


class Volume(ApiModel):
    """A pod volume of one of the kinds the restricted Pod Security Standard allows; hostPath and
    the other node-level kinds cannot be written here."""

    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "["
                    + ", ".join(f"has(self.{k})" for k in VOLUME_SOURCES)
                    + "].filter(x, x).size() == 1",
                    "message": "a volume needs exactly one of " + ", ".join(VOLUME_SOURCES),
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=63, description="Volume name, as volumeMounts refer to it.")
    persistentVolumeClaim: PersistentVolumeClaimVolumeSource | None = Field(None, description="A claim.")
    configMap: ConfigMapVolumeSource | None = Field(None, description="A ConfigMap's keys as files.")
    secret: SecretVolumeSource | None = Field(None, description="A Secret's keys as files.")
    emptyDir: EmptyDirVolumeSource | None = Field(None, description="An empty folder for the pod's life.")
    csi: CSIVolumeSource | None = Field(None, description="An inline CSI volume.")
    ephemeral: EphemeralVolumeSource | None = Field(None, description="A claim made for the pod.")

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        given = [k for k in VOLUME_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a volume needs exactly one of {', '.join(VOLUME_SOURCES)} (given: {len(given)})")
        return self


class VolumeMount(ApiModel):
    """corev1.VolumeMount (no mount propagation: it needs a privileged container)."""

    name: str = Field(min_length=1, max_length=63, description="Name of a volume in spec.kubernetes.volumes.")
    mountPath: str = Field(
        min_length=1, max_length=4096, pattern=r"^/", description="Absolute path in the container."
    )
    subPath: str | None = Field(None, max_length=4096, description="Sub-path of the volume to mount.")
    readOnly: bool | None = Field(None, description="Mount read-only.")


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


class Parallelism(ApiModel):
    """How many processes train a pass together (Kubeflow Trainer's names)."""

    numNodes: int | None = Field(
        None,
        ge=1,
        le=64,
        description=(
            "Pods that train the pass together: an Indexed Job whose pods meet at pod 0 through a "
            "headless Service. Default 1."
        ),
    )
    numProcPerNode: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Training processes per pod (data-parallel). Default: the GPUs the pod asks for, else 1.",
    )


class TrainingParallelism(ApiModel):
    """Data-parallel training (torchrun), for every training pass and per pass."""

    default: Parallelism | None = Field(None, description="For every training pass.")
    passes: dict[str, Parallelism] | None = Field(
        None, max_length=MAX_PASSES, description="Per training pass name, replacing the default."
    )

    def for_pass(self, name: str) -> Parallelism:
        return (self.passes or {}).get(name) or self.default or Parallelism()


class SearchSettings(ApiModel):
    """How a search runs in the cluster (Katib's names in parentheses)."""

    parallelTrials: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Trials (each a workflow of its own) running at once (Katib: parallelTrialCount). Default 1.",
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
    envFrom: list[EnvFromSource] | None = Field(
        None,
        max_length=16,
        description="Environment from Secrets or ConfigMaps (corev1.EnvFromSource), e.g. store credentials.",
    )
    volumes: list[Volume] | None = Field(
        None,
        max_length=16,
        description=(
            "Pod volumes: persistentVolumeClaim, configMap, secret, emptyDir, csi or ephemeral "
            "(e.g. a model cache claim)."
        ),
    )
    volumeMounts: list[VolumeMount] | None = Field(
        None, max_length=16, description="Mounts of those volumes in the runner container."
    )
    training: TrainingParallelism | None = Field(
        None, description="Processes and pods per training pass (data-parallel, torchrun). Default: one process."
    )
    search: SearchSettings | None = Field(None, description="How spec.search_strategy's trials run here.")
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
    startTimeoutSeconds: int | None = Field(
        None,
        ge=1,
        description=(
            "How long a pass's pods may wait to start (unschedulable, an image that cannot be pulled yet)"
            " before the workflow fails with the reason. At most the operator's own limit (chart value"
            " runner.startTimeoutSeconds); a larger value is held to it."
        ),
    )

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> KubernetesSettings:
        names = [v.name for v in self.volumes or []]
        for i, mount in enumerate(self.volumeMounts or []):
            if mount.name not in names:
                raise ValueError(
                    f"volumeMounts.{i}.name: {mount.name!r} is not in volumes (known: {names or 'none'})"
                )
            if mount.mountPath.rstrip("/") == SCRATCH_DIR:
                raise ValueError(f"volumeMounts.{i}.mountPath: {SCRATCH_DIR} is the runner's scratch space")
        if SCRATCH_VOLUME in names:
            raise ValueError(f"volumes: the name {SCRATCH_VOLUME} is the runner's own")
        return self
