"""The Azure ML command job of one pass attempt, built from the workflow (no network).

The job runs `olivekube runner --pass NAME` in the workflow's environment on `aml_compute`. Its
inputs are azureml:// URIs that Azure ML mounts (the previous pass's output, the input model, the
training data); its output folder lands at an azureml:// datastore path keyed by the pass's chain
key, uploaded by Azure ML when the job completes, so a half-written model never sits there.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olivekube.api.systems import AzureMLClient, AzureMLSystem
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.artifact import is_hub_id
from olivekube.core.constants import LABEL_ATTEMPT, LABEL_KEY, LABEL_PASS, LABEL_WORKFLOW, WORKFLOW_ENV
from olivekube.core.errors import PassError
from olivekube.core.pod_paths import pod_path
from olivekube.kube import namespace_of_pod
from olivekube.storage.outputs import version_uri

DEFAULT_DATASTORE = "workspaceblobstore"
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow")


@dataclass
class JobPlan:
    """What the job needs, before it becomes an azure-ai-ml object (kept plain for tests)."""

    name: str
    command: str
    compute: str
    image: str | None
    conda_file: str | None
    environment: str | None
    inputs: dict[str, dict[str, str]]
    output_uri: str
    environment_variables: dict[str, str]
    tags: dict[str, str]
    instance_count: int
    experiment_name: str
    workspace: AzureMLClient
    display_name: str = ""
    data_inputs: dict[str, str] = field(default_factory=dict)  # original URI → input name


def azureml_system(workflow: OptimizationWorkflow, pass_name: str) -> tuple[str, AzureMLSystem] | None:
    """The AzureML system hosting this pass, if it is one."""
    system = workflow.spec.host_system(pass_name)
    return (workflow.spec.host_name(pass_name) or "", system) if isinstance(system, AzureMLSystem) else None


def aml_job_name(workflow: str, uid: str, pass_name: str, key: str, attempt: int) -> str:
    """Deterministic, so a dispatcher restarted mid-attempt follows the job it submitted."""
    base = re.sub(r"[^a-z0-9_-]", "-", f"olivekube-{workflow}-{pass_name}".lower())[:200]
    return f"{base}-{uid[:8]}-{key[:12]}-{attempt}"


def _model_input(uri: str, model_format: str | None, field_name: str) -> dict[str, str]:
    if not uri.startswith("azureml://") and not uri.startswith("azureml:"):
        raise PassError(
            field_name,
            f"{uri} cannot be read by an Azure ML job; use an azureml:// URI (a registry model or a "
            "datastore path) or a Hugging Face id",
        )
    if model_format == "PyTorch.MLflow":
        return {"type": "mlflow_model", "path": uri}
    if "/models/" in uri or (uri.startswith("azureml:") and not uri.startswith("azureml://")):
        return {"type": "custom_model", "path": uri}
    return {"type": "uri_folder", "path": uri}


@dataclass(frozen=True)
class PassAttempt:
    """One attempt of one pass, as its dispatcher pod knows it."""

    workflow: OptimizationWorkflow
    uid: str  # the workflow's
    pass_name: str
    key: str  # the pass's chain key
    attempt: int
    previous_uri: str | None  # the previous pass's output
    base_dir: Path  # where relative paths (the conda file) are resolved


def _model_inputs(at: PassAttempt, args: list[str]) -> dict[str, dict[str, str]]:
    """The input model (when the pass reads it) and the previous pass's output, as job inputs."""
    spec = at.workflow.spec
    previous = spec.previous_pass(at.pass_name)
    inputs: dict[str, dict[str, str]] = {}
    model = spec.input_model
    needs_base = previous is None or spec.passes[previous].trains
    if needs_base and not is_hub_id(model.model_path):
        inputs["base"] = _model_input(model.model_path, model.model_file_format, "spec.input_model.model_path")
        args += ["--base", "${{inputs.base}}"]
    if previous is not None:
        if not at.previous_uri:
            raise PassError(f"status.passes.{previous}.artifact", "the previous pass has no artifact yet")
        inputs["model"] = _model_input(at.previous_uri, None, f"status.passes.{previous}.artifact.uri")
        args += ["--model", "${{inputs.model}}"]
    return inputs


def _data_inputs(at: PassAttempt, inputs: dict[str, dict[str, str]], args: list[str]) -> dict[str, str]:
    """The pass's data files as job inputs; returns original URI → input name."""
    data_inputs: dict[str, str] = {}
    for config in at.workflow.spec.pass_data_configs(at.pass_name):
        for uri in config.load_dataset_config.listed_files():
            if uri in data_inputs:
                continue
            if not uri.startswith("azureml://"):
                raise PassError(
                    f"spec.data_configs.{config.name}.load_dataset_config.data_files",
                    f"{uri} cannot be read by an Azure ML job; use an azureml:// datastore URI",
                )
            input_name = f"data_{len(data_inputs)}"
            data_inputs[uri] = input_name
            kind = "uri_file" if uri.lower().endswith(FILE_SUFFIXES) else "uri_folder"
            inputs[input_name] = {"type": kind, "path": uri}
            args += ["--data-file", f"{uri}=${{{{inputs.{input_name}}}}}"]
    return data_inputs


def _output_uri(at: PassAttempt, workspace: AzureMLClient) -> str:
    """For the last pass, a version folder of output_dir when it is an azureml:// path (the
    dispatcher points to it once the job completed); else a datastore path keyed by the chain key."""
    spec, meta = at.workflow.spec, at.workflow.metadata
    if spec.is_last_pass(at.pass_name) and spec.output_dir and spec.output_dir.startswith("azureml://"):
        return version_uri(spec.output_dir, at.key[:16]) + "/"
    return (  # the full form, which the azureml:// store reads outside Azure ML too
        f"azureml://subscriptions/{workspace.subscription_id}/resourcegroups/{workspace.resource_group}"
        f"/workspaces/{workspace.workspace_name}/datastores/{DEFAULT_DATASTORE}/paths/olivekube/"
        f"{meta.namespace or 'default'}/{meta.name}/{at.pass_name}/{at.key[:32]}/"
    )


def _outside_mounted_volumes(path: Path, mounts: list[str]) -> str | None:
    """Why a file the dispatcher pod would upload may not be read: it must lie, symbolic links
    resolved, on one of the workflow's own volumes (volumeMounts, which only a user who may create
    Jobs sets), never elsewhere in the pod (its service account token, the image's files). `path` is
    as this process sees it (pod_path)."""
    real = path.resolve()
    for mount in mounts:
        root = pod_path(mount).resolve()
        if real == root or root in real.parents:
            return None
    mounted = ", ".join(mounts) or "none"
    return f"{path} is not on a volume of spec.kubernetes.volumeMounts (mounted: {mounted}); mount it there"


def _environment(
    system: AzureMLSystem, where: str, base_dir: Path, mounts: list[str], in_pod: bool
) -> tuple[str | None, str | None, str | None]:
    """(image, conda file, registered environment) of the job, from the system's config. In a pod the
    conda file must lie on one of the workflow's volumes (`mounts`)."""
    if system.aml_environment_config is not None:
        env_cfg = system.aml_environment_config
        label = f"{env_cfg.name}@{env_cfg.label}" if env_cfg.label else f"{env_cfg.name}:{env_cfg.version}"
        return None, None, label
    docker = system.aml_docker_config
    if docker is None or not docker.base_image:
        raise PassError(
            f"{where}.aml_docker_config",
            "an AzureML system needs aml_docker_config.base_image or aml_environment_config",
        )
    if not docker.conda_file_path:
        return docker.base_image, None, None
    conda_path = Path(docker.conda_file_path).expanduser()
    conda_path = conda_path if conda_path.is_absolute() else base_dir / conda_path
    conda_path = pod_path(str(conda_path)) if in_pod else conda_path
    problem = _outside_mounted_volumes(conda_path, mounts) if in_pod else None
    if problem:
        raise PassError(f"{where}.aml_docker_config.conda_file_path", problem)
    if not conda_path.is_file():
        raise PassError(
            f"{where}.aml_docker_config.conda_file_path",
            f"{conda_path} is not a file where the pass is submitted (mount it, e.g. from a ConfigMap)",
        )
    return docker.base_image, str(conda_path), None


def plan_job(at: PassAttempt) -> JobPlan:
    """Everything the job needs; PassError naming the field when Azure ML cannot run the pass."""
    workflow, pass_name = at.workflow, at.pass_name
    found = azureml_system(workflow, pass_name)
    if found is None:
        raise PassError(f"spec.passes.{pass_name}.host", "not an AzureML system")
    system_name, system = found
    where = f"spec.systems.{system_name}"
    workspace = system.azureml_client or workflow.spec.azureml_client
    if workspace is None:
        raise PassError(f"{where}.azureml_client", "an AzureML system needs azureml_client here or in spec")
    args = ["olivekube", "runner", "--pass", pass_name, "--output", "${{outputs.model}}"]
    inputs = _model_inputs(at, args)
    data_inputs = _data_inputs(at, inputs, args)
    output_uri = _output_uri(at, workspace)
    k8s = workflow.spec.kubernetes
    mounts = [m.mountPath for m in (k8s.volumeMounts if k8s else None) or []]
    image, conda, environment = _environment(system, where, at.base_dir, mounts, namespace_of_pod() is not None)
    meta = workflow.metadata
    manifest = {
        "apiVersion": workflow.apiVersion,
        "kind": workflow.kind,
        "metadata": {"name": meta.name, "namespace": meta.namespace},
        "spec": workflow.spec.dump(),
    }
    return JobPlan(
        name=aml_job_name(meta.name, at.uid, pass_name, at.key, at.attempt),
        command=shlex.join(args),  # Azure ML fills ${{...}} in textually, inside the quotes too
        compute=system.aml_compute,
        image=image,
        conda_file=conda,
        environment=environment,
        inputs=inputs,
        output_uri=output_uri,
        environment_variables={WORKFLOW_ENV: json.dumps(manifest, sort_keys=True)},
        tags={
            LABEL_WORKFLOW: f"{meta.namespace}/{meta.name}",
            LABEL_PASS: pass_name,
            LABEL_KEY: at.key[:16],
            LABEL_ATTEMPT: str(at.attempt),
            **(system.tags or {}),
        },
        instance_count=system.instance_count or 1,
        experiment_name=re.sub(r"[^A-Za-z0-9_-]", "-", f"olivekube-{meta.name}")[:250],
        workspace=workspace,
        display_name=f"{meta.name} / {pass_name} (attempt {at.attempt + 1})",
        data_inputs=data_inputs,
    )


def to_command_job(plan: JobPlan) -> Any:
    """The azure-ai-ml CommandJob of a plan."""
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import Environment

    environment: Any = plan.environment
    if environment is None:
        environment = Environment(image=plan.image, conda_file=plan.conda_file)
    return command(
        name=plan.name,
        display_name=plan.display_name,
        experiment_name=plan.experiment_name,
        command=plan.command,
        environment=environment,
        compute=plan.compute,
        instance_count=plan.instance_count,
        inputs={k: Input(type=v["type"], path=v["path"], mode="ro_mount") for k, v in plan.inputs.items()},
        outputs={"model": Output(type="uri_folder", path=plan.output_uri, mode="upload")},
        environment_variables=plan.environment_variables,
        tags=plan.tags,
    )
