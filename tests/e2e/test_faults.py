"""Faults on a real control plane: components crashed and restarted while a pass runs, a spec edit
mid-pass, a failed Job deleted by hand, two operator replicas with the leader killed.

This module has its own control plane, S3 server and operators, since it crashes them. Each case
ends Succeeded, or Failed with a named reason; every published folder in the store is complete
(manifest and every file it names); and there is one Job per attempt, none reused.
The README's reliability table lists these cases; the others live beside the features they test
(tests/e2e/test_operator.py: the operator SIGKILLed at random moments, a Job refused by an admission
policy, a missing ServiceAccount; tests/runner/test_publish_faults.py: a publisher SIGKILLed
mid-upload, a full disk).
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.manifests import DATA, LORA, REPO
from tests.helpers.operator import NS, Operator
from tests.helpers.processes import wait_for

PREFIX = "faults"


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, tiny_models):  # type: ignore[no-untyped-def]
    """A control plane and an S3 server of this module's own, with the CRD, the data and a model."""
    from tools.controlplane.harness import control_plane
    from tools.s3server import s3_server

    with (
        control_plane(tmp_path_factory.mktemp("faults-cp")) as cp,
        s3_server(tmp_path_factory.mktemp("faults-s3")) as s3,
    ):
        crd = REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"
        cp.kubectl("apply", "--server-side", "-f", str(crd))
        cp.kubectl("wait", "--for=condition=Established", "crd/optimizationworkflows.olivekube.io")
        cp.kubectl("create", "namespace", NS)
        s3.create_secret(cp, NS)
        s3.client().upload_file(str(DATA), s3.bucket, f"{PREFIX}/data/tone.json")
        s3.upload_folder(tiny_models["phi3"], f"{PREFIX}/models/tiny-phi3")
        yield cp, s3


@contextlib.contextmanager
def operators(  # type: ignore[no-untyped-def]
    cp, s3, workdir: Path, count: int = 1, *args: str, namespace: str | None = NS
) -> Iterator[list[Operator]]:
    started = []
    try:
        for i in range(count):
            op = Operator(cp, s3, workdir / f"operator-{i}", *args, namespace=namespace)
            op.workdir.mkdir(parents=True, exist_ok=True)
            op.start()
            started.append(op)
        yield started
    finally:
        for op in started:
            op.stop()


def workflow(name: str, s3, seed: int, steps: int = 60, **lora: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A LoRA pass of its own chain key (`seed`): no case takes another's output from the cache."""
    bucket = s3.bucket
    options = copy.deepcopy(LORA)
    options["training_args"].update(seed=seed, max_steps=steps)
    options.update(lora)
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": f"s3://{bucket}/{PREFIX}/models/tiny-phi3"},
            "data_configs": [
                {
                    "name": "tone",
                    "type": "HuggingfaceContainer",
                    "load_dataset_config": {
                        "data_name": "json",
                        "data_files": f"s3://{bucket}/{PREFIX}/data/tone.json",
                    },
                    "pre_process_data_config": {
                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                        "max_seq_len": 48,
                    },
                }
            ],
            "passes": {"lora": options},
            "cache_dir": f"s3://{bucket}/{PREFIX}/cache",
            "output_dir": f"s3://{bucket}/{PREFIX}/outputs/{name}",
            "kubernetes": {"envFrom": [{"secretRef": {"name": "s3-credentials"}}], "backoffLimit": 2},
        },
    }


def get(cp, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "owf", name, "-n", NS, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def status(cp, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return dict(get(cp, name).get("status") or {})


def jobs(cp, name: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "jobs", "-n", NS, "-l", f"olivekube.io/workflow={name}", "-o", "json", check=False)
    return list(json.loads(out.stdout)["items"]) if out.returncode == 0 else []


def apply(cp, doc: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def training(cp, name: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether the runner has reported training progress: the pass is well under way."""
    lora = (status(cp, name).get("passes") or {}).get("lora") or {}
    return bool((lora.get("progress") or {}).get("step"))


def finished(cp, name: str, timeout: float = 400) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    wait_for(lambda: status(cp, name).get("phase") in ("Succeeded", "Failed"), timeout=timeout, step=1)
    return status(cp, name)


def assert_one_job_per_attempt(cp, name: str, seen: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Every Job name ever seen for the workflow is a distinct attempt, and status counts them all."""
    seen.update(j["metadata"]["name"] for j in jobs(cp, name))
    lora = status(cp, name)["passes"]["lora"]
    attempts = sorted(int(n.rsplit("-", 1)[1]) for n in seen)
    assert attempts == list(range(len(attempts))), seen
    assert lora["attempts"] == len(attempts), (lora, seen)


def assert_nothing_partial(s3) -> None:  # type: ignore[no-untyped-def]
    """Every folder with a manifest holds every file it names, at its size; every output pointer
    names such a folder."""
    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{PREFIX}/")
    sizes = {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
    manifests = [k for k in sizes if k.endswith("/olivekube-manifest.json")]
    assert manifests
    for key in manifests:
        folder = key.rsplit("/", 1)[0]
        body = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        root = f"{body['root']}/" if body.get("root") else ""  # a cache entry published first-wins
        for rel, entry in body["files"].items():
            where = f"{folder}/{root}{rel}"
            assert sizes.get(where) == entry["size"], f"{where} is missing or partial"
    for key in (k for k in sizes if k.endswith("/olivekube-output.json")):
        pointer = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        current = f"{key.rsplit('/', 1)[0]}/{pointer['current']}/olivekube-manifest.json"
        assert current in sizes, f"{key} points at {pointer['current']}, which has no manifest"


SEEDS = {"kube-apiserver": 12, "kine": 11, "s3": 13}


@pytest.mark.parametrize("component", list(SEEDS))
def test_a_component_restarted_mid_pass(plant, tmp_path: Path, component: str) -> None:
    """The API server, kine (its storage) or the S3 server SIGKILLed mid-pass and back 3 s later."""
    cp, s3 = plant
    name = f"restart-{component}"
    seen: set[str] = set()
    with operators(cp, s3, tmp_path):
        apply(cp, workflow(name, s3, seed=SEEDS[component]))
        wait_for(lambda: training(cp, name), timeout=300, step=0.5)
        seen.update(j["metadata"]["name"] for j in jobs(cp, name))
        if component == "s3":
            s3.restart(down_seconds=3)
        else:
            cp.restart(component, down_seconds=3)
        result = finished(cp, name)
    assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    assert_one_job_per_attempt(cp, name, seen)
    assert_nothing_partial(s3)


def test_a_spec_edit_mid_pass_deletes_the_old_job_and_publishes_only_the_new_model(plant, tmp_path: Path) -> None:
    cp, s3 = plant
    name = "edited"
    with operators(cp, s3, tmp_path):
        apply(cp, workflow(name, s3, seed=14, steps=400))  # long enough for the edit to land mid-training
        wait_for(lambda: training(cp, name), timeout=300, step=0.5)
        old = [j["metadata"]["name"] for j in jobs(cp, name)]
        apply(cp, workflow(name, s3, seed=14, r=4))
        wait_for(lambda: not set(old) & {j["metadata"]["name"] for j in jobs(cp, name)}, timeout=60)
        result = finished(cp, name)
    assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    from olivekube.api.workflow import parse_workflow

    new_key = parse_workflow(workflow(name, s3, seed=14, r=4)).spec.chain_keys()["lora"]
    assert result["passes"]["lora"]["progress"]["totalSteps"] == 60  # the edited spec's run
    lora = result["passes"]["lora"]
    assert lora["chainKey"] == new_key and lora["jobName"] not in old
    key = f"{PREFIX}/outputs/{name}/olivekube-output.json"
    pointer = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    # Only the edited spec's run published here: the old one was stopped before its output.
    assert len(pointer["history"]) == 1 and result["outputs"]["uri"].endswith(pointer["current"])
    assert_nothing_partial(s3)


def test_a_failed_job_deleted_by_hand_still_counts_and_its_name_is_not_reused(plant, tmp_path: Path) -> None:
    cp, s3 = plant
    name = "deleted-failure"
    doc = workflow(name, s3, seed=15)
    doc["spec"]["data_configs"][0]["load_dataset_config"]["data_files"] = f"s3://{s3.bucket}/{PREFIX}/no-such.json"
    doc["spec"]["kubernetes"]["backoffLimit"] = 1
    with operators(cp, s3, tmp_path):
        apply(cp, doc)
        first = wait_for(
            lambda: [j for j in jobs(cp, name) if (j.get("status") or {}).get("failed")], timeout=120, step=0.5
        )
        cp.kubectl("delete", "job", first[0]["metadata"]["name"], "-n", NS)
        result = finished(cp, name, timeout=120)
    assert result["phase"] == "Failed", json.dumps(result, indent=1)
    assert "failed after 2 attempts" in result["message"] and "no-such.json" in result["message"]
    lora = result["passes"]["lora"]
    assert lora["attempts"] == 2 and len(lora["failedJobs"]) == 2
    assert first[0]["metadata"]["name"] in lora["failedJobs"]
    assert [j["metadata"]["name"] for j in jobs(cp, name)] == [lora["jobName"]]  # attempt 1, a new name


def test_two_replicas_the_leader_killed_the_other_finishes_with_one_job_per_attempt(plant, tmp_path: Path) -> None:
    cp, s3 = plant
    name = "high-availability"
    peering = subprocess.run(
        [
            str(cp.bin / "helm"),
            "template",
            "olivekube",
            str(REPO / "helm/olivekube"),
            "--set",
            "operator.replicaCount=2",
            "--show-only",
            "templates/peering.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cp.kubectl("apply", "-f", "-", input=peering, check=False)  # the peering object needs its CRD first
    cp.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
    cp.kubectl("apply", "-f", "-", input=peering)
    seen: set[str] = set()
    args = ("--peering", "olivekube", "--peering-lifetime", "10")
    with operators(cp, s3, tmp_path, 2, *args, namespace=None) as (a, b):  # cluster-wide
        logs = {id(op): op.workdir / "operator-1.log" for op in (a, b)}

        def working(op: Operator) -> bool:
            """kopf starts paused; it resumes when it sees no live peer of higher priority, and pauses
            again when one appears (the two may both resume for a moment before they see each other)."""
            said = [line for line in logs[id(op)].read_text().splitlines() if "operations" in line]
            return bool(said) and "Resuming operations" in said[-1]

        def one_leader() -> Operator | None:
            active = [op for op in (a, b) if working(op)]
            return active[0] if len(active) == 1 else None

        wait_for(lambda: one_leader() is not None, timeout=60, step=0.5)
        leader = wait_for(lambda: one_leader() if one_leader() is not None else None, timeout=30)
        standby = b if leader is a else a
        apply(cp, workflow(name, s3, seed=16))
        wait_for(lambda: training(cp, name), timeout=300, step=0.5)
        seen.update(j["metadata"]["name"] for j in jobs(cp, name))
        leader.kill()
        result = finished(cp, name)
        assert working(standby)
    assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    assert_one_job_per_attempt(cp, name, seen)
    assert_nothing_partial(s3)
