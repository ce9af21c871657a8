"""The images, built from the Dockerfile by tools/images.sh, run in real OCI containers (podman with
runc) under the restricted Pod Security settings the chart gives every pod: uid 65532, read-only
root file system, all capabilities dropped, no new privileges, a writable /tmp only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.manifests import DATA, LORA, REPO, workflow_doc, write

STORAGE_CONF = Path.home() / ".cache/olivekube/containers/storage.conf"
RESTRICTED = [
    "--runtime", "runc", "--network", "host",
    "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=4096:4096",
    "--read-only", "--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
]  # fmt: skip


def podman(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def test_the_operator_image_runs_olivekube_as_65532_on_a_read_only_root(images) -> None:  # type: ignore[no-untyped-def]
    operator, _ = images
    who = podman("run", "--rm", *RESTRICTED, "--entrypoint", "id", operator)
    assert who.returncode == 0 and who.stdout.startswith("uid=65532"), who.stdout + who.stderr
    run = podman("run", "--rm", *RESTRICTED, operator, "operator", "--help")
    assert run.returncode == 0 and "--runner-image" in run.stdout, run.stdout + run.stderr
    size = int(podman("image", "inspect", "--format", "{{.Size}}", operator).stdout)
    # 250 MB is the bound, and 225 MB leaves a tenth of it for ordinary updates of the lock
    assert size <= 225 * 1000**2, f"the operator image is {size / 1e6:.1f} MB"


INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def _locked(requirements: str) -> dict[str, str]:
    text = (REPO / "requirements" / requirements).read_text()
    return {_name(name): version for name, version in re.findall(r"^(\S+?)==(\S+)", text, flags=re.M)}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    ("target", "requirements"),
    [("operator", "operator.txt"), ("runner-cpu", "runner-cpu.txt"), ("runner", "runner-cuda.txt")],
)
def test_each_image_holds_exactly_the_locked_packages(built_images, target: str, requirements: str) -> None:  # type: ignore[no-untyped-def]
    run = podman("run", "--rm", *RESTRICTED, "--entrypoint", "python3", built_images[target], "-c", INSTALLED)
    assert run.returncode == 0, run.stderr[-3000:]
    installed = {_name(name): version for name, version in json.loads(run.stdout).items()}
    assert installed.pop("olivekube") == "0.1.0"
    assert installed == _locked(requirements)


def test_the_operator_image_keeps_the_aws_models_its_s3_client_and_credentials_need(images) -> None:  # type: ignore[no-untyped-def]
    script = (
        "import boto3; s = boto3.Session(region_name='us-east-1'); "
        "[s.client(n) for n in ('s3', 'sts', 'sso', 'sso-oidc', 'signin')]; "
        "print(' '.join(sorted(s.get_available_services())))"
    )
    run = podman("run", "--rm", *RESTRICTED, "--entrypoint", "python3", images[0], "-c", script)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["s3", "signin", "sso", "sso-oidc", "sts"]


def test_the_gpu_runner_image_resolves_its_cuda_libraries_and_runs_the_cpu_path(built_images) -> None:  # type: ignore[no-untyped-def]
    """No GPU here: the doctor checks that onnxruntime lists its CUDA provider and that every library
    of the CUDA providers and of bitsandbytes' CUDA build resolves but the driver's, then runs a QLoRA,
    merge, int4 build and generation on the CPU in the same image (one image serves both kinds of node)."""
    small = ["--steps", "4", "--hidden", "64", "--layers", "2", "--new-tokens", "8"]
    run = podman("run", "--rm", *RESTRICTED, built_images["runner"], "doctor", "--device", "cpu", "--json", *small)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(run.stdout)}
    assert {c["state"] for c in checks.values()} == {"ok"}, checks
    assert "CUDAExecutionProvider listed" in checks["cuda libraries"]["detail"]
    assert "libbitsandbytes_cuda" in checks["cuda libraries"]["detail"]


def _workflow_in(folder: Path, tiny_models, passes: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    """A workflow whose paths are relative to its own folder (mounted at /work in the container)."""
    shutil.copytree(tiny_models["phi3"], folder / "model")
    shutil.copy(DATA, folder / "tone.json")
    doc = workflow_doc("model", "tone.json", passes, cache_dir="/out/cache", output_dir="/out/model")
    write(folder / "workflow.json", doc)
    for path in [folder, *folder.rglob("*")]:  # readable by the container's user, as a ConfigMap or PVC would be
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_the_runner_image_runs_a_whole_workflow_and_its_int4_model_generates(  # type: ignore[no-untyped-def]
    images, tiny_models, tmp_path
) -> None:
    _, runner = images
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    os.chown(out, 65532, 65532)
    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4"},
    }
    _workflow_in(work, tiny_models, passes)
    run = podman(
        "run", "--rm", *RESTRICTED, "--tmpfs", "/tmp:rw,size=2g,mode=1777",
        "-v", f"{work}:/work:ro", "-v", f"{out}:/out", runner, "run", "/work/workflow.json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    pointer = json.loads((out / "model" / "olivekube-output.json").read_text())
    model = out / "model" / pointer["current"]
    generated = subprocess.run(
        [str(REPO / ".venv/bin/olivekube"), "generate", str(model), "-p", "### Text: hi"],
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0 and generated.stdout.startswith("### Text: hi"), generated.stderr


def test_a_runner_under_a_memory_limit_too_small_is_oom_killed(images, tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, runner = images
    work = tmp_path / "work"
    work.mkdir()
    _workflow_in(work, tiny_models, {"lora": LORA})
    name = f"olivekube-oom-{os.getpid()}"
    run = podman(
        "run", "--name", name, *RESTRICTED, "--memory", "150m", "--memory-swap", "150m",
        "--tmpfs", "/tmp:rw,size=1g,mode=1777", "--tmpfs", "/out:rw,size=1g,mode=1777",
        "-v", f"{work}:/work:ro", runner, "run", "/work/workflow.json",
        cwd=tmp_path,  # conmon writes an `oom` file into its working folder when the kernel kills the container
    )  # fmt: skip
    try:
        inspected = json.loads(podman("inspect", name).stdout)[0]
    finally:
        podman("rm", "-f", name)
    assert run.returncode == 137, (run.returncode, run.stderr[-2000:])
    assert oom_killed(inspected), "exit 137, but no OOM kill of the container's memory cgroup was recorded"


def oom_killed(container: dict) -> bool:  # type: ignore[type-arg]
    """Whether the kernel's memory-cgroup OOM killer ended the container. podman 4.3 with runc on these
    hybrid cgroups does not set State.OOMKilled; the kernel log names the container's cgroup."""
    if container["State"].get("OOMKilled"):
        return True
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return any("oom-kill" in line and f"libpod-{container['Id']}" in line for line in kernel.splitlines())
