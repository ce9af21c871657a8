"""Passes hosted on an AzureML system: the real azure-ai-ml and azure-identity clients against a local
HTTPS stand-in for Azure (tools/fake_azureml.py), and the job's own command run here on a tiny model."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from olivekube.api.workflow import OptimizationWorkflow, parse_workflow
from olivekube.azureml.job import PassAttempt
from olivekube.core.constants import SERVICE_ACCOUNT_DIR
from olivekube.core.errors import PassError
from olivekube.core.pod_paths import TEST_NODE_PATHS_ENV
from tests.helpers.azureml import HF_TOKEN, RG, SUB, WS, seed_aml_manifest
from tools.fake_azureml import FakeAzureML

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake(fake_azureml: FakeAzureML, monkeypatch: pytest.MonkeyPatch) -> FakeAzureML:
    monkeypatch.setenv("OLIVEKUBE_AZUREML_POLL_SECONDS", "0.05")
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    return fake_azureml


@pytest.fixture
def conda_file(tmp_path: Path) -> Path:
    path = tmp_path / "conda.yaml"
    path.write_text("name: olivekube\ndependencies:\n  - python=3.11\n  - pip:\n      - olivekube\n")
    return path


def _dispatch(workflow: OptimizationWorkflow, pass_name: str, previous: str | None, attempt: int = 0) -> str:
    """Run one pass through Azure ML; returns its output URI (whose manifest the fake job wrote)."""
    from olivekube.azureml import dispatch

    states: list[str] = []
    key = workflow.spec.chain_keys()[pass_name]
    at = PassAttempt(
        workflow, "5f0c9a6e-0000-4000-8000-000000000001", pass_name, key, attempt, previous, Path.cwd()
    )
    uri, manifest = dispatch.run_on_azureml(at, lambda name, state: states.append(state))
    assert states[-1] == "Completed", states
    assert states[0] in ("Queued", "Completed")  # submitted now, or found finished
    assert manifest.metadata["pass_name"] == pass_name and manifest.metadata["metrics"]["train_loss"] == 1.25
    return uri


def test_the_seeds_passes_are_submitted_as_command_jobs_and_chained(fake: FakeAzureML, conda_file: Path) -> None:
    workflow = parse_workflow(seed_aml_manifest(conda_file))
    lora = _dispatch(workflow, "lora", None)
    merge = _dispatch(workflow, "merge_adapter_weights", lora)
    builder = _dispatch(workflow, "builder", merge)
    jobs = fake.submitted()
    assert len(jobs) == 3
    first = jobs[0]["properties"]
    assert first["jobType"] == "Command"
    assert first["computeId"].endswith(f"/workspaces/{WS}/computes/gpu-cluster")
    argv = shlex.split(first["command"])
    assert argv[:8] == [
        "olivekube", "runner", "--pass", "lora", "--output", "${{outputs.model}}", "--base", "${{inputs.base}}"
    ]  # fmt: skip
    base = first["inputs"]["base"]
    assert base["jobInputType"] == "mlflow_model"
    assert base["uri"] == "azureml://registries/azureml-msr/models/microsoft/Phi-3-mini-4k-instruct/versions/11"
    data = first["inputs"]["data_0"]
    assert data["jobInputType"] == "uri_file"
    assert data["uri"] == (
        f"azureml://subscriptions/{SUB}/resourcegroups/{RG}/workspaces/{WS}/datastores/workspaceblobstore"
        "/paths/data/tone train.json"
    )
    assert argv[argv.index("--data-file") + 1] == data["uri"] + "=${{inputs.data_0}}"
    output = first["outputs"]["model"]
    assert output["jobOutputType"] == "uri_folder" and output["mode"] == "Upload"
    assert output["uri"] == lora
    assert lora.startswith(f"azureml://subscriptions/{SUB}/resourcegroups/{RG}/workspaces/{WS}/datastores/")
    assert "/workspaceblobstore/paths/olivekube/ml/seed-aml/lora/" in lora
    # The environment: the system's base image and conda file, registered as an anonymous environment.
    env_puts = [r for r in fake.requests if r.method == "PUT" and "/environments/" in r.path]
    env_props = env_puts[0].body["properties"]
    assert env_props["image"] == "mcr.microsoft.com/x:1"
    assert "olivekube" in env_props["condaFile"]
    assert first["environmentId"].split("/environments/")[1].startswith("CliV2AnonymousEnvironment")
    assert first["environmentVariables"]["HF_TOKEN"] == HF_TOKEN  # the seed's hf_token: true
    workflow_env = json.loads(first["environmentVariables"]["OLIVEKUBE_WORKFLOW"])
    assert workflow_env["spec"]["passes"]["lora"]["type"] == "LoRA"
    # Merge takes the adapter (the LoRA job's output) and the base; the builder takes the merged model.
    second = jobs[1]["properties"]
    assert second["inputs"]["model"]["uri"] == lora
    assert second["inputs"]["base"]["jobInputType"] == "mlflow_model"
    third = jobs[2]["properties"]
    assert third["inputs"]["model"]["uri"] == merge and "base" not in third["inputs"]
    assert third["outputs"]["model"]["uri"] == builder
    assert len({lora, merge, builder}) == 3


def test_a_restarted_dispatcher_follows_the_job_it_submitted(fake: FakeAzureML, conda_file: Path) -> None:
    workflow = parse_workflow(seed_aml_manifest(conda_file))
    first = _dispatch(workflow, "lora", None)
    again = _dispatch(workflow, "lora", None)
    assert first == again
    assert len(fake.submitted()) == 1  # the second found the job by its deterministic name
    _dispatch(workflow, "lora", None, attempt=1)
    assert len(fake.submitted()) == 2  # a new attempt is a new job


def test_azure_unreachable_for_a_while_does_not_fail_the_pass(fake: FakeAzureML, conda_file: Path) -> None:
    fake.erroring_after_submit = 3
    _dispatch(parse_workflow(seed_aml_manifest(conda_file)), "lora", None)
    assert fake.erroring_job_reads == 0
    assert len(fake.submitted()) == 1


def test_a_completed_job_without_a_complete_output_fails_the_pass(fake: FakeAzureML, conda_file: Path) -> None:
    fake.write_outputs = False
    with pytest.raises(PassError, match="completed without a complete output"):
        _dispatch(parse_workflow(seed_aml_manifest(conda_file)), "lora", None)


def test_a_failed_azure_job_fails_the_pass_with_azures_message(fake: FakeAzureML, conda_file: Path) -> None:
    fake.fail_message = "Execution failed: CUDA out of memory. Tried to allocate 2.00 GiB"
    workflow = parse_workflow(seed_aml_manifest(conda_file))
    with pytest.raises(PassError) as info:
        _dispatch(workflow, "lora", None)
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in str(info.value)
    assert "failed" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("no-credentials", "spec.systems.aml.credentials_secret", "AZURE_CLIENT_SECRET"),
        ("no-hf-token", "spec.systems.aml.hf_token", "HF_TOKEN is not set"),
        ("wrong-secret", "spec.systems.aml.credentials_secret", "Invalid client secret"),
        ("workspace", "spec.azureml_client.workspace_name", "was not found"),
        ("compute", "spec.systems.aml.aml_compute", "Compute nope not found"),
        ("conda", "spec.systems.aml.aml_docker_config.conda_file_path", "is not a file"),
        (
            "token-as-conda-file",
            "spec.systems.aml.aml_docker_config.conda_file_path",
            "is not on a volume of spec.kubernetes.volumeMounts (mounted: /conda)",
        ),
        ("data", "spec.data_configs.dataset_default_train.load_dataset_config.data_files", "azureml://"),
    ],
)
def test_bad_azure_settings_fail_naming_the_field(
    fake: FakeAzureML,
    conda_file: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    change: str,
    field: str,
    words: str,
) -> None:
    manifest = seed_aml_manifest(conda_file)
    spec = manifest["spec"]
    if change == "token-as-conda-file":  # a dispatcher pod would upload its own service account token
        account, volume = tmp_path / "account", tmp_path / "volume"
        account.mkdir()
        volume.mkdir()
        (account / "namespace").write_text("ml")
        (account / "token").write_text("the pod's token")
        monkeypatch.setenv(
            TEST_NODE_PATHS_ENV, json.dumps({SERVICE_ACCOUNT_DIR: str(account), "/conda": str(volume)})
        )
        spec["kubernetes"] = {
            "volumes": [{"name": "conda", "configMap": {"name": "conda"}}],
            "volumeMounts": [{"name": "conda", "mountPath": "/conda"}],
        }
        spec["systems"]["aml"]["aml_docker_config"]["conda_file_path"] = f"{SERVICE_ACCOUNT_DIR}/token"
    if change == "no-credentials":
        os.environ.pop("AZURE_CLIENT_SECRET")
    elif change == "no-hf-token":
        os.environ.pop("HF_TOKEN")
    elif change == "wrong-secret":
        os.environ["AZURE_CLIENT_SECRET"] = "not-the-secret"
    elif change == "workspace":
        spec["azureml_client"]["workspace_name"] = "missing-ws"
    elif change == "compute":
        spec["systems"]["aml"]["aml_compute"] = "nope"
    elif change == "conda":
        spec["systems"]["aml"]["aml_docker_config"]["conda_file_path"] = "/nonexistent/conda.yaml"
    elif change == "data":
        spec["data_configs"][0]["load_dataset_config"]["data_files"] = "/local/only/train.json"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PassError) as info:
        _dispatch(parse_workflow(manifest), "lora", None)
    assert info.value.field == field, str(info.value)
    assert words in str(info.value)
    assert fake.submitted() == []
    for text in (str(info.value), caplog.text):
        assert fake.client_secret not in text and HF_TOKEN not in text
        assert not re.search(r"fake-token-[0-9a-f]{8}", text)


def test_the_jobs_command_runs_the_seeds_passes_here(tiny_models, tmp_path: Path, conda_file: Path) -> None:  # type: ignore[no-untyped-def]
    """What Azure ML would run, with its ${{inputs.*}} mounted here: LoRA → merge → int4 on a tiny Phi-3."""
    from olivekube.azureml.job import plan_job

    rows = [{"Question": f"What is {i} plus one?", "Best Answer": f"It is {i + 1}."} for i in range(40)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(rows))
    manifest = seed_aml_manifest(conda_file)
    lora = manifest["spec"]["passes"]["lora"]
    lora["training_args"].update(max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=1)
    manifest["spec"]["data_configs"][0]["pre_process_data_config"]["max_seq_len"] = 64
    manifest["spec"]["passes"]["builder"]["precision"] = "int4"
    workflow = parse_workflow(manifest)
    keys = workflow.spec.chain_keys()
    # The MLflow layout Azure ML mounts for a registry model: data/model inside.
    mlflow = tmp_path / "registry-model"
    (mlflow / "data").mkdir(parents=True)
    (mlflow / "data" / "model").symlink_to(tiny_models["phi3"], target_is_directory=True)
    (mlflow / "MLmodel").write_text("flavors: {}\n")
    previous: str | None = None
    previous_output: Path | None = None
    outputs: dict[str, Path] = {}
    for name in workflow.spec.ordered_pass_names():
        plan = plan_job(PassAttempt(workflow, "uid-0001", name, keys[name], 0, previous, tmp_path))
        mounts = {"${{outputs.model}}": str(tmp_path / "out" / name), "${{inputs.base}}": str(mlflow)}
        if previous_output is not None:
            mounts["${{inputs.model}}"] = str(previous_output)
        for input_name in plan.data_inputs.values():
            mounts[f"${{{{inputs.{input_name}}}}}"] = str(data)
        command = plan.command
        for placeholder, path in mounts.items():
            command = command.replace(placeholder, path)
        assert "${{" not in command
        argv = shlex.split(command)
        assert argv[:2] == ["olivekube", "runner"]
        run = subprocess.run(
            [sys.executable, "-m", "olivekube.cli", *argv[1:]],
            env={**os.environ, **plan.environment_variables, "CUDA_VISIBLE_DEVICES": ""},
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        outputs[name] = tmp_path / "out" / name
        manifest_file = json.loads((outputs[name] / "olivekube-manifest.json").read_text())
        assert manifest_file["metadata"]["pass_name"] == name
        previous, previous_output = plan.output_uri, outputs[name]
    final = json.loads((outputs["builder"] / "olivekube-manifest.json").read_text())
    assert final["metadata"]["precision"] == "int4"
    import onnx

    graph = onnx.load(str(outputs["builder"] / "model.onnx"), load_external_data=False).graph
    assert any(node.op_type == "MatMulNBits" for node in graph.node)


def test_the_network_guard_of_these_tests_refuses_real_azure(no_network: None) -> None:
    import socket

    with pytest.raises(ConnectionRefusedError):
        socket.getaddrinfo("login.microsoftonline.com", 443)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("20.190.160.1", 443), timeout=1)
