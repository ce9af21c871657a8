"""Systems: where a pass runs (host) and what the model is built for (target)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import Field, field_validator

from olivekube.api.common import MAX_LIST, MAX_STRING, ApiModel
from olivekube.api.kubernetes import ResourceRequirements, Toleration


class Device(str, Enum):
    """Accelerator device kind."""

    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"


class ExecutionProvider(str, Enum):
    """onnxruntime execution providers that onnxruntime-genai's model builder can target."""

    CPU = "CPUExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    DML = "DmlExecutionProvider"
    WEBGPU = "WebGpuExecutionProvider"
    NV_TENSORRT_RTX = "NvTensorRTRTXExecutionProvider"


class Accelerator(ApiModel):
    """One accelerator of a system and the execution providers to build for."""

    device: Device = Field(
        Device.CPU,
        description="Device kind: cpu, gpu or npu (any case, as Olive). Default: cpu.",
        json_schema_extra={"enum": [*(d.value for d in Device), *(d.value.upper() for d in Device)]},
    )
    execution_providers: list[ExecutionProvider] | None = Field(
        None,
        max_length=8,
        description="Execution providers, in order of preference. Default: the device's usual one.",
    )

    @field_validator("device", mode="before")
    @classmethod
    def _device_any_case(cls, v: object) -> object:
        """Olive accepts CPU and cpu alike."""
        return v.lower() if isinstance(v, str) else v


Accelerators = Annotated[
    list[Accelerator] | None,
    Field(max_length=4, description="Accelerators of this system. Default: one CPU."),
]


class LocalSystem(ApiModel):
    """The machine that runs the pass: the Job's pod in a cluster, this machine for `olivekube run`."""

    type: Literal["LocalSystem"] = Field(description="System type.")
    accelerators: Accelerators = None
    hf_token: bool | None = Field(None, description="Pass the HF_TOKEN environment variable to the pass.")


class KubernetesSystem(ApiModel):
    """A Kubernetes Job with its own scheduling settings (olivekube's default system)."""

    type: Literal["Kubernetes"] = Field(description="System type.")
    accelerators: Accelerators = None
    hf_token: bool | None = Field(None, description="Pass the HF_TOKEN environment variable to the pass.")
    nodeSelector: dict[str, str] | None = Field(
        None, max_length=MAX_LIST, description="Node labels for passes hosted on this system."
    )
    tolerations: list[Toleration] | None = Field(
        None, max_length=MAX_LIST, description="Tolerations for passes hosted on this system."
    )
    resources: ResourceRequirements | None = Field(
        None, description="Container resources for passes hosted on this system."
    )


class AzureMLClient(ApiModel):
    """The Azure ML workspace to use."""

    subscription_id: str = Field(min_length=1, max_length=128, description="Azure subscription id.")
    resource_group: str = Field(min_length=1, max_length=128, description="Resource group of the workspace.")
    workspace_name: str = Field(min_length=1, max_length=128, description="Azure ML workspace name.")


class AzureMLDockerConfig(ApiModel):
    """The environment image of an Azure ML job."""

    _unsupported_keys = {
        "dockerfile": "olivekube builds no image on Azure ML: give base_image (and conda_file_path) "
        "or aml_environment_config",
        "build_context_path": "olivekube builds no image on Azure ML: give base_image (and conda_file_path) "
        "or aml_environment_config",
    }

    base_image: str | None = Field(None, max_length=MAX_STRING, description="Base Docker image.")
    conda_file_path: str | None = Field(
        None,
        max_length=MAX_STRING,
        description=(
            "Conda file for the image. In a cluster it must lie on a volume of spec.kubernetes.volumeMounts "
            "(a ConfigMap, say): the dispatcher pod uploads it."
        ),
    )


class AzureMLEnvironmentConfig(ApiModel):
    """A registered Azure ML environment."""

    name: str = Field(min_length=1, max_length=256, description="Environment name.")
    version: str | None = Field(None, max_length=64, description="Environment version.")
    label: str | None = Field(None, max_length=64, description="Environment label, e.g. latest.")


class AzureMLSystem(ApiModel):
    """Azure ML compute: the pass runs as an Azure ML command job (Olive removed this system in 0.10)."""

    type: Literal["AzureML"] = Field(description="System type.")
    accelerators: Accelerators = None
    aml_compute: str = Field(min_length=1, max_length=256, description="Azure ML compute target name.")
    aml_docker_config: AzureMLDockerConfig | None = Field(None, description="Environment built from an image.")
    aml_environment_config: AzureMLEnvironmentConfig | None = Field(
        None, description="A registered environment (instead of aml_docker_config)."
    )
    azureml_client: AzureMLClient | None = Field(
        None, description="Workspace for this system. Default: spec.azureml_client."
    )
    hf_token: bool | None = Field(None, description="Pass the HF_TOKEN environment variable to the pass.")
    instance_count: int | None = Field(None, ge=1, le=64, description="Nodes for the job. Default 1.")
    tags: dict[str, str] | None = Field(None, max_length=MAX_LIST, description="Tags on the Azure ML job.")
    credentials_secret: str | None = Field(
        None,
        max_length=253,
        description=(
            "Kubernetes Secret with AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET. "
            "Default: workload identity of the runner's service account."
        ),
    )


SYSTEM_TYPES: dict[str, type[ApiModel]] = {
    "LocalSystem": LocalSystem,
    "Kubernetes": KubernetesSystem,
    "AzureML": AzureMLSystem,
}

System = Annotated[LocalSystem | KubernetesSystem | AzureMLSystem, Field(discriminator="type")]
