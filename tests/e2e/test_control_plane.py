"""The real control plane behaves as a cluster does: CRD schema and CEL, status subresource,
the Job controller through the node agent, garbage collection, helm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from olivekube.api.olive_config import to_manifest
from tests.helpers.manifests import BAD, REPO, valid_manifest
from tests.helpers.processes import wait_for


def apply(cp, doc: dict, *args: str, check: bool = False):  # type: ignore[no-untyped-def]
    return cp.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump(doc), check=check)


def test_crd_is_accepted_as_structural(crd_installed) -> None:  # type: ignore[no-untyped-def]
    out = crd_installed.kubectl("get", "crd", "optimizationworkflows.olivekube.io", "-o", "json")
    conditions = {c["type"]: c for c in json.loads(out.stdout)["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions.get("NonStructuralSchema", {}).get("status") != "True"
    # The API server publishes the CRD's OpenAPI a moment after it is Established.
    explain = wait_for(lambda: crd_installed.kubectl("explain", "owf.spec.passes.r", check=False).stdout, 30)
    assert "LoRA rank" in explain


@pytest.mark.parametrize("config", sorted((REPO / "examples" / "olive").glob("*.json")), ids=lambda p: p.name)
def test_converted_examples_apply(crd_installed, config: Path) -> None:  # type: ignore[no-untyped-def]
    manifest, _ = to_manifest(json.loads(config.read_text()), config.stem.replace("_", "-"), "default")
    result = apply(crd_installed, manifest, "--dry-run=server")
    assert result.returncode == 0, result.stderr


# What only the models can check: chain and stage rules, int4 options on other precisions, legacy keys whose
# messages teach, and documents that are not manifests (kubectl refuses those before the server sees them).
MODEL_ONLY = {
    "int4 option on fp32",
    "merge without adapter",
    "two training passes",
    "empty text_cols",
    "duplicate data names",
    "AzureML without workspace",
    "extract adapters of a merged model",
    # training_args keeps every transformers key (the API server preserves unknown ones, and CEL cannot
    # name an undeclared field): the models refuse Olive's legacy name, the operator with an event.
    "legacy evaluation_strategy",
    # search_strategy may be true, false or a mapping, and a search parameter stands where a typed
    # option is: both are open JSON to the API server; the models (and the operator) check them.
    "unknown sampler",
    "search of no pass",
    "search of no option",
    "search of a plain value",
    "search of the pass type",
}


@pytest.mark.parametrize(("name", "mutate", "path"), [b for b in BAD if b[0] not in MODEL_ONLY], ids=lambda b: b)
def test_api_server_rejects_bad_manifests_naming_the_field(crd_installed, name, mutate, path) -> None:  # type: ignore[no-untyped-def]
    doc = valid_manifest()
    doc["metadata"]["namespace"] = "default"
    mutate(doc)
    result = apply(crd_installed, doc, "--dry-run=server")
    assert result.returncode != 0, f"{name}: accepted by the API server"
    field = path.split(".")[-1] if not path.split(".")[-1].isdigit() else path.split(".")[-2]
    if field in ("apiVersion", "kind"):  # kubectl itself refuses a kind the server does not serve
        assert "no matches for kind" in result.stderr, result.stderr
    else:
        assert field in result.stderr, result.stderr


def test_valid_manifest_is_accepted_by_the_api_server(crd_installed) -> None:  # type: ignore[no-untyped-def]
    doc = valid_manifest()
    doc["metadata"]["namespace"] = "default"
    result = apply(crd_installed, doc, "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_status_subresource_separates_spec_and_status(crd_installed) -> None:  # type: ignore[no-untyped-def]
    cp = crd_installed
    doc = valid_manifest()
    doc["metadata"] = {"name": "subresource", "namespace": "default"}
    apply(cp, doc, check=True)
    patch = json.dumps({"spec": {"suspend": True}, "status": {"phase": "Running", "currentPass": "lora"}})
    cp.kubectl("patch", "owf", "subresource", "--subresource=status", "--type=merge", "-p", patch)
    got = json.loads(cp.kubectl("get", "owf", "subresource", "-o", "json").stdout)
    assert got["status"]["phase"] == "Running"
    assert "suspend" not in got["spec"], "a status write changed spec"
    patch = json.dumps({"spec": {"suspend": True}, "status": {"phase": "Failed"}})
    cp.kubectl("patch", "owf", "subresource", "--type=merge", "-p", patch)
    got = json.loads(cp.kubectl("get", "owf", "subresource", "-o", "json").stdout)
    assert got["spec"]["suspend"] is True
    assert got["status"]["phase"] == "Running", "a spec write changed status"
    assert got["metadata"]["generation"] == 2
    columns = cp.kubectl("get", "owf", "subresource").stdout
    assert "Running" in columns and "lora" in columns


def test_the_api_server_bounds_what_a_runner_may_write_to_status_evaluation(crd_installed) -> None:  # type: ignore[no-untyped-def]
    cp = crd_installed
    doc = valid_manifest()
    doc["metadata"] = {"name": "evaluation-bounds", "namespace": "default"}
    apply(cp, doc, check=True)

    def patch(models: dict[str, dict[str, object]]) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"status": {"evaluation": {"evaluator": "e", "goalsMet": True, "models": models}}})
        return cp.kubectl(
            "patch", "owf", "evaluation-bounds", "--subresource=status", "--type=merge", "-p", body, check=False
        )

    metric = {"accuracy-accuracy_score": {"value": 0.9}}
    fits = {"input": metric, "final": metric, **{f"pass:p{i}": metric for i in range(16)}}
    assert (out := patch(fits)).returncode == 0, out.stderr
    flood = patch({f"junk-{i}": metric for i in range(19)})
    assert flood.returncode != 0 and "status.evaluation.models" in flood.stderr, flood.stderr
    wide = patch({"final": {f"m-{i}": {"value": 1} for i in range(64 * 16 + 1)}})
    assert wide.returncode != 0 and "status.evaluation.models.final" in wide.stderr, wide.stderr[:2000]
    cp.kubectl("delete", "owf", "evaluation-bounds", check=False)


def _job(name: str, code: str, backoff: int = 0) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "olivekube/runner:test",
                            "command": ["python", "-c", code],
                            "env": [
                                {
                                    "name": "GREETING",
                                    "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "hi"}},
                                },
                                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                        }
                    ],
                }
            },
        },
    }


@pytest.fixture(scope="module")
def job_inputs(control_plane):  # type: ignore[no-untyped-def]
    control_plane.kubectl("create", "configmap", "cfg", "--from-literal=hi=hello", check=False)
    control_plane.kubectl("create", "secret", "generic", "sec", "--from-literal=pw=s3cret", check=False)
    return control_plane


def test_job_runs_to_complete_through_the_node_agent(job_inputs) -> None:  # type: ignore[no-untyped-def]
    cp = job_inputs
    code = (
        "import os, sys; assert os.environ['GREETING'] == 'hello' and os.environ['SECRET'] == 's3cret'; "
        "assert os.environ['POD_NAME'].startswith('hello-'); print('ok')"
    )
    apply(cp, _job("hello", code), check=True)
    cp.kubectl("wait", "--for=condition=Complete", "job/hello", "--timeout=60s")
    pod = json.loads(cp.kubectl("get", "pods", "-l", "job-name=hello", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["nodeName"] == "olivekube-test-node"
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_failed_job_reports_exit_code_and_termination_message(job_inputs) -> None:  # type: ignore[no-untyped-def]
    cp = job_inputs
    code = (
        "import os, json, sys; "
        "path = json.loads(os.environ['OLIVEKUBE_TEST_NODE_PATHS'])['/dev/termination-log']; "
        "open(path, 'w').write('data file missing'); sys.exit(3)"
    )
    apply(cp, _job("broken", code), check=True)
    cp.kubectl("wait", "--for=condition=Failed", "job/broken", "--timeout=60s")
    pod = json.loads(cp.kubectl("get", "pods", "-l", "job-name=broken", "-o", "json").stdout)["items"][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["message"] == "data file missing"


def test_foreign_images_are_refused(job_inputs) -> None:  # type: ignore[no-untyped-def]
    cp = job_inputs
    job = _job("foreign", "print(1)")
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.36"
    apply(cp, job, check=True)
    cp.kubectl("wait", "--for=condition=Failed", "job/foreign", "--timeout=60s")
    pod = json.loads(cp.kubectl("get", "pods", "-l", "job-name=foreign", "-o", "json").stdout)["items"][0]
    assert pod["status"]["reason"] == "ImageNotRunnable"


def test_deleting_the_owner_deletes_jobs_and_pods(job_inputs) -> None:  # type: ignore[no-untyped-def]
    cp = job_inputs
    cp.kubectl("create", "configmap", "owner", "--from-literal=a=b")
    owner = json.loads(cp.kubectl("get", "configmap", "owner", "-o", "json").stdout)
    job = _job("owned", "import time; time.sleep(600)")
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    apply(cp, job, check=True)

    def running_pod():  # type: ignore[no-untyped-def]
        items = json.loads(cp.kubectl("get", "pods", "-l", "job-name=owned", "-o", "json").stdout)["items"]
        return items if items and items[0]["status"].get("phase") == "Running" else None

    wait_for(running_pod)
    cp.kubectl("delete", "configmap", "owner")

    def gone():  # type: ignore[no-untyped-def]
        jobs = cp.kubectl("get", "job", "owned", "--ignore-not-found", "-o", "name").stdout.strip()
        pods = cp.kubectl("get", "pods", "-l", "job-name=owned", "-o", "name").stdout.strip()
        return not jobs and not pods

    wait_for(gone, timeout=60)


def test_helm_install_and_uninstall(control_plane, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chart = tmp_path / "small"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: small\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    env = control_plane.env()
    import subprocess

    helm = str(control_plane.bin / "helm")
    subprocess.run([helm, "install", "small", str(chart), "--set", "greeting=hi", "--wait"], env=env, check=True)
    cm = json.loads(control_plane.kubectl("get", "configmap", "small-cm", "-o", "json").stdout)
    assert cm["data"]["greeting"] == "hi"
    subprocess.run([helm, "uninstall", "small", "--wait"], env=env, check=True)
    assert not control_plane.kubectl("get", "configmap", "small-cm", "--ignore-not-found", "-o", "name").stdout
