"""Session fixtures shared by every test folder, and the rule that CI skips nothing."""

from __future__ import annotations

import os
import time

import pytest

REQUIRE_ALL = os.environ.get("OLIVEKUBE_REQUIRE_ALL") == "1" or os.environ.get("CI") == "true"
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_ALL and _skipped:
        print(f"\nCI requires every test to run; {len(_skipped)} skipped:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real control plane (kine, kube-apiserver, kube-controller-manager) plus the node agent.

    A missing binary is an error, never a skip: build them with tools/controlplane/build.sh.
    """
    from tools.controlplane.harness import control_plane as start

    with start(tmp_path_factory.mktemp("controlplane")) as cp:
        print(f"\ncontrol plane started in {cp.startup_seconds:.1f}s")
        yield cp


@pytest.fixture(scope="session")
def crd_installed(control_plane):  # type: ignore[no-untyped-def]
    """The generated CRD, applied and Established."""
    from pathlib import Path

    crd = Path(__file__).resolve().parents[1] / "crds" / "olivekube.io_optimizationworkflows.yaml"
    control_plane.kubectl("apply", "--server-side", "-f", str(crd))
    # Established comes from the API server's CRD controller; on a loaded machine (CI's, with the image
    # builds beside it) it once took over 30 s, so wait longer and say what the CRD's status was.
    name = "crd/optimizationworkflows.olivekube.io"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = control_plane.kubectl("wait", "--for=condition=Established", name, "--timeout=20s", check=False)
        if out.returncode == 0:
            return control_plane
    status = control_plane.kubectl("get", name, "-o", "jsonpath={.status}", check=False)
    pytest.fail(f"the CRD was not Established in 180 s: {out.stderr.strip()}; status {status.stdout}")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real S3-compatible server (gofakes3) on loopback; its variables are set for this process."""
    from tools.s3server import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Tiny random Phi-3, Llama and Qwen2 models with a BPE tokenizer trained on the tone data."""
    from tests.helpers.manifests import ARCHS, DATA
    from tools.tiny_models import make_model, texts_from_json

    root = tmp_path_factory.mktemp("models")
    texts = texts_from_json(DATA)
    return {arch: make_model(root / arch, arch, texts) for arch in ARCHS}


_NETWORK_GUARD = {"on": False}


def _loopback_only(event: str, args: tuple) -> None:  # type: ignore[type-arg]
    if not _NETWORK_GUARD["on"] or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    host = args[1][0] if event == "socket.connect" and isinstance(args[1], tuple) else args[0]
    if event == "socket.connect" and not isinstance(args[1], tuple):
        return  # a Unix socket
    if str(host) not in ("127.0.0.1", "::1", "localhost", "b'127.0.0.1'") and not str(host).startswith("127."):
        raise ConnectionRefusedError(f"test tried to reach the network: {event} {host}")


@pytest.fixture
def no_network():  # type: ignore[no-untyped-def]
    """Fail any connection (or name lookup) of this process beyond loopback while the test runs."""
    import sys

    if not getattr(_loopback_only, "installed", False):
        sys.addaudithook(_loopback_only)
        _loopback_only.installed = True  # type: ignore[attr-defined]
    _NETWORK_GUARD["on"] = True
    try:
        yield
    finally:
        _NETWORK_GUARD["on"] = False


@pytest.fixture
def fake_azureml(no_network: None, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The local stand-in for Azure, with this process's environment pointed at it (and restored)."""
    from tools.fake_azureml import FakeAzureML

    server = FakeAzureML().start()
    for key, value in {**server.env(), **server.credentials(), **server.proxy_env()}.items():
        monkeypatch.setenv(key, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """The images tools/images.sh built from the Dockerfile (or found in its cache), by target:
    operator, runner-cpu and runner (the GPU runner)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "images.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return dict(zip(("operator", "runner-cpu", "runner"), out.stdout.strip().splitlines()[-3:], strict=True))


@pytest.fixture(scope="session")
def images(built_images: dict[str, str]) -> tuple[str, str]:
    """(operator, runner): the operator image and the CPU runner image the test cluster runs."""
    return built_images["operator"], built_images["runner-cpu"]
