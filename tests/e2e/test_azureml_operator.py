"""The seed's Azure ML workflow through the operator on the real control plane: each pass's pod (run
by the node agent) submits an Azure ML command job with the real SDK to the local stand-in for
Azure and follows it; status, failures and deletion come back to the cluster, and no secret leaks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.azureml import HF_TOKEN, seed_aml_manifest
from tests.helpers.operator import NS, Operator
from tests.helpers.processes import wait_for
from tools.fake_azureml import FakeAzureML

SECRET = "aml-sp"
CONDA_CONFIGMAP = "aml-conda"


@pytest.fixture(scope="module")
def aml_cluster(crd_installed, s3, tmp_path_factory) -> Iterator[tuple[Any, FakeAzureML, Operator, Path]]:  # type: ignore[no-untyped-def]
    cp = crd_installed
    fake = FakeAzureML(polls_to_finish=2).start()
    cp.kubectl("create", "namespace", NS, check=False)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS},
        "stringData": {**fake.credentials(), "HF_TOKEN": HF_TOKEN},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(secret))
    workdir = tmp_path_factory.mktemp("aml")
    conda = workdir / "conda.yaml"
    conda.write_text("name: olivekube\ndependencies:\n  - python=3.11\n")
    # The dispatcher pod uploads the conda file: it must lie on one of the workflow's volumes.
    cp.kubectl("create", "configmap", CONDA_CONFIGMAP, "-n", NS, f"--from-file=conda.yaml={conda}", check=False)
    operator = Operator(cp, s3, workdir)
    operator.start()
    yield cp, fake, operator, conda
    operator.stop()
    fake.stop()


def _manifest(name: str, fake: FakeAzureML, conda: Path) -> dict[str, Any]:
    manifest = seed_aml_manifest(Path("/conda") / conda.name)
    manifest["metadata"] = {"name": name, "namespace": NS}
    spec = manifest["spec"]
    spec["systems"]["aml"]["credentials_secret"] = SECRET
    env = {**fake.env(), **fake.proxy_env(), "OLIVEKUBE_AZUREML_POLL_SECONDS": "0.3"}
    spec["kubernetes"] = {
        "image": "olivekube/runner:test",
        "backoffLimit": 0,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumes": [{"name": "conda", "configMap": {"name": CONDA_CONFIGMAP}}],
        "volumeMounts": [{"name": "conda", "mountPath": "/conda"}],
    }
    return manifest


def _status(cp: Any, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "owf", name, "-n", NS, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _jobs_of(fake: FakeAzureML, workflow: str) -> list[dict[str, Any]]:
    tag = f"{NS}/{workflow}"
    return [j.body for j in fake.jobs.values() if j.body["properties"]["tags"].get("olivekube.io/workflow") == tag]


def _pass_status(cp: Any, name: str, pass_name: str) -> dict[str, Any]:
    return dict((_status(cp, name).get("passes") or {}).get(pass_name) or {})


def _finished(cp: Any, name: str) -> dict[str, Any] | None:
    status = _status(cp, name)
    return status if status.get("phase") in ("Succeeded", "Failed") else None


@pytest.fixture(scope="module")
def seed_aml(aml_cluster) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The seed's workflow, applied once per module (by whichever test needs it first) and finished."""
    cp, fake, _, conda = aml_cluster
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(_manifest("seed-aml", fake, conda)))
    return dict(wait_for(lambda: _finished(cp, "seed-aml"), 240))


def test_the_seeds_aml_workflow_succeeds_through_azure_ml(aml_cluster, seed_aml) -> None:  # type: ignore[no-untyped-def]
    cp, fake, _, _ = aml_cluster
    status = seed_aml
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    jobs = _jobs_of(fake, "seed-aml")
    order = [j["properties"]["tags"]["olivekube.io/pass"] for j in jobs]
    assert order == ["lora", "merge_adapter_weights", "builder"]
    passes = status["passes"]
    lora_uri = passes["lora"]["artifact"]["uri"]
    assert jobs[0]["properties"]["outputs"]["model"]["uri"] == lora_uri
    assert jobs[1]["properties"]["inputs"]["model"]["uri"] == lora_uri
    assert status["outputs"]["uri"] == passes["builder"]["artifact"]["uri"]
    assert all(j["properties"]["environmentVariables"]["HF_TOKEN"] == HF_TOKEN for j in jobs)
    assert "/datastores/workspaceblobstore/paths/olivekube/ml/seed-aml/builder/" in status["outputs"]["uri"]
    assert status["outputs"]["sha256"] == passes["builder"]["artifact"]["sha256"]
    assert len(status["outputs"]["sha256"]) == 64
    assert passes["lora"]["metrics"] == {"train_loss": 1.25}
    assert "Completed" in passes["builder"]["message"]
    # Each pass's pod is a light dispatcher: no GPU requested in the cluster, credentials from the Secret.
    listing = cp.kubectl("get", "jobs", "-n", NS, "-l", "olivekube.io/workflow=seed-aml", "-o", "json")
    for job in json.loads(listing.stdout)["items"]:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"] == {}
        assert {"secretRef": {"name": SECRET}} in container["envFrom"]


def test_a_failed_azure_job_fails_the_workflow_with_azures_message(aml_cluster) -> None:  # type: ignore[no-untyped-def]
    cp, fake, _, conda = aml_cluster
    fake.fail_message = "Execution failed: CUDA out of memory. Tried to allocate 2.00 GiB (seed-aml-fail)"
    try:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(_manifest("seed-aml-fail", fake, conda)))
        status = wait_for(lambda: _finished(cp, "seed-aml-fail"), 180)
    finally:
        fake.fail_message = None
    assert status["phase"] == "Failed"
    assert "CUDA out of memory. Tried to allocate 2.00 GiB (seed-aml-fail)" in status["message"]
    assert status["passes"]["lora"]["phase"] == "Failed"
    assert len(_jobs_of(fake, "seed-aml-fail")) == 1  # backoffLimit 0: one attempt


def _apply_until_its_azure_ml_job_runs(cp: Any, fake: FakeAzureML, conda: Path, name: str) -> str:
    """Apply a workflow whose first Azure ML job does not finish by itself; returns that job's name."""
    fake.polls_to_finish = 10**6
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(_manifest(name, fake, conda)))
    wait_for(lambda: ": Running" in (_pass_status(cp, name, "lora").get("message") or ""), 120)
    return str(_jobs_of(fake, name)[0]["name"])


def test_deleting_a_workflow_cancels_its_azure_ml_job(aml_cluster) -> None:  # type: ignore[no-untyped-def]
    cp, fake, _, conda = aml_cluster
    try:
        name = _apply_until_its_azure_ml_job_runs(cp, fake, conda, "seed-aml-del")
        cp.kubectl("delete", "owf", "seed-aml-del", "-n", NS, "--wait=false")
        wait_for(lambda: fake.jobs[name].cancelled, 60)
    finally:
        fake.polls_to_finish = 2


def test_no_secret_reaches_logs_events_or_status(aml_cluster, seed_aml) -> None:  # type: ignore[no-untyped-def]
    cp, fake, operator, _ = aml_cluster
    assert fake.tokens_issued > 0
    texts = {
        "status": cp.kubectl("get", "owf", "-n", NS, "-o", "yaml").stdout,
        "events": cp.kubectl("get", "events", "-n", NS, "-o", "yaml").stdout,
    }
    for log in operator.workdir.glob("operator-*.log"):
        texts[log.name] = log.read_text(errors="replace")
    pod_logs = list((cp.workdir / "node" / "pods" / NS).glob("seed-aml*/container.log"))
    assert pod_logs
    for log in pod_logs:
        texts[str(log)] = log.read_text(errors="replace")
    assert any("Azure ML job" in t for t in texts.values())  # the texts do talk about the jobs
    for where, text in texts.items():
        assert fake.client_secret not in text, where
        assert HF_TOKEN not in text, where
        assert not re.search(r"fake-token-[0-9a-f]{8}", text), where


def test_suspend_cancels_the_azure_ml_job_and_resume_submits_it_again(aml_cluster) -> None:  # type: ignore[no-untyped-def]
    cp, fake, _, conda = aml_cluster
    try:
        first = _apply_until_its_azure_ml_job_runs(cp, fake, conda, "seed-aml-pause")
        patch = json.dumps({"spec": {"suspend": True}})
        cp.kubectl("patch", "owf", "seed-aml-pause", "-n", NS, "--type=merge", "-p", patch)
        wait_for(lambda: fake.jobs[first].cancelled, 60)
        assert wait_for(lambda: _status(cp, "seed-aml-pause").get("phase") == "Suspended", 30)
    finally:
        fake.polls_to_finish = 2
    cp.kubectl(
        "patch", "owf", "seed-aml-pause", "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"suspend": False}})
    )
    status = wait_for(lambda: _finished(cp, "seed-aml-pause"), 240)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    names = [j["name"] for j in _jobs_of(fake, "seed-aml-pause")]
    # The cancelled job is not followed again: the resumed pass is a new attempt (a Job name never used),
    # and so a new Azure ML job.
    assert names[:2] == [first, first.removesuffix("-0") + "-1"]
    assert len(names) == 4
