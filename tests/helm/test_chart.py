"""The chart, on the real control plane: lint, templates the API server accepts, install → reconcile
→ uninstall with the chart's own service accounts, least-privilege RBAC, CRD upgrades."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from olivekube.api.kubernetes import GUARDED_ENV_NAMES, GUARDED_ENV_PREFIXES
from tests.helpers.manifests import DATA, LORA, merge_patch
from tests.helpers.processes import wait_for
from tools.controlplane.harness import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "olivekube"
STORAGE_CONF = Path.home() / ".cache/olivekube/containers/storage.conf"  # tools/images.sh's image store
SYSTEM_NS = "olivekube-system"
WORK_NS = "tuning"
RELEASE = "okube"
ALLOWED_IMAGE_PREFIX = "registry.local/olivekube-runner"

VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}", "--set", "runner.namespaces={team-a,team-b}"],
    "peering": ["--set", "operator.replicaCount=2", "--set", "metrics.service=false"],
    "no-crd": [
        "--set",
        "crds.install=false",
        "--set",
        "operator.image.tag=9.9.9",
        "--set",
        "runner.image.tag=9.9.9",
    ],
    "placement": [
        "--set",
        "operator.nodeSelector.pool=system",
        "--set",
        "operator.tolerations[0].key=dedicated",
        "--set",
        "operator.tolerations[0].operator=Exists",
        "--set",
        "operator.envFrom[0].secretRef.name=s3-credentials",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ],
}


def helm(cp, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([str(cp.bin / "helm"), *args], env=cp.env(), capture_output=True, text=True, check=check)


def test_chart_crd_is_the_generated_crd() -> None:
    assert (CHART / "files" / "olivekube.io_optimizationworkflows.yaml").read_text() == (
        REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"
    ).read_text()


def test_helm_lint_is_clean(control_plane) -> None:  # type: ignore[no-untyped-def]
    out = helm(control_plane, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_values_schema_rejects_bad_values(control_plane) -> None:  # type: ignore[no-untyped-def]
    out = helm(control_plane, "template", "x", str(CHART), "--set", "operator.replicaCount=0", check=False)
    assert out.returncode != 0 and "replicaCount" in out.stderr


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_templates_are_accepted_by_the_api_server(control_plane, name: str) -> None:  # type: ignore[no-untyped-def]
    cp = control_plane
    for ns in (SYSTEM_NS, "team-a", "team-b"):
        cp.kubectl("create", "namespace", ns, check=False)
    # A release name of its own: the dry run must not meet the objects of the installed release.
    rendered = helm(cp, "template", "tmpl", str(CHART), "-n", SYSTEM_NS, *VALUE_SETS[name]).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = [
        d
        for d in docs
        if d["kind"] == "CustomResourceDefinition"
        and d["metadata"]["name"] != ("optimizationworkflows.olivekube.io")
    ]
    for crd in crds:  # resources of a CRD the same manifest defines need the CRD first
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert out.returncode == 0, out.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ValidatingAdmissionPolicy"} <= kinds
    assert {"Role", "RoleBinding"} <= kinds or {"ClusterRole", "ClusterRoleBinding"} <= kinds


def _can_i(cp, account: str, namespace: str) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(resource, its verbs in alphabetical order) for what `account` may do in `namespace`."""
    out = cp.kubectl("auth", "can-i", "--list", f"--as={account}", "-n", namespace).stdout
    verbs: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        resource = parts[0] if parts else ""
        if resource.startswith(("selfsubject", "/", "[/")) or not resource:
            continue  # granted to every authenticated user
        verbs.setdefault(resource, set()).update(line[line.rindex("[") + 1 : line.rindex("]")].split())
    return {(resource, " ".join(sorted(v))) for resource, v in verbs.items()}


def _merged(*grants: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Grants of the same resource from several rules, as `kubectl auth can-i --list` shows them."""
    verbs: dict[str, set[str]] = {}
    for resource, words in (g for grant in grants for g in grant):
        verbs.setdefault(resource, set()).update(words.split())
    return {(resource, " ".join(sorted(v))) for resource, v in verbs.items()}


OPERATOR_READS = {
    ("optimizationworkflows.olivekube.io", "get list watch"),
    ("optimizationworkflows.olivekube.io/status", "get patch"),
    ("pods", "get list watch"),
    ("events", "create list patch"),
    ("events.events.k8s.io", "create list patch"),
    ("customresourcedefinitions.apiextensions.k8s.io", "list watch"),
    ("namespaces", "list watch"),
}
OPERATOR_WRITES = {
    ("optimizationworkflows.olivekube.io", "create delete"),  # a search's trials, stopped early
    ("serviceaccounts", "create"),
    ("services", "create"),
    ("networkpolicies.networking.k8s.io", "create"),
    ("localqueues.kueue.x-k8s.io", "get"),
    ("roles.rbac.authorization.k8s.io", "create"),
    ("rolebindings.rbac.authorization.k8s.io", "create"),
}


def install_release(cp, images: tuple[str, str], bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Adopt the CRD that came from crds/ (as a cluster admin would) and install the release, with
    the images built from the Dockerfile: the operator and every pass run in real containers.
    Workflows write under helm/ (the tests' own), a folder per namespace under teams/, or bob's claim."""
    (operator_repo, operator_tag), (runner_repo, runner_tag) = (ref.rsplit(":", 1) for ref in images)
    crd = "crd/optimizationworkflows.olivekube.io"
    cp.kubectl("label", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cp.kubectl(
        "annotate",
        crd,
        f"meta.helm.sh/release-name={RELEASE}",
        f"meta.helm.sh/release-namespace={SYSTEM_NS}",
        "--overwrite",
    )
    helm(
        cp,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        SYSTEM_NS,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        f"watchNamespaces={{{WORK_NS}}}",
        "--set",
        f"runner.namespaces={{{WORK_NS}}}",
        "--set",
        "operator.envFrom[0].secretRef.name=s3-credentials",
        "--set",
        f"operator.metricsPort={free_port()}",
        "--set",
        f"operator.livenessPort={free_port()}",
        "--set",
        "operator.retryBackoffSeconds=1",
        "--set",
        f"policy.allowedImagePrefixes={{{ALLOWED_IMAGE_PREFIX}}}",
        "--set",
        "runner.envFromSecrets={s3-credentials}",
        "--set",
        f"policy.writablePrefixes[0]=s3://{bucket}/helm/",
        "--set",
        f"policy.writablePrefixes[1]=s3://{bucket}/teams/\\{{namespace\\}}/",
        "--set",
        "policy.writablePrefixes[2]=pvc://bob-models/",
        "--set",
        f"operator.image.repository={operator_repo}",
        "--set",
        f"operator.image.tag={operator_tag}",
        "--set",
        f"runner.image.repository={runner_repo}",
        "--set",
        f"runner.image.tag={runner_tag}",
        "--set",
        "tests.doctor.device=cpu",  # the test node has no GPU: `helm test` checks what a CPU node runs
    )
    # The API server loads a new admission policy a moment after it is created: wait until it is enforced.
    probe = {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "policy-probe", "namespace": WORK_NS},
        "spec": {
            "input_model": {"model_path": "x"},
            "passes": {"b": {"type": "ModelBuilder"}},
            "kubernetes": {"image": "probe"},
        },
    }

    def enforced() -> bool:
        out = cp.kubectl(
            "apply", "--dry-run=server", "--as=alice", "-f", "-", input=yaml.safe_dump(probe), check=False
        )
        return "ValidatingAdmissionPolicy" in out.stderr

    wait_for(enforced, timeout=30)


@pytest.fixture(scope="module")
def installed(crd_installed, s3, tiny_models, images, tmp_path_factory):  # type: ignore[no-untyped-def]
    cp = crd_installed
    for ns in (SYSTEM_NS, WORK_NS):
        cp.kubectl("create", "namespace", ns, check=False)
        s3.create_secret(cp, ns)
    # Pods in the workflows' namespace must meet the restricted Pod Security Standard.
    cp.kubectl("label", "namespace", WORK_NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    cp.kubectl("apply", "-f", str(REPO / "tests/helm/resources/tenants.yaml"))
    client = s3.client()
    client.upload_file(str(DATA), s3.bucket, "helm/data/tone.json")
    s3.upload_folder(tiny_models["llama"], "helm/models/tiny-llama")
    install_release(cp, images, s3.bucket)
    yield cp, s3
    # The release polices its namespaces only, but its operator would go on running: the modules after
    # this one see the cluster without it (the CRD stays, as helm keeps it).
    helm(cp, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", check=False)


def test_install_runs_the_operator_and_every_pass_in_their_images(  # type: ignore[no-untyped-def]
    installed, images, tmp_path: Path
) -> None:
    cp, s3 = installed
    pods = json.loads(cp.kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "json").stdout)["items"]
    operator = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]
    assert operator and operator[0]["spec"]["serviceAccountName"] == f"{RELEASE}-operator"
    assert operator[0]["status"]["phase"] == "Running"
    doc: dict[str, Any] = {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "helm-tone", "namespace": WORK_NS},
        "spec": {
            "input_model": {"model_path": f"s3://{s3.bucket}/helm/models/tiny-llama"},
            "data_configs": [
                {
                    "name": "tone",
                    "load_dataset_config": {
                        "data_name": "json",
                        "data_files": f"s3://{s3.bucket}/helm/data/tone.json",
                    },
                    "pre_process_data_config": {"text_template": "{phrase} {tone}", "max_seq_len": 32},
                }
            ],
            "passes": {
                "lora": LORA,
                "merge": {"type": "MergeAdapterWeights"},
                "builder": {"type": "ModelBuilder", "precision": "int4"},
            },
            "cache_dir": f"s3://{s3.bucket}/helm/cache",
            "output_dir": f"s3://{s3.bucket}/helm/outputs/tone",
            "kubernetes": {"envFrom": [{"secretRef": {"name": "s3-credentials"}}]},
        },
    }
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def phase() -> str | None:
        out = cp.kubectl("get", "owf", "helm-tone", "-n", WORK_NS, "-o", "jsonpath={.status.phase}").stdout
        return out if out in ("Succeeded", "Failed") else None

    assert wait_for(phase, timeout=600) == "Succeeded"
    jobs = json.loads(cp.kubectl("get", "jobs", "-n", WORK_NS, "-o", "json").stdout)["items"]
    jobs = [j for j in jobs if j["metadata"]["labels"].get("olivekube.io/workflow") == "helm-tone"]
    uid = cp.kubectl("get", "owf", "helm-tone", "-n", WORK_NS, "-o", "jsonpath={.metadata.uid}").stdout
    accounts = {j["spec"]["template"]["spec"]["serviceAccountName"] for j in jobs}
    assert accounts == {f"olivekube-runner-helm-tone-{uid[:8]}"}
    # Every pass ran in the runner image, in a container (the node agent reports podman's id).
    selector = "olivekube.io/workflow=helm-tone"
    pods = json.loads(cp.kubectl("get", "pods", "-n", WORK_NS, "-l", selector, "-o", "json").stdout)
    statuses = [p["status"]["containerStatuses"][0] for p in pods["items"]]
    assert len(statuses) == 3 and all(s["containerID"].startswith("podman://") for s in statuses), statuses
    assert {s["image"] for s in statuses} == {images[1]}
    # The operator runs in the operator image as uid 65532, on a read-only root, with no capabilities.
    status = operator[0]["status"]["containerStatuses"][0]
    assert status["image"] == images[0] and status["containerID"].startswith("podman://")
    inspected = json.loads(
        subprocess.run(
            ["podman", "inspect", status["containerID"].removeprefix("podman://")],
            capture_output=True,
            text=True,
            env={**os.environ, "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF)},
        ).stdout
    )[0]
    assert inspected["Config"]["User"] == "65532:65532" and inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["State"]["Running"] is True
    # The int4 model the containers built generates.
    from olivekube.storage.outputs import current_model
    from olivekube.storage.s3 import S3Store

    model = current_model(f"s3://{s3.bucket}/helm/outputs/tone")
    assert model is not None
    S3Store().fetch(model, tmp_path / "int4")
    generated = subprocess.run(
        [str(REPO / ".venv/bin/olivekube"), "generate", str(tmp_path / "int4"), "-p", "great"],
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0 and generated.stdout.startswith("great"), generated.stderr


def _test_pods(cp) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The release's `helm test` pods, by name: their phase."""
    phases = {}
    for ns in (SYSTEM_NS, WORK_NS):
        listing = cp.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/component=test", "-o", "json")
        phases |= {p["metadata"]["name"]: p["status"].get("phase") for p in json.loads(listing.stdout)["items"]}
    return phases


def test_helm_test_runs_the_doctor_on_the_runner_nodes_and_finds_the_operator_answering(installed) -> None:  # type: ignore[no-untyped-def]
    cp, _ = installed
    out = helm(cp, "test", RELEASE, "-n", SYSTEM_NS, "--timeout", "600s", check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _test_pods(cp) == {
        f"{RELEASE}-test-doctor": "Succeeded",
        f"{RELEASE}-test-operator-answers": "Succeeded",
    }
    doctor = json.loads(cp.kubectl("get", "pod", f"{RELEASE}-test-doctor", "-n", WORK_NS, "-o", "json").stdout)
    assert doctor["spec"]["containers"][0]["args"] == ["doctor", "--device", "cpu"]
    # The same test with the GPU path asked of a node with no GPU fails: the doctor's exit code counts.
    helm(
        cp, "upgrade", RELEASE, str(CHART), "-n", SYSTEM_NS, "--reuse-values", "--set", "tests.doctor.device=cuda"
    )
    try:
        failed = helm(cp, "test", RELEASE, "-n", SYSTEM_NS, "--timeout", "300s", check=False)
        assert failed.returncode != 0 and "test-doctor" in failed.stderr, failed.stdout + failed.stderr
        assert _test_pods(cp)[f"{RELEASE}-test-doctor"] == "Failed"
    finally:
        helm(
            cp,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            SYSTEM_NS,
            "--reuse-values",
            "--set",
            "tests.doctor.device=cpu",
        )


def test_rbac_grants_exactly_what_is_used(installed) -> None:  # type: ignore[no-untyped-def]
    cp, _ = installed
    operator = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}-operator"
    assert _can_i(cp, operator, WORK_NS) == _merged(
        OPERATOR_READS, OPERATOR_WRITES, {("jobs.batch", "create delete get list watch")}
    )
    runner = f"system:serviceaccount:{WORK_NS}:olivekube-runner"  # the shared account: no rights of its own
    assert _can_i(cp, runner, WORK_NS) == set()
    assert _can_i(cp, runner, "default") == set(), "the runner has rights outside its namespace"
    for account in (operator, runner):
        for namespace in (WORK_NS, SYSTEM_NS):
            assert (
                cp.kubectl(
                    "auth", "can-i", "get", "secrets", f"--as={account}", "-n", namespace, check=False
                ).stdout.strip()
                == "no"
            )


def test_cluster_wide_the_operator_creates_only_in_the_namespaces_the_admin_opened(installed) -> None:  # type: ignore[no-untyped-def]
    """The RBAC of a cluster-wide release (rendered, applied alone, no operator): it reads workflows
    everywhere, and creates Jobs and identities only in runner.namespaces, never in kube-system."""
    cp, _ = installed
    release, namespace = "wide", "wide-system"
    rendered = helm(
        cp, "template", release, str(CHART), "-n", namespace, "--set", f"runner.namespaces={{{WORK_NS}}}"
    ).stdout
    operator_account = {"kind": "ServiceAccount", "name": f"{release}-operator"}
    rbac = [  # the operator's account and grants (the runner's account in WORK_NS is the installed release's)
        d
        for d in yaml.safe_load_all(rendered)
        if d
        and (
            d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
            or {"kind": d["kind"], "name": d["metadata"]["name"]} == operator_account
        )
    ]
    assert any(d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == WORK_NS for d in rbac)
    cp.kubectl("create", "namespace", namespace, check=False)
    manifest = yaml.safe_dump_all(rbac)
    cp.kubectl("apply", "-f", "-", input=manifest)
    try:
        operator = f"system:serviceaccount:{namespace}:{release}-operator"
        assert _can_i(cp, operator, WORK_NS) == _merged(
            OPERATOR_READS, OPERATOR_WRITES, {("jobs.batch", "create delete get list watch")}
        )
        for closed in ("kube-system", "default"):
            assert _can_i(cp, operator, closed) == OPERATOR_READS | {("jobs.batch", "get list watch")}, closed
        deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert f"--runner-namespace={WORK_NS}" in container["command"]
    finally:
        cp.kubectl("delete", "-f", "-", input=manifest, check=False)
    refused = helm(cp, "template", release, str(CHART), "--set", "runner.namespaces={kube-system}", check=False)
    assert refused.returncode != 0 and "kube-system is the cluster's own namespace" in refused.stderr


def test_upgrade_upgrades_the_crd_and_uninstall_keeps_only_it(installed, images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cp, _ = installed
    chart = tmp_path / "olivekube"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / "olivekube.io_optimizationworkflows.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["upgrade_probe"] = {"type": "string", "description": "A field added by 0.2.0."}
    crd_file.write_text(yaml.safe_dump(crd))
    (chart / "Chart.yaml").write_text(
        (chart / "Chart.yaml").read_text().replace("version: 0.1.0", "version: 0.2.0")
    )
    helm(cp, "upgrade", RELEASE, str(chart), "-n", SYSTEM_NS, "--reuse-values", "--wait", "--timeout", "120s")
    live = json.loads(cp.kubectl("get", "crd", "optimizationworkflows.olivekube.io", "-o", "json").stdout)
    props = live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "upgrade_probe" in props
    helm(cp, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kind, scope in (
        ("deployments,serviceaccounts,roles,rolebindings,services", ["-A"]),
        ("clusterroles,clusterrolebindings", []),
    ):
        left = cp.kubectl("get", kind, *scope, "-l", selector, "-o", "name").stdout.split()
        assert left == [], left
    assert cp.kubectl("get", "crd", "optimizationworkflows.olivekube.io", "-o", "name").stdout.strip()
    # Restore the generated CRD and the release for the tests that run after this one.
    cp.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"),
    )
    install_release(cp, images, installed[1].bucket)


def small_workflow(name: str, s3, **kubernetes: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A one-pass workflow (fp32 ONNX of the tiny model) with what it asks of its pod."""
    spec: dict[str, Any] = {
        "input_model": {"model_path": f"s3://{s3.bucket}/helm/models/tiny-llama"},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "fp32"}},
        "cache_dir": f"s3://{s3.bucket}/helm/cache",
        "output_dir": f"s3://{s3.bucket}/helm/outputs/{name}",
    }
    if kubernetes:
        spec["kubernetes"] = kubernetes
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": name, "namespace": WORK_NS},
        "spec": spec,
    }


def apply_as(cp, user: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return cp.kubectl("apply", f"--as={user}", "-f", "-", input=yaml.safe_dump(doc), check=False)


def finished(cp, name: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "owf", name, "-n", WORK_NS, "-o", "json", check=False)
    status = (json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def jobs_of(cp, name: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "jobs", "-n", WORK_NS, "-l", f"olivekube.io/workflow={name}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


ATTACKS = [
    (
        "hostPath volume",
        {
            "kubernetes": {
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                "volumeMounts": [{"name": "root", "mountPath": "/h"}],
            }
        },
        ["hostPath"],
    ),
    (
        "privileged service account",
        {"kubernetes": {"serviceAccountName": "ops-admin"}},
        ["spec.kubernetes.serviceAccountName"],
    ),
    (
        "image outside the allowlist",
        {"kubernetes": {"image": "docker.io/library/python:3.11"}},
        ["spec.kubernetes.image"],
    ),
    (
        "every taint on a control-plane node",
        {
            "kubernetes": {
                "tolerations": [{"operator": "Exists"}],
                "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            }
        },
        ["spec.kubernetes.nodeSelector", "spec.kubernetes.tolerations"],
    ),
    (
        "a Secret the author cannot read",
        {"kubernetes": {"envFrom": [{"secretRef": {"name": "team-secret"}}]}},
        ["spec.kubernetes.envFrom"],
    ),
    (
        "a mount of the admin's volume elsewhere",
        {"kubernetes": {"volumeMounts": [{"name": "models", "mountPath": "/home"}]}},
        ["spec.kubernetes.volumeMounts"],
    ),
    (
        "the model repository's code",
        {"input_model": {"load_kwargs": {"trust_remote_code": True}}},
        ["spec.input_model.load_kwargs.trust_remote_code"],
    ),
    (
        "the dataset repository's code",
        {
            "data_configs": [
                {"name": "d", "load_dataset_config": {"data_name": "someone/data", "trust_remote_code": True}}
            ]
        },
        ["spec.data_configs.*.load_dataset_config.trust_remote_code"],
    ),
    (
        "Azure credentials sent to another authority",
        {"kubernetes": {"env": [{"name": "AZURE_AUTHORITY_HOST", "value": "https://login.example"}]}},
        ["spec.kubernetes.env: AZURE_AUTHORITY_HOST"],
    ),
    (
        "the store's traffic through the author's proxy",
        {
            "kubernetes": {
                "env": [{"name": "TZ", "value": "UTC"}, {"name": "HTTPS_PROXY", "value": "http://p:3128"}]
            }
        },
        ["spec.kubernetes.env: HTTPS_PROXY"],
    ),
    (
        "the token sent to another API server",
        {"kubernetes": {"env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.9"}]}},
        ["spec.kubernetes.env: KUBERNETES_SERVICE_HOST"],
    ),
    (
        "an S3 endpoint of the author's",
        {"kubernetes": {"env": [{"name": "AWS_ENDPOINT_URL_S3", "value": "http://collector:9000"}]}},
        ["spec.kubernetes.env: AWS_ENDPOINT_URL_S3"],
    ),
    (
        "the runner's rendezvous",  # the operator's own name: the CRD refuses it for everyone
        {"kubernetes": {"env": [{"name": "OLIVEKUBE_MASTER_ADDR", "value": "collector"}]}},
        ["spec.kubernetes.env[0]: Invalid value: the operator sets these in runner pods"],
    ),
    (
        "a runner setting of the admin's",
        {"kubernetes": {"env": [{"name": "OLIVEKUBE_AZUREML_POLL_SECONDS", "value": "0"}]}},
        ["spec.kubernetes.env: OLIVEKUBE_AZUREML_POLL_SECONDS"],
    ),
    (
        "code on the Python path",
        {"kubernetes": {"env": [{"name": "PYTHONPATH", "value": "/tmp/x"}]}},
        ["spec.kubernetes.env: PYTHONPATH"],
    ),
]


@pytest.mark.parametrize(("name", "changes", "fields"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_an_author_who_may_not_create_jobs_cannot_shape_the_pods(installed, name, changes, fields) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    wf = "author-" + re.sub(r"[^a-z0-9]+", "-", name.lower())[:40].strip("-")
    doc = small_workflow(wf, s3)
    doc["spec"] = merge_patch(doc["spec"], changes)
    out = apply_as(cp, "alice", doc)
    assert out.returncode != 0, f"{name}: accepted"
    assert any(f in out.stderr for f in fields), out.stderr
    assert cp.kubectl("get", "owf", wf, "-n", WORK_NS, check=False).returncode != 0
    assert jobs_of(cp, wf) == []


def test_an_author_may_not_change_a_workflow_that_sets_guarded_fields(installed) -> None:  # type: ignore[no-untyped-def]
    """bob, who may create Jobs, makes a (suspended) workflow with his claim mounted; alice, who may
    update workflows, may change neither its data, model, output nor suspend, nor delete its fields."""
    cp, s3 = installed
    doc = small_workflow(
        "editor-guarded",
        s3,
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "bob-models"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
    )
    doc["spec"]["suspend"] = True
    assert (out := apply_as(cp, "bob", doc)).returncode == 0, out.stderr

    def patch_spec(user: str, name: str, change: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"spec": change})
        return cp.kubectl(
            "patch", "owf", name, "-n", WORK_NS, f"--as={user}", "--type=merge", "-p", body, check=False
        )

    for change in [
        {"output_dir": f"s3://{s3.bucket}/helm/outputs/alice-took-it"},
        {"input_model": {"model_path": f"s3://{s3.bucket}/helm/models/alices"}},
        {"suspend": False},
        {"kubernetes": {"volumes": None, "volumeMounts": None}},
    ]:
        patched = patch_spec("alice", "editor-guarded", change)
        assert patched.returncode != 0 and "only such a user may change its spec" in patched.stderr, (
            change,
            patched.stderr,
        )
    held = json.loads(cp.kubectl("get", "owf", "editor-guarded", "-n", WORK_NS, "-o", "json").stdout)["spec"]
    assert held == merge_patch(held, doc["spec"]) and jobs_of(cp, "editor-guarded") == []
    # bob may change it, and alice may still change a workflow of her own
    bob = patch_spec("bob", "editor-guarded", {"output_dir": f"s3://{s3.bucket}/helm/outputs/bobs"})
    assert bob.returncode == 0, bob.stderr
    plain = small_workflow("author-own", s3)
    plain["spec"]["suspend"] = True
    assert (out := apply_as(cp, "alice", plain)).returncode == 0, out.stderr
    own = patch_spec("alice", "author-own", {"output_dir": f"s3://{s3.bucket}/helm/outputs/alices"})
    assert own.returncode == 0, own.stderr
    for name in ("editor-guarded", "author-own"):
        cp.kubectl("delete", "owf", name, "-n", WORK_NS, "--wait=false", check=False)


def test_an_author_may_write_only_under_the_prefixes_the_admin_gave_the_namespace(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    for field, value, allowed in [
        ("output_dir", f"s3://{s3.bucket}/teams/{WORK_NS}/onnx", True),
        ("cache_dir", f"s3://{s3.bucket}/teams/{WORK_NS}/cache", True),
        ("output_dir", f"s3://{s3.bucket}/teams/other-team/onnx", False),
        ("cache_dir", f"s3://{s3.bucket}/teams/other-team/cache", False),
        ("output_dir", f"s3://{s3.bucket}/teams/{WORK_NS}/../other-team/onnx", False),
        ("output_dir", f"s3://{s3.bucket}/teams/{WORK_NS}-b/onnx", False),
    ]:
        doc = small_workflow("author-prefix", s3)
        doc["spec"][field] = value
        out = cp.kubectl(
            "apply", "--dry-run=server", "--as=alice", "-f", "-", input=yaml.safe_dump(doc), check=False
        )
        if allowed:
            assert out.returncode == 0, (value, out.stderr)
        else:
            assert out.returncode != 0 and f"spec.{field}: {value} is not under a prefix" in out.stderr, (
                value,
                out.stderr,
            )
            assert f"s3://{s3.bucket}/teams/{WORK_NS}/" in out.stderr


def test_the_admission_policy_guards_the_env_names_the_api_model_names() -> None:
    template = (CHART / "templates" / "admission-policy.yaml").read_text()
    lists = dict(re.findall(r"\{\{- \$(envNames|envPrefixes) := list (.+?) \}\}", template))
    assert tuple(json.loads(f"[{lists['envNames'].replace(' ', ',')}]")) == GUARDED_ENV_NAMES
    assert tuple(json.loads(f"[{lists['envPrefixes'].replace(' ', ',')}]")) == GUARDED_ENV_PREFIXES


def test_an_authors_plain_workflow_runs_in_a_restricted_namespace(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    assert (
        cp.kubectl("auth", "can-i", "create", "jobs", "--as=alice", "-n", WORK_NS, check=False).stdout.strip()
        == "no"
    )
    plain_env = [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]
    out = apply_as(cp, "alice", small_workflow("author-plain", s3, env=plain_env))
    assert out.returncode == 0, out.stderr
    status = wait_for(lambda: finished(cp, "author-plain"), timeout=300)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    (job,) = jobs_of(cp, "author-plain")
    pod = job["spec"]["template"]["spec"]
    assert plain_env[0] in pod["containers"][0]["env"]
    policies = json.loads(cp.kubectl("get", "networkpolicy", "-n", WORK_NS, "-o", "json").stdout)["items"]
    assert "olivekube-runners" in [p["metadata"]["name"] for p in policies]  # and one per several-pod Job
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The namespace really enforces the restricted standard: a privileged pod is refused there.
    privileged = cp.kubectl(
        "run", "probe", "-n", WORK_NS, "--image=busybox", "--dry-run=server", "--privileged", check=False
    )
    assert privileged.returncode != 0 and "PodSecurity" in privileged.stderr


def test_an_editor_may_use_an_allowlisted_image_and_their_own_claim(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    doc = small_workflow(
        "editor-own",
        s3,
        image=f"{ALLOWED_IMAGE_PREFIX}:dev",
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "bob-models"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
    )
    doc["spec"]["output_dir"] = "pvc://bob-models/onnx"
    out = apply_as(cp, "bob", doc)
    assert out.returncode == 0, out.stderr
    status = wait_for(lambda: finished(cp, "editor-own"), timeout=300)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["outputs"]["uri"].startswith("pvc://bob-models/onnx/versions/")
    (job,) = jobs_of(cp, "editor-own")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"{ALLOWED_IMAGE_PREFIX}:dev"


def test_an_image_outside_the_admins_allowlist_fails_before_any_job(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    out = apply_as(cp, "bob", small_workflow("editor-foreign", s3, image="docker.io/library/python:3.11"))
    assert out.returncode == 0, out.stderr  # bob may create Jobs: the admission policy lets him try
    status = wait_for(lambda: finished(cp, "editor-foreign"), timeout=60)
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "NotAllowed"
    assert "spec.kubernetes.image: docker.io/library/python:3.11 is not allowed" in failed["message"]
    assert jobs_of(cp, "editor-foreign") == []


def test_runner_pods_admit_nothing_and_the_operator_opens_each_several_pod_job_to_itself(
    control_plane,
) -> None:  # type: ignore[no-untyped-def]
    """Runner pods admit no connection; the operator (told so, and allowed to) adds one policy per
    several-pod Job that admits that Job's pods. Turned off, neither exists nor may be made."""
    rendered = helm(control_plane, "template", "x", str(CHART), *VALUE_SETS["namespaced"]).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    runners = {"matchLabels": {"app.kubernetes.io/managed-by": "olivekube"}}
    for policy in policies:
        assert policy["spec"] == {"podSelector": runners, "policyTypes": ["Ingress"]}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert "--rendezvous-network-policies" in deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    policy_rule = {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]}
    assert all(policy_rule in r["rules"] for r in docs if r["kind"] == "Role")
    off = helm(
        control_plane,
        "template",
        "x",
        str(CHART),
        *VALUE_SETS["namespaced"],
        "--set",
        "runner.networkPolicy.enabled=false",
    ).stdout
    assert (
        "NetworkPolicy" not in off and "networkpolicies" not in off and "--rendezvous-network-policies" not in off
    )


def test_the_doctor_test_pod_asks_for_a_gpu_on_the_nodes_gpu_passes_run_on(control_plane) -> None:  # type: ignore[no-untyped-def]
    gpu_nodes = ["--set", "tests.doctor.nodeSelector.gpu=h100", "--set", "tests.doctor.tolerations[0].key=gpu"]
    rendered = helm(control_plane, "template", "x", str(CHART), *VALUE_SETS["namespaced"], *gpu_nodes).stdout
    tests = {d["metadata"]["name"]: d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Pod"}
    assert set(tests) == {"x-test-doctor", "x-test-operator-answers"}
    assert all(t["metadata"]["annotations"]["helm.sh/hook"] == "test" for t in tests.values())
    doctor = tests["x-test-doctor"]
    assert doctor["metadata"]["namespace"] == "team-a"  # the first runner namespace
    assert doctor["spec"]["nodeSelector"] == {"gpu": "h100"} and doctor["spec"]["tolerations"] == [{"key": "gpu"}]
    (container,) = doctor["spec"]["containers"]
    assert container["args"] == ["doctor", "--device", "cuda"] and container["image"] == "olivekube/runner:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu = helm(control_plane, "template", "x", str(CHART), "--set", "tests.doctor.device=cpu").stdout
    (doctor,) = [d for d in yaml.safe_load_all(cpu) if d and d["metadata"]["name"] == "x-test-doctor"]
    assert "nvidia.com/gpu" not in doctor["spec"]["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize(
    ("values", "kind"),
    [(["--set", "operator.replicaCount=2"], "ClusterKopfPeering"), (VALUE_SETS["namespaced"], "KopfPeering")],
)
def test_replicas_peer_with_the_peering_kind_their_mode_needs(control_plane, values: list[str], kind: str) -> None:  # type: ignore[no-untyped-def]
    rendered = helm(control_plane, "template", "x", str(CHART), "--set", "operator.replicaCount=2", *values).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert kind in kinds and ({"ClusterKopfPeering", "KopfPeering"} - {kind}).isdisjoint(kinds)


def test_the_operators_grace_period_covers_its_stop(control_plane) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/operator_scale.py measures the stop after SIGTERM (well under a second at 2,000
    workflows, tests/e2e/test_benchmarks.py checks it prints); the chart grants 30 s, settable."""
    for values, grace in (([], 30), (["--set", "operator.terminationGracePeriodSeconds=5"], 5)):
        rendered = helm(control_plane, "template", "x", str(CHART), *values).stdout
        (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_a_runners_identity_reaches_only_its_own_workflow(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    for name in ("ident-a", "ident-b"):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(small_workflow(name, s3)))
    uid = cp.kubectl("get", "owf", "ident-a", "-n", WORK_NS, "-o", "jsonpath={.metadata.uid}").stdout
    identity = f"olivekube-runner-ident-a-{uid[:8]}"
    account = f"system:serviceaccount:{WORK_NS}:{identity}"
    wait_for(lambda: cp.kubectl("get", "rolebinding", identity, "-n", WORK_NS, check=False).returncode == 0)

    def can(verb: str, what: str, *extra: str) -> str:
        out = cp.kubectl("auth", "can-i", verb, what, *extra, f"--as={account}", "-n", WORK_NS, check=False)
        return out.stdout.strip()

    status = "--subresource=status"
    assert can("patch", "optimizationworkflows.olivekube.io/ident-a", status) == "yes"
    assert can("patch", "optimizationworkflows.olivekube.io/ident-b", status) == "no"
    assert can("get", "optimizationworkflows.olivekube.io/ident-b") == "no"
    assert can("get", "secrets") == "no" and can("create", "pods") == "no"
    refused = cp.kubectl(
        "patch",
        "owf",
        "ident-b",
        "-n",
        WORK_NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"message": "written by another workflow"}}',
        f"--as={account}",
        check=False,
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    # Its own status it still writes: the pass runs to the end under this identity.
    assert wait_for(lambda: finished(cp, "ident-a"), timeout=300)["phase"] == "Succeeded"
    assert "another workflow" not in json.dumps(finished(cp, "ident-b") or {})


def test_no_secret_value_reaches_a_job_spec_status_event_or_log(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    doc = small_workflow("leak-check", s3, envFrom=[{"secretRef": {"name": "team-secret"}}])  # the admin may
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert wait_for(lambda: finished(cp, "leak-check"), timeout=300)["phase"] == "Succeeded"
    secrets = ["do-not-leak", s3.env()["AWS_SECRET_ACCESS_KEY"]]
    seen = [
        cp.kubectl("get", "jobs", "-n", WORK_NS, "-o", "json").stdout,
        cp.kubectl("get", "owf", "-n", WORK_NS, "-o", "json").stdout,
        cp.kubectl("get", "events", "-n", WORK_NS, "-o", "json").stdout,
    ]
    logs = sorted((Path(cp.workdir) / "node" / "pods" / WORK_NS).glob("*/container.log"))
    assert logs, "no pod logs to read"
    seen += [log.read_text(errors="replace") for log in logs]
    for text in seen:
        for secret in secrets:
            assert secret not in text


def test_a_pass_over_its_memory_limit_is_oom_killed_and_the_workflow_says_so(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    doc = small_workflow("too-little-memory", s3, backoffLimit=0)
    doc["spec"]["kubernetes"]["resources"] = {"passes": {"builder": {"limits": {"memory": "150Mi"}}}}
    doc["spec"]["cache_dir"] = f"s3://{s3.bucket}/helm/cache-oom"  # nothing to take from a cache: it builds
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def status() -> dict[str, Any] | None:
        out = cp.kubectl("get", "owf", "too-little-memory", "-n", WORK_NS, "-o", "json").stdout
        found = json.loads(out).get("status") or {}
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    result = wait_for(status, timeout=300)
    assert result["phase"] == "Failed", result
    assert "OOMKilled" in result["message"] and "150Mi" in result["message"], result["message"]


STEPS = 200
"""Steps of the kill-and-resume runs: a kill after the third checkpoint (step 30) lands mid-run."""


def two_pod_training(name: str, s3, **training_args: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """LoRA on two pods (one process each) and a merge after it, in the runner image."""
    lora = json.loads(json.dumps(LORA))
    lora["training_args"].update(training_args)
    doc = small_workflow(name, s3, envFrom=[{"secretRef": {"name": "s3-credentials"}}])
    doc["spec"]["data_configs"] = [
        {
            "name": "tone",
            "load_dataset_config": {"data_name": "json", "data_files": f"s3://{s3.bucket}/helm/data/tone.json"},
            "pre_process_data_config": {"text_template": "{phrase} {tone}", "max_seq_len": 32},
        }
    ]
    doc["spec"]["passes"] = {"lora": lora, "merge": {"type": "MergeAdapterWeights"}}
    doc["spec"]["cache_dir"] = f"s3://{s3.bucket}/helm/cache-{name}"
    doc["spec"]["kubernetes"]["training"] = {"passes": {"lora": {"numNodes": 2, "numProcPerNode": 1}}}
    return doc


def pods_of(cp, job: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = cp.kubectl("get", "pods", "-n", WORK_NS, "-l", f"batch.kubernetes.io/job-name={job}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def test_a_pass_on_two_pods_trains_as_one_and_the_next_pass_runs(installed) -> None:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(two_pod_training("two-pods", s3)))
    status = wait_for(lambda: finished(cp, "two-pods"), timeout=600)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    lora = status["passes"]["lora"]
    assert lora["metrics"]["world_size"] == 2 and lora["metrics"]["steps"] == LORA["training_args"]["max_steps"]
    assert status["passes"]["merge"]["phase"] == "Succeeded"
    (job,) = [j for j in jobs_of(cp, "two-pods") if j["metadata"]["labels"]["olivekube.io/pass"] == "lora"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    pods = pods_of(cp, job["metadata"]["name"])
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded", "Succeeded"]
    assert all(p["status"]["containerStatuses"][0]["containerID"].startswith("podman://") for p in pods)
    service = cp.kubectl(
        "get", "service", job["spec"]["template"]["spec"]["subdomain"], "-n", WORK_NS, "-o", "json"
    )
    assert json.loads(service.stdout)["spec"]["clusterIP"] == "None"
    policy = cp.kubectl(
        "get", "networkpolicy", job["spec"]["template"]["spec"]["subdomain"], "-n", WORK_NS, "-o", "json"
    )
    same_job = {"matchLabels": {"batch.kubernetes.io/job-name": job["metadata"]["name"]}}
    assert json.loads(policy.stdout)["spec"]["ingress"] == [{"from": [{"podSelector": same_job}]}]


def test_one_of_two_pods_deleted_fails_the_attempt_and_the_retry_resumes_exactly(installed) -> None:  # type: ignore[no-untyped-def]
    """The retry resumes both pods' ranks from one checkpoint, which holds each rank's RNG state (pod 1's
    is gathered to pod 0, which publishes): it ends where an uninterrupted two-pod run does."""
    cp, s3 = installed
    whole = two_pod_training("two-pods-whole", s3, max_steps=STEPS, save_strategy="steps", save_steps=10)
    whole["spec"]["passes"].pop("merge")
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(whole))
    # One at a time: the test node runs every pod on the host's network, where two rendezvous on
    # port 29500 would collide (each pod has its own address in a cluster).
    uninterrupted = wait_for(lambda: finished(cp, "two-pods-whole"), timeout=900, step=2)
    assert uninterrupted["phase"] == "Succeeded", json.dumps(uninterrupted, indent=1)
    doc = two_pod_training("two-pods-kill", s3, max_steps=STEPS, save_strategy="steps", save_steps=10)
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def third_checkpoint() -> str | None:
        out = cp.kubectl("get", "owf", "two-pods-kill", "-n", WORK_NS, "-o", "json").stdout
        lora = (json.loads(out).get("status") or {}).get("passes", {}).get("lora") or {}
        return lora.get("jobName") if (lora.get("progress") or {}).get("checkpointStep", 0) >= 30 else None

    first_job = wait_for(third_checkpoint, timeout=600, step=1)
    (second,) = [p for p in pods_of(cp, first_job) if p["metadata"]["name"].startswith(f"{first_job}-1-")]
    cp.kubectl("delete", "pod", second["metadata"]["name"], "-n", WORK_NS, "--wait=false")

    status = wait_for(lambda: finished(cp, "two-pods-kill"), timeout=900, step=2)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    lora = status["passes"]["lora"]
    assert lora["failedJobs"] == [first_job] and lora["attempts"] == 2
    assert lora["metrics"]["resumed_from_step"] >= 30
    assert lora["progress"]["resumedFromStep"] == lora["metrics"]["resumed_from_step"]
    assert lora["metrics"]["steps"] == STEPS
    expected = uninterrupted["passes"]["lora"]
    if abs(lora["metrics"]["eval_loss"] - expected["metrics"]["eval_loss"]) >= 1e-5:
        differ = first_difference(training_losses(s3, lora), training_losses(s3, expected))
        raise AssertionError(
            f"eval loss {lora['metrics']['eval_loss']} vs {expected['metrics']['eval_loss']}: {differ}"
        )


def one_pod_training(name: str, s3) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    doc = two_pod_training(name, s3, max_steps=STEPS, save_strategy="steps", save_steps=10)
    doc["spec"]["kubernetes"].pop("training")
    doc["spec"]["passes"].pop("merge")
    return doc


@pytest.fixture(scope="module")
def uninterrupted(installed) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    cp, s3 = installed
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(one_pod_training("whole-run", s3)))
    status = wait_for(lambda: finished(cp, "whole-run"), timeout=600, step=2)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    return dict(status["passes"]["lora"])


def training_losses(s3, lora: dict[str, Any]) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Each logged step's training loss, from the log the LoRA pass published with its output."""
    bucket, prefix = lora["artifact"]["uri"].removeprefix("s3://").split("/", 1)
    body = s3.client().get_object(Bucket=bucket, Key=f"{prefix}/olivekube-training-log.json")["Body"].read()
    return {entry["step"]: entry["loss"] for entry in json.loads(body) if "loss" in entry}


def first_difference(ours: dict[int, float], theirs: dict[int, float]) -> str:
    """Where two runs' training losses first part, for the failure message."""
    for step in sorted(ours):
        if step in theirs and abs(ours[step] - theirs[step]) > 1e-6:
            return f"losses first differ at step {step}: {ours[step]} vs {theirs[step]}"
    return "the logged training losses agree"


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_a_runner_killed_after_its_third_checkpoint_resumes_to_the_same_eval_loss(  # type: ignore[no-untyped-def]
    installed, uninterrupted: dict[str, Any], sig: str
) -> None:
    cp, s3 = installed
    name = f"killed-{sig.lower()}"
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(one_pod_training(name, s3)))

    def third_checkpoint() -> str | None:
        out = cp.kubectl("get", "owf", name, "-n", WORK_NS, "-o", "json").stdout
        lora = (json.loads(out).get("status") or {}).get("passes", {}).get("lora") or {}
        return lora.get("jobName") if (lora.get("progress") or {}).get("checkpointStep", 0) >= 30 else None

    job = wait_for(third_checkpoint, timeout=600, step=0.5)

    def container_of_the_pod() -> str | None:
        """Its container's id, once the node agent has reported it: the runner may train, and report
        progress, before that (as under a kubelet, whose status updates lag the container too)."""
        (pod,) = pods_of(cp, job)
        statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
        found = str(statuses[0].get("containerID") or "").removeprefix("podman://")
        return found if found and found != "unknown" else None

    container = wait_for(container_of_the_pod, timeout=120, step=0.5)
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF)}
    subprocess.run(["podman", "kill", "--signal", sig, container], env=env, check=True, capture_output=True)

    status = wait_for(lambda: finished(cp, name), timeout=600, step=2)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    lora = status["passes"]["lora"]
    assert lora["failedJobs"] == [job]
    assert lora["metrics"]["resumed_from_step"] >= 30 and lora["metrics"]["steps"] == STEPS
    expected = uninterrupted["metrics"]["eval_loss"]
    if abs(lora["metrics"]["eval_loss"] - expected) >= 1e-5:
        differ = first_difference(training_losses(s3, lora), training_losses(s3, uninterrupted))
        raise AssertionError(f"eval loss {lora['metrics']['eval_loss']} vs {expected}: {differ}; {lora}")


def test_a_release_that_watches_namespaces_polices_workflows_there_only(control_plane) -> None:  # type: ignore[no-untyped-def]
    """Another namespace's workflows are another release's to police (or no one's): with this release's
    writable prefixes bound everywhere, an earlier version refused every other namespace's stores."""

    def binding(*values: str) -> dict[str, Any]:
        rendered = helm(control_plane, "template", "x", str(CHART), *values).stdout
        (found,) = [
            d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ValidatingAdmissionPolicyBinding"
        ]
        return dict(found["spec"])

    names = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    assert binding(*VALUE_SETS["namespaced"])["matchResources"] == {
        "namespaceSelector": {"matchExpressions": [names]}
    }
    assert "matchResources" not in binding()  # cluster-wide: every namespace
