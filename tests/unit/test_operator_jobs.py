"""Job rendering is a pure function of the workflow and the pass."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from olivekube.api.workflow import parse_workflow
from olivekube.operator.jobs import OperatorSettings, build_job, job_name
from tests.helpers.manifests import valid_manifest

SETTINGS = OperatorSettings(
    runner_image="olivekube/runner:1.2.3", scratch_request="2Gi", scratch_size_limit="20Gi"
)


def render(doc: dict[str, Any], pass_name: str = "lora", attempt: int = 0) -> dict[str, Any]:
    return build_job(parse_workflow(doc), "uid-1", pass_name, "k" * 64, attempt, SETTINGS)


def test_job_runs_the_runner_for_one_pass_with_an_owner() -> None:
    job = render(valid_manifest())
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["olivekube", "runner", "--workflow", "ml/tone", "--pass", "lora"]
    assert container["image"] == "olivekube/runner:1.2.3"
    assert job["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "name": "tone",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert (
        job["spec"]["template"]["spec"]["serviceAccountName"] == "olivekube-runner-tone-uid-1"
    )  # its own identity
    assert job["metadata"]["labels"]["olivekube.io/pass"] == "lora"


def test_job_names_are_deterministic_and_short() -> None:
    assert job_name("tone", "lora", "abcdef0123", 2) == "tone-lora-abcdef01-2"
    long = job_name("a" * 60, "merge_adapter_weights", "0" * 64, 10)
    assert len(long) <= 63 and long == job_name("a" * 60, "merge_adapter_weights", "0" * 64, 10)
    assert long != job_name("a" * 59 + "b", "merge_adapter_weights", "0" * 64, 10)


def test_training_on_a_gpu_system_requests_a_gpu_and_builder_does_not() -> None:
    doc = valid_manifest()
    doc["spec"]["host"] = "gpu"
    doc["spec"]["systems"]["gpu"].pop("nodeSelector")
    assert render(doc)["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": 1},
        "requests": {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "2Gi"},
    }
    assert render(doc, "builder")["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "2Gi"}
    }


def test_kubernetes_settings_reach_the_pod() -> None:
    doc = copy.deepcopy(valid_manifest())
    doc["spec"]["kubernetes"] = {
        "image": "registry/olivekube-runner:9",
        "imagePullPolicy": "Always",
        "serviceAccountName": "trainer",
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "envFrom": [{"secretRef": {"name": "s3"}}],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}],
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "resources": {"passes": {"lora": {"limits": {"nvidia.com/gpu": 2}}}},
        "queueName": "team-a",
        "activeDeadlineSeconds": 3600,
        "ttlSecondsAfterFinished": 600,
        "priorityClassName": "high",
    }
    job = render(doc)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry/olivekube-runner:9" and container["imagePullPolicy"] == "Always"
    assert pod["serviceAccountName"] == "trainer" and pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["tolerations"][0]["key"] == "gpu"
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert {"name": "OLIVEKUBE_PVC_MOUNTS", "value": '{"model-cache": "/cache"}'} in container["env"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 2}, "requests": {"ephemeral-storage": "2Gi"}}
    assert pod["volumes"][1:] == [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}]
    assert container["volumeMounts"][1:] == [{"name": "cache", "mountPath": "/cache"}]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and job["spec"]["suspend"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 3600 and job["spec"]["ttlSecondsAfterFinished"] == 600


def test_every_runner_pod_meets_the_restricted_pod_security_standard() -> None:
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    doc["spec"]["kubernetes"]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod = render(doc)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The root file system is read-only: the scratch emptyDir at /tmp is where the runner writes.
    assert pod["volumes"][0] == {"name": "olivekube-scratch", "emptyDir": {"sizeLimit": "20Gi"}}
    assert container["volumeMounts"][0] == {"name": "olivekube-scratch", "mountPath": "/tmp"}
    assert container["workingDir"] == "/tmp"
    assert {"name": "HOME", "value": "/tmp"} in container["env"] and {
        "name": "TMPDIR",
        "value": "/tmp",
    } in container["env"]
    assert container["resources"]["requests"]["ephemeral-storage"] == "2Gi"
    kinds = {k for v in pod["volumes"] for k in v if k != "name"}
    assert kinds <= {"emptyDir", "persistentVolumeClaim", "configMap", "secret", "csi", "ephemeral", "projected"}


def test_a_users_ephemeral_storage_request_is_kept() -> None:
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["resources"] = {"default": {"requests": {"ephemeral-storage": "50Gi", "cpu": 2}}}
    container = render(doc)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"ephemeral-storage": "50Gi", "cpu": 2}}


def test_finished_jobs_go_after_a_default_ttl_unless_the_workflow_names_one() -> None:
    doc = valid_manifest()
    assert render(doc)["spec"]["ttlSecondsAfterFinished"] == SETTINGS.job_ttl_seconds == 86400
    doc["spec"]["kubernetes"]["ttlSecondsAfterFinished"] = 0
    assert render(doc)["spec"]["ttlSecondsAfterFinished"] == 0
    keep = dataclasses.replace(SETTINGS, job_ttl_seconds=None)
    job = build_job(parse_workflow(valid_manifest()), "uid-1", "lora", "k" * 64, 0, keep)
    assert "ttlSecondsAfterFinished" not in job["spec"]


def test_runner_pods_get_the_admins_grace_period_to_checkpoint_after_sigterm() -> None:
    assert render(valid_manifest())["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    longer = dataclasses.replace(SETTINGS, termination_grace_seconds=600)
    job = build_job(parse_workflow(valid_manifest()), "uid-1", "lora", "k" * 64, 0, longer)
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 600


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_pass_on_several_nodes_is_an_indexed_job_under_a_headless_service() -> None:
    from olivekube.operator.jobs import build_rendezvous_network_policy, build_rendezvous_service

    doc = valid_manifest()
    doc["spec"]["kubernetes"] = {"training": {"passes": {"lora": {"numNodes": 3, "numProcPerNode": 2}}}}
    job = render(doc)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    name, service = job["metadata"]["name"], pod["subdomain"]
    assert service[0].isalpha() and len(service) <= 63
    assert env_of(job)["OLIVEKUBE_NPROC_PER_NODE"] == "2"
    assert env_of(job)["OLIVEKUBE_NUM_NODES"] == "3"
    assert env_of(job)["OLIVEKUBE_MASTER_ADDR"] == f"{name}-0.{service}.ml.svc"
    rendezvous = build_rendezvous_service(job, "uid-1")
    assert rendezvous["metadata"]["name"] == service and rendezvous["metadata"]["namespace"] == "ml"
    assert rendezvous["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {"batch.kubernetes.io/job-name": name},
    }
    assert rendezvous["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    policy = build_rendezvous_network_policy(job, "uid-1")
    same_job = {"matchLabels": {"batch.kubernetes.io/job-name": name}}
    assert policy["metadata"] == rendezvous["metadata"]
    assert policy["spec"] == {
        "podSelector": same_job,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": same_job}]}],
    }
    # the other passes of the workflow stay one pod, one process
    builder = render(doc, "builder")
    assert "completionMode" not in builder["spec"] and "OLIVEKUBE_NPROC_PER_NODE" not in env_of(builder)


def test_processes_per_pod_default_to_the_gpus_it_asks_for() -> None:
    doc = valid_manifest()
    doc["spec"]["kubernetes"] = {
        "training": {"default": {}},
        "resources": {"passes": {"lora": {"limits": {"nvidia.com/gpu": 4}}}},
    }
    job = render(doc)
    assert env_of(job)["OLIVEKUBE_NPROC_PER_NODE"] == "4"
    assert "completionMode" not in job["spec"] and "OLIVEKUBE_NUM_NODES" not in env_of(job)


def test_training_settings_must_name_a_training_pass() -> None:
    import pydantic
    import pytest

    doc = valid_manifest()
    doc["spec"]["kubernetes"] = {"training": {"passes": {"builder": {"numNodes": 2}}}}
    with pytest.raises(
        pydantic.ValidationError, match=r"kubernetes.training.passes: builder is not a training pass"
    ):
        parse_workflow(doc)


def test_the_api_server_s_list_of_training_types_is_the_models() -> None:
    from olivekube.api.passes import PASS_TYPES
    from olivekube.api.workflow import TRAINING_TYPES_CEL

    trains = {name for name, model in PASS_TYPES.items() if model.trains}
    assert set(TRAINING_TYPES_CEL.strip("[]").replace("'", "").split(", ")) == trains


def test_the_runner_reads_its_topology_as_the_operator_wrote_it() -> None:
    from olivekube.runner.distributed import Topology, topology_from_env

    doc = valid_manifest()
    doc["spec"]["kubernetes"] = {"training": {"default": {"numNodes": 2, "numProcPerNode": 3}}}
    env = {**env_of(render(doc)), "JOB_COMPLETION_INDEX": "1"}
    topology = topology_from_env(env)
    assert topology == Topology(3, 2, 1, env["OLIVEKUBE_MASTER_ADDR"])
    assert topology_from_env({}) == Topology()


def test_the_authors_env_comes_first_and_the_operators_own_names_last() -> None:
    doc = valid_manifest()
    doc["spec"]["kubernetes"]["env"] = [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]
    env = render(doc, attempt=2)["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names[0] == "TOKENIZERS_PARALLELISM"
    assert names.index("HOME") > 0 and names.index("TMPDIR") > 0 and names.index("OLIVEKUBE_ATTEMPT") > 0
    assert len(names) == len(set(names))
