"""The operator on the real control plane: the node agent runs the real runner on tiny models, the
S3 server is the store."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.manifests import DATA, LORA, REPO
from tests.helpers.operator import NS, Operator
from tests.helpers.processes import wait_for


@pytest.fixture(scope="module")
def cluster(crd_installed, s3, tiny_models, images, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The operator as a local process; every pass runs in the runner image, in a real container."""
    cp = crd_installed
    cp.kubectl("create", "namespace", NS, check=False)
    s3.create_secret(cp, NS)
    client = s3.client()
    client.upload_file(str(DATA), s3.bucket, "e2e/data/tone.json")
    s3.upload_folder(tiny_models["phi3"], "e2e/models/tiny-phi3")
    lookups = f"s3://{s3.bucket}/e2e/"  # the operator's own reads: the cache, and the data it checks
    args = ("--cache-lookup-prefix", lookups, "--allowed-service-account", "ghost", "--runner-image", images[1])
    operator = Operator(cp, s3, tmp_path_factory.mktemp("operator"), *args)
    operator.start()
    yield cp, s3, operator
    operator.stop()


def manifest(name: str, s3, passes: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    bucket = s3.bucket
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": f"s3://{bucket}/e2e/models/tiny-phi3"},
            "data_configs": [
                {
                    "name": "tone",
                    "type": "HuggingfaceContainer",
                    "load_dataset_config": {
                        "data_name": "json",
                        "data_files": f"s3://{bucket}/e2e/data/tone.json",
                    },
                    "pre_process_data_config": {
                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                        "max_seq_len": 48,
                    },
                }
            ],
            "passes": copy.deepcopy(
                passes
                or {
                    "lora": LORA,
                    "merge": {"type": "MergeAdapterWeights"},
                    "builder": {"type": "ModelBuilder", "precision": "int4"},
                }
            ),
            "cache_dir": f"s3://{bucket}/e2e/cache",
            "output_dir": f"s3://{bucket}/e2e/outputs/{name}",
            "kubernetes": {"envFrom": [{"secretRef": {"name": "s3-credentials"}}], "backoffLimit": 1},
            **spec,
        },
    }


def get(cp, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "owf", name, "-n", NS, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def phase(cp, name: str) -> str | None:  # type: ignore[no-untyped-def]
    return (get(cp, name).get("status") or {}).get("phase")


def jobs(cp, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "jobs", "-n", NS, "-l", f"olivekube.io/workflow={name}", "-o", "name")
    return out.stdout.split()


def apply(cp, doc: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def tone(cluster) -> str:  # type: ignore[no-untyped-def]
    """The tone workflow, applied (once per module, whichever test needs it first) and finished."""
    cp, s3, _ = cluster
    apply(cp, manifest("tone", s3))
    wait_for(lambda: phase(cp, "tone") in ("Succeeded", "Failed"), timeout=600)
    return "tone"


def test_tone_classifier_goes_from_apply_to_succeeded(cluster, tone, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    wf = get(cp, "tone")
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["progress"] == "3/3" and status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert len(jobs(cp, "tone")) == 3, "exactly one Job per pass"
    lora = status["passes"]["lora"]
    assert lora["metrics"]["final_loss"] < lora["metrics"]["first_loss"]
    assert lora["progress"]["step"] == 30 and lora["artifact"]["uri"].startswith(f"s3://{s3.bucket}/e2e/cache/")
    output = status["outputs"]["uri"]
    assert output.startswith(f"s3://{s3.bucket}/e2e/outputs/tone/versions/")
    from olivekube.storage.s3 import S3Store

    local = tmp_path / "model"
    S3Store().fetch(output, local)
    out = subprocess.run(
        [str(REPO / ".venv/bin/olivekube"), "generate", str(local), "-p", "### Text: hi"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.startswith("### Text: hi")
    printed = cp.kubectl("get", "owf", "tone", "-n", NS).stdout
    assert "Succeeded" in printed and "3/3" in printed
    events = cp.kubectl("get", "events", "-n", NS, "--field-selector", "involvedObject.name=tone").stdout
    assert "PassStarted" in events and "Succeeded" in events


def test_watch_shows_the_passes_until_the_end(cluster, tone) -> None:  # type: ignore[no-untyped-def]
    cp, _, _ = cluster
    out = subprocess.run(
        [str(REPO / ".venv/bin/olivekube"), "watch", "tone", "-n", NS],
        env=cp.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lora" in out.stdout and "builder" in out.stdout and "ml/tone: Succeeded" in out.stdout


def test_reapplied_identical_workflow_trains_nothing_and_publishes_its_output(cluster, tone) -> None:  # type: ignore[no-untyped-def]
    """Every pass is in the cache: the operator takes all but the last without a Job; the last pass's
    Job takes it from the cache too and publishes the model to this workflow's own output_dir."""
    cp, s3, _ = cluster
    assert phase(cp, tone) == "Succeeded"
    apply(cp, manifest("tone-again", s3))
    wait_for(lambda: phase(cp, "tone-again") in ("Succeeded", "Failed"), timeout=300)
    status = get(cp, "tone-again")["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert all(p["cached"] for p in status["passes"].values())
    assert [j.rsplit("/", 1)[1] for j in jobs(cp, "tone-again")] == [status["passes"]["builder"]["jobName"]]
    first = get(cp, tone)["status"]
    assert status["passes"]["builder"]["artifact"] == first["passes"]["builder"]["artifact"]
    assert status["outputs"]["uri"].startswith(f"s3://{s3.bucket}/e2e/outputs/tone-again/versions/")
    assert status["outputs"]["sha256"] == first["outputs"]["sha256"]  # the same model, in its own output_dir


def test_data_changed_under_the_same_uri_trains_again_and_unchanged_data_is_taken_from_the_cache(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    client, key = s3.client(), "e2e/data/tone-changing.json"
    client.upload_file(str(DATA), s3.bucket, key)
    lora = {**LORA, "training_args": {**LORA["training_args"], "seed": 21, "max_steps": 5}}

    def run(name: str) -> dict[str, Any]:
        # lora is not the last pass: the last pass's Job always runs, to publish output_dir
        doc = manifest(name, s3, passes={"lora": lora, "merge": {"type": "MergeAdapterWeights"}})
        doc["spec"]["data_configs"][0]["load_dataset_config"]["data_files"] = f"s3://{s3.bucket}/{key}"
        apply(cp, doc)
        wait_for(lambda: phase(cp, name) in ("Succeeded", "Failed"), timeout=300)
        return dict(get(cp, name)["status"]["passes"]["lora"])

    first = run("data-first")
    same = run("data-same")
    rows = json.loads(DATA.read_text())
    client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(rows[: len(rows) // 2]).encode())
    changed = run("data-changed")
    assert first["artifact"] and not first.get("cached") and len(jobs(cp, "data-first")) == 2
    assert same["cached"] is True and len(jobs(cp, "data-same")) == 1  # the operator took lora: merge's Job only
    assert not changed.get("cached") and len(jobs(cp, "data-changed")) == 2
    assert changed["artifact"]["sha256"] != first["artifact"]["sha256"]


def test_missing_data_file_fails_with_its_message_after_retries(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    doc = manifest("broken", s3, passes={"lora": LORA})
    doc["spec"]["data_configs"][0]["load_dataset_config"]["data_files"] = f"s3://{s3.bucket}/e2e/data/missing.json"
    apply(cp, doc)
    wait_for(lambda: phase(cp, "broken") == "Failed", timeout=300)
    status = get(cp, "broken")["status"]
    assert "spec.data_configs.0.load_dataset_config.data_files" in status["passes"]["lora"]["message"]
    assert "missing.json" in status["message"]
    assert len(jobs(cp, "broken")) == 2, "backoffLimit 1: two attempts, one Job each"


def test_jobs_removed_before_they_end_still_count_and_the_retry_limit_holds(cluster) -> None:  # type: ignore[no-untyped-def]
    """Each attempt's Job is deleted as soon as it exists, before the operator can see it end (as a
    TTL of 0 or a failure lost in a watch's gap would): backoffLimit 1 still means two attempts. Its
    data is missing, so an attempt whose pod did run fails too: no attempt can succeed."""
    cp, s3, _ = cluster
    doc = manifest("vanishing", s3, passes={"lora": LORA})
    doc["spec"]["data_configs"][0]["load_dataset_config"]["data_files"] = f"s3://{s3.bucket}/e2e/data/missing.json"
    doc["spec"]["kubernetes"]["ttlSecondsAfterFinished"] = 0
    apply(cp, doc)
    deleted: set[str] = set()

    def delete_jobs_until_failed() -> bool:
        for name in jobs(cp, "vanishing"):
            if name not in deleted:
                cp.kubectl("delete", name, "-n", NS, "--wait=false", check=False)
                deleted.add(name)
        return phase(cp, "vanishing") == "Failed"

    try:
        wait_for(delete_jobs_until_failed, timeout=120, step=0.2)
    except AssertionError as exc:
        pods = cp.kubectl("get", "pods", "-n", NS, "-l", "olivekube.io/workflow=vanishing", "-o", "wide").stdout
        raise AssertionError(f"{exc}: {json.dumps(get(cp, 'vanishing').get('status'), indent=1)}\n{pods}") from exc
    time.sleep(3)  # a third attempt, were one made, would show here
    lora = get(cp, "vanishing")["status"]["passes"]["lora"]
    assert len(deleted | set(jobs(cp, "vanishing"))) == 2 and lora["attempts"] == 2, (deleted, lora)
    assert sorted(lora["failedJobs"]) == sorted(n.split("/", 1)[1] for n in deleted)


def test_twenty_workflows_at_once_all_succeed(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    docs = [
        manifest(f"many-{i:02d}", s3, passes={"builder": {"type": "ModelBuilder", "precision": "fp32"}})
        for i in range(20)
    ]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    names = [d["metadata"]["name"] for d in docs]
    wait_for(lambda: all(phase(cp, n) in ("Succeeded", "Failed") for n in names), timeout=900, step=2)
    assert [phase(cp, n) for n in names] == ["Succeeded"] * 20
    assert all(len(jobs(cp, n)) <= 1 for n in names)


def test_suspend_and_resume(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    doc = manifest("paused", s3, passes={"lora": {**LORA, "r": 4}}, suspend=True)
    apply(cp, doc)
    wait_for(lambda: phase(cp, "paused") == "Suspended", timeout=60)
    assert jobs(cp, "paused") == []
    cp.kubectl("patch", "owf", "paused", "-n", NS, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    wait_for(lambda: phase(cp, "paused") == "Succeeded", timeout=300)
    assert len(jobs(cp, "paused")) == 1


def test_deleting_a_running_workflow_removes_its_jobs_and_pods(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    slow = {**LORA, "r": 2, "training_args": {**LORA["training_args"], "max_steps": 100000}}
    apply(cp, manifest("doomed", s3, passes={"lora": slow}))
    wait_for(lambda: phase(cp, "doomed") == "Running" and jobs(cp, "doomed"), timeout=60)
    wait_for(lambda: "Running" in cp.kubectl("get", "pods", "-n", NS, "-l", "olivekube.io/workflow=doomed").stdout)
    cp.kubectl("delete", "owf", "doomed", "-n", NS, "--wait=false")
    wait_for(lambda: not jobs(cp, "doomed"), timeout=60)
    wait_for(
        lambda: not cp.kubectl("get", "pods", "-n", NS, "-l", "olivekube.io/workflow=doomed", "-o", "name").stdout,
        timeout=60,
    )


def test_operator_killed_at_random_moments_still_finishes_with_one_job_per_attempt(cluster) -> None:  # type: ignore[no-untyped-def]
    import random

    cp, s3, operator = cluster
    passes = {
        "lora": {**LORA, "r": 6},
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "fp32"},
    }
    apply(cp, manifest("survivor", s3, passes=passes))
    rng = random.Random(5)
    for _ in range(5):
        time.sleep(rng.uniform(0.5, 4.0))
        operator.kill()
        time.sleep(rng.uniform(0.1, 1.0))
        operator.start()
    wait_for(lambda: phase(cp, "survivor") in ("Succeeded", "Failed"), timeout=600)
    status = get(cp, "survivor")["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    names = jobs(cp, "survivor")
    assert len(names) == 3 and len(set(names)) == 3


def test_a_search_runs_its_trials_as_workflows_two_at_once_and_survives_a_killed_operator(cluster) -> None:  # type: ignore[no-untyped-def]
    """Two trials (LoRA r 5 and 7, then a merge), each a workflow of its own owned by the search, both
    at once; the operator SIGKILLed while they run: no trial made twice, no pass run twice."""
    cp, s3, operator = cluster
    lora = {**LORA, "training_args": {**LORA["training_args"], "max_steps": 4}}
    doc = manifest("searcher", s3, passes={"lora": lora, "merge": {"type": "MergeAdapterWeights"}})
    doc["spec"]["search_space"] = {"lora": {"r": {"type": "Categorical", "support": [5, 7]}}}
    doc["spec"]["search_strategy"] = {
        "execution_order": "joint",
        "sampler": "sequential",
        "include_pass_params": False,
    }
    doc["spec"]["kubernetes"] = {**doc["spec"].get("kubernetes", {}), "search": {"parallelTrials": 2}}
    apply(cp, doc)
    trials = ["searcher-trial-1", "searcher-trial-2"]
    wait_for(lambda: all(phase(cp, t) == "Running" for t in trials), timeout=120)
    operator.kill()
    time.sleep(2)
    operator.start()
    most = 0

    def ended() -> bool:
        nonlocal most
        running = cp.kubectl("get", "jobs", "-n", NS, "-l", "olivekube.io/pass", "-o", "json").stdout
        active = [
            j
            for j in json.loads(running)["items"]
            if j["metadata"]["labels"].get("olivekube.io/workflow") in trials
            and (j.get("status") or {}).get("active")
        ]
        most = max(most, len(active))
        return phase(cp, "searcher") in ("Succeeded", "Failed")

    wait_for(ended, timeout=600)
    status = get(cp, "searcher")["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    search = status["search"]
    assert search["progress"] == "2/2" and search["reason"].startswith("SpaceExhausted")
    assert [(t["workflow"], t["phase"], t["parameters"]) for t in search["trials"]] == [
        ("searcher-trial-1", "Succeeded", {"lora": {"r": 5}}),
        ("searcher-trial-2", "Succeeded", {"lora": {"r": 7}}),
    ]
    assert search["best"]["workflow"] in trials and search["best"]["output"].startswith(
        f"s3://{s3.bucket}/e2e/outputs/searcher/trials/trial-"
    )
    made = cp.kubectl("get", "owf", "-n", NS, "-l", "olivekube.io/search=searcher", "-o", "name").stdout.split()
    assert sorted(made) == [f"optimizationworkflow.olivekube.io/{t}" for t in trials]
    for trial in trials:
        assert len(jobs(cp, trial)) == 2, jobs(cp, trial)  # lora and merge, once each
    assert jobs(cp, "searcher") == [] and 1 <= most <= 2


@pytest.mark.parametrize(
    ("name", "kubernetes", "scheduler_says"),
    [
        (
            "too-many-gpus",
            {"resources": {"default": {"limits": {"nvidia.com/gpu": 16}}}},
            "Insufficient nvidia.com/gpu",
        ),
        ("no-such-node", {"nodeSelector": {"pool": "h100"}}, "didn't match Pod's node affinity/selector"),
    ],
)
def test_a_pass_no_node_can_take_says_why_and_fails_at_its_start_timeout(  # type: ignore[no-untyped-def]
    cluster, name: str, kubernetes: dict[str, Any], scheduler_says: str
) -> None:
    """The real scheduler leaves the pod Unschedulable (the node has 8 GPUs and no `pool` label): the
    pass says so in status while it waits, and fails with the scheduler's words at the timeout."""
    cp, s3, _ = cluster
    doc = manifest(name, s3, passes={"builder": {"type": "ModelBuilder", "precision": "fp32"}})
    doc["spec"]["kubernetes"].update(kubernetes, startTimeoutSeconds=20)
    doc["spec"]["clean_cache"] = True  # run the pass, do not take it from the cache
    apply(cp, doc)

    def waiting() -> str | None:
        message = str(((get(cp, name).get("status") or {}).get("passes") or {}).get("builder", {}).get("message"))
        return message if message.startswith("waiting to start: Unschedulable") else None

    assert scheduler_says in wait_for(waiting, timeout=30)
    began = time.monotonic()
    wait_for(lambda: phase(cp, name) == "Failed", timeout=60)
    status = get(cp, name)["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "PodsNotStarting" and scheduler_says in failed["message"], failed
    assert "after the start timeout, 20s" in failed["message"]
    assert time.monotonic() - began < 40
    assert jobs(cp, name) == [], "the Job that cannot start is deleted"


def test_a_queue_name_kueue_cannot_take_fails_with_the_reason_and_one_it_can_gets_a_suspended_job(cluster) -> None:  # type: ignore[no-untyped-def]
    """Without Kueue, or with no such LocalQueue, a Job naming the queue would wait suspended for ever."""
    cp, s3, _ = cluster
    passes = {"builder": {"type": "ModelBuilder", "precision": "fp32"}}

    def queued(name: str, queue: str) -> dict[str, Any]:
        doc = manifest(name, s3, passes=passes, clean_cache=True)
        doc["spec"]["kubernetes"]["queueName"] = queue
        apply(cp, doc)
        wait_for(lambda: phase(cp, name) in ("Failed", "Running"), timeout=60)
        return dict(get(cp, name)["status"])

    status = queued("queue-no-kueue", "team")
    assert status["phase"] == "Failed" and "this cluster has no Kueue" in status["message"], status
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "QueueNotFound"
    crd = REPO / "tests" / "e2e" / "resources" / "kueue-localqueue-crd.yaml"
    cp.kubectl("apply", "-f", str(crd))
    try:
        cp.kubectl("wait", "--for=condition=Established", "crd/localqueues.kueue.x-k8s.io", "--timeout=60s")
        status = queued("queue-missing", "missing")
        assert status["phase"] == "Failed" and f"no LocalQueue missing in namespace {NS}" in status["message"]
        local_queue = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue"}
        apply(cp, {**local_queue, "metadata": {"name": "team", "namespace": NS}, "spec": {"clusterQueue": "gpus"}})
        status = queued("queue-there", "team")
        assert status["phase"] == "Running", status
        (job,) = jobs(cp, "queue-there")
        out = cp.kubectl("get", job, "-n", NS, "-o", "json").stdout
        assert json.loads(out)["spec"]["suspend"] is True  # Kueue's to admit
        assert jobs(cp, "queue-no-kueue") == [] and jobs(cp, "queue-missing") == []
    finally:
        cp.kubectl("delete", "owf", "queue-there", "-n", NS, "--ignore-not-found")
        cp.kubectl("delete", "-f", str(crd), "--ignore-not-found")


def test_pods_whose_service_account_does_not_exist_fail_the_workflow_within_seconds(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    doc = manifest("ghostly", s3, passes={"builder": {"type": "ModelBuilder", "precision": "fp32"}})
    doc["spec"]["kubernetes"]["serviceAccountName"] = "ghost"  # allowed by the admin, but not there
    doc["spec"]["clean_cache"] = True  # other tests published this pass's output: run it, do not take it
    apply(cp, doc)
    wait_for(lambda: phase(cp, "ghostly") == "Failed", timeout=90)
    status = get(cp, "ghostly")["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "PodsNotStarting" and "ghost" in failed["message"], failed
    events = cp.kubectl("get", "events", "-n", NS, "--field-selector", "involvedObject.name=ghostly").stdout
    assert "PodsNotStarting" in events
    wait_for(lambda: not jobs(cp, "ghostly"), timeout=60)


def test_a_job_refused_by_an_admission_policy_fails_the_workflow_with_its_message(cluster) -> None:  # type: ignore[no-untyped-def]
    cp, s3, _ = cluster
    policy = str(REPO / "tests/e2e/resources/refuse-jobs-policy.yaml")
    cp.kubectl("apply", "-f", policy)
    try:
        probe = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "probe", "namespace": NS, "labels": {"olivekube.io/pass": "refused"}},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}
            },
        }

        def enforced() -> bool:
            out = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe), check=False)
            return "not allowed here" in out.stderr

        wait_for(enforced, timeout=30)
        refused = manifest("refusal", s3, passes={"refused": {"type": "ModelBuilder", "precision": "fp32"}})
        refused["spec"]["clean_cache"] = True  # other tests published this pass's output: run it, do not take it
        apply(cp, refused)
        wait_for(lambda: phase(cp, "refusal") == "Failed", timeout=60)
        failed = {c["type"]: c for c in get(cp, "refusal")["status"]["conditions"]}["Failed"]
        assert failed["reason"] == "JobRefused" and "not allowed here" in failed["message"], failed
        assert jobs(cp, "refusal") == []
    finally:
        cp.kubectl("delete", "-f", policy, "--ignore-not-found")


def test_an_index_entry_planted_in_the_namespaces_own_part_with_made_up_inputs_is_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    """Whoever holds the shared store's credentials writes, inside this namespace's own part of the
    cache, an output and an index entry for the workflow's first pass that is consistent with itself:
    the real input model's version, and no data read (made up). The operator compares the spec's
    inputs, not the entry's claims: it refuses the entry and the pass runs. (Entries pointing outside
    the namespace's part: tests/unit/test_operator_reconcile.py.)"""
    from olivekube.api.workflow import parse_workflow
    from olivekube.storage import build_manifest
    from olivekube.storage.s3 import S3Store

    cp, s3, _ = cluster
    # The entry is for lora, not the last pass: the last pass's Job always runs (to publish output_dir)
    lora = {**LORA, "training_args": {**LORA["training_args"], "seed": 17, "max_steps": 2}}
    doc = manifest("planted", s3, passes={"lora": lora, "merge": {"type": "MergeAdapterWeights"}})
    key = parse_workflow(doc).spec.chain_keys()["lora"]
    client = s3.client()
    fake = Path(cp.workdir) / "planted-model"
    fake.mkdir(exist_ok=True)
    (fake / "adapter_model.safetensors").write_bytes(b"not the adapter you asked for")
    planted = build_manifest(fake, {"kind": "adapter"})
    where = f"e2e/cache/passes/{NS}/planted"
    client.put_object(
        Bucket=s3.bucket, Key=f"{where}/adapter_model.safetensors", Body=b"not the adapter you asked for"
    )
    client.put_object(Bucket=s3.bucket, Key=f"{where}/olivekube-manifest.json", Body=planted.to_json().encode())
    model_uri = doc["spec"]["input_model"]["model_path"]
    model_version = S3Store().folder_version(model_uri)  # the s3 fixture set this process's credentials
    entry = {
        "uri": f"s3://{s3.bucket}/{where}",
        "digest": planted.digest,
        "sizeBytes": 1,
        "kind": "adapter",
        "input": "any",
        "inputVersions": {model_uri: model_version},
        "data": {},  # made up: "read no data", so that no data version would be compared
        "models": {},
        "adapter": None,
    }
    client.put_object(Bucket=s3.bucket, Key=f"e2e/cache/index/{NS}/{key}", Body=json.dumps(entry).encode())
    apply(cp, doc)
    wait_for(lambda: phase(cp, "planted") in ("Succeeded", "Failed"), timeout=300)
    status = get(cp, "planted")["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert not status["passes"]["lora"].get("cached") and len(jobs(cp, "planted")) == 2
    assert status["passes"]["lora"]["artifact"]["sha256"] != planted.digest
    events = cp.kubectl("get", "events", "-n", NS, "--field-selector", "involvedObject.name=planted").stdout
    assert "CacheEntryRefused" in events and "other data files" in events


def test_a_goal_the_model_misses_fails_the_workflow_with_goal_not_met_and_publishes_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    """In the cluster: the last pass's Job measures the input and the final model, writes
    status.evaluation, and fails; the workflow is Failed with reason GoalNotMet at the first attempt,
    and output_dir holds nothing."""
    cp, s3, _ = cluster
    lora = {**LORA, "training_args": {**LORA["training_args"], "max_steps": 4}}
    accuracy = {
        "name": "accuracy",
        "type": "accuracy",
        "data_config": "tone",
        "sub_types": [
            {"name": "accuracy_score", "goal": {"type": "threshold", "value": 1.01}},
            {"name": "perplexity"},
        ],
        "user_config": {"max_samples": 8},
    }
    doc = manifest(
        "unmet", s3, passes={"lora": lora}, evaluators={"gate": {"metrics": [accuracy]}}, evaluator="gate"
    )
    apply(cp, doc)
    wait_for(lambda: phase(cp, "unmet") in ("Failed", "Succeeded"), timeout=300)
    status = get(cp, "unmet")["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert status["phase"] == "Failed" and failed["reason"] == "GoalNotMet", json.dumps(status, indent=1)
    assert "accuracy-accuracy_score" in status["message"] and "threshold 1.01" in status["message"]
    final = status["evaluation"]["models"]["final"]["accuracy-accuracy_score"]
    assert final["met"] is False and final["goal"] == {"type": "threshold", "value": 1.01}
    assert status["evaluation"]["models"]["input"]["accuracy-perplexity"]["value"] > 1
    assert len(jobs(cp, "unmet")) == 1, "a missed goal is not retried"
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="e2e/outputs/unmet/")
    assert listed.get("KeyCount", 0) == 0 and "outputs" not in status
