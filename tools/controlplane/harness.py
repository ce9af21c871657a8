"""Start a local control plane on loopback and stop everything it started.

kine (SQLite, speaks etcd), kube-apiserver, kube-controller-manager and kube-scheduler, built from
Go modules by build.sh, and the test node agent (one node with 8 `nvidia.com/gpu`: node_agent.py),
with fresh certificates, service-account keys and an admin client certificate. Use it as a context
manager (the pytest session fixture does), or from a shell:

    python -m tools.controlplane.harness up      # prints `export KUBECONFIG=...`, runs until Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "controlplane" / "build.sh"
CONTROLLERS = [
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "ttl-after-finished-controller",
    "clusterrole-aggregation-controller",  # fills the built-in admin, edit and view roles
    "pod-garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",  # binds claims to volumes: the scheduler places no pod on an unbound one
]


class ControlPlaneError(RuntimeError):
    """A component is missing or did not become ready."""


def bin_dir(build: bool = False) -> Path:
    """The folder of the pinned binaries; builds them first when `build` is true."""
    if build:
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True)
        return Path(out.stdout.strip().splitlines()[-1])
    env_dir = os.environ.get("OLIVEKUBE_CONTROLPLANE_BIN")
    if env_dir:
        return Path(env_dir)
    out = subprocess.run(
        ["bash", "-c", f"source <(sed -n '/^K8S_VERSION/,/^BIN=/p' {BUILD_SCRIPT}); echo $BIN"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(Path.home())},
    )
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, an admin client certificate, and SA keys."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=olivekube-test-ca",
        cwd=pki,
    )
    (pki / "serving.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in (
        ("serving", "/CN=kube-apiserver", "serving.ext"),
        ("admin", "/O=system:masters/CN=olivekube-admin", "client.ext"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subj,
            cwd=pki,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            ext,
            cwd=pki,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: olivekube-test
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: admin
  user:
    client-certificate: {pki / "admin.crt"}
    client-key: {pki / "admin.key"}
contexts:
- name: olivekube-test
  context: {{cluster: olivekube-test, user: admin, namespace: default}}
current-context: olivekube-test
"""
    )


@dataclass
class ControlPlane:
    """A running control plane. `kubeconfig` is an admin kubeconfig for it."""

    workdir: Path
    bin: Path
    server: str = ""
    kubeconfig: Path = Path()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)
    startup_seconds: float = 0.0

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        exe = Path(args[0]) if Path(args[0]).is_absolute() else self.bin / args[0]
        if not exe.exists():
            raise ControlPlaneError(f"{exe} is missing: run {BUILD_SCRIPT}")
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        self.commands[name] = (args, env)
        self.processes[name] = subprocess.Popen(
            [str(exe), *args[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
            env=env,
        )

    def start_node_agent(self) -> None:
        """Start the test node agent, which runs pods as local processes."""
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        self._start(
            "node-agent",
            [
                sys.executable,
                "-m",
                "tools.controlplane.node_agent",
                f"--kubeconfig={self.kubeconfig}",
                f"--workdir={self.workdir / 'node'}",
            ],
            env={**os.environ, "OLIVEKUBE_API_HOST": host, "OLIVEKUBE_API_PORT": port, "PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(Exception):
                self.get("/api/v1/nodes/olivekube-test-node", timeout=2)
                return
            time.sleep(0.1)
        raise ControlPlaneError("the node agent did not register its node")

    def start(self, timeout: float = 60, node_agent: bool = True) -> ControlPlane:
        began = time.monotonic()
        pki = self.workdir / "pki"
        make_certs(pki)
        kine_port, api_port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, self.server, pki)
        self._start(
            "kine",
            [
                "kine",
                f"--listen-address=127.0.0.1:{kine_port}",
                "--metrics-bind-address=0",
                f"--endpoint=sqlite://{self.workdir}/state.db?_journal=WAL&cache=shared&_busy_timeout=30000",
            ],
        )
        self._wait_port(kine_port, "kine", began + timeout)
        self._start(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{kine_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={pki}",
                "--storage-media-type=application/json",
            ],
        )
        self._wait_ready(began + timeout)
        self._start(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--concurrent-job-syncs=10",
                "--concurrent-gc-syncs=10",
            ],
        )
        self._wait_default_service_account(began + timeout)
        if node_agent:  # the scheduler places pods on the agent's node as on any cluster's
            self._start(
                "kube-scheduler",
                [
                    "kube-scheduler",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                ],
            )
            self.start_node_agent()
        self.startup_seconds = time.monotonic() - began
        return self

    def crash(self, name: str) -> None:
        """SIGKILL one component, as a crash or a node failure would."""
        proc = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, name: str, down_seconds: float = 2.0, timeout: float = 60) -> None:
        """Crash one component (kine, kube-apiserver, ...), keep it down a while, start it again with
        the same command, and wait until the API server answers ready (with its storage) again."""
        self.crash(name)
        time.sleep(down_seconds)
        self._start(name, *self.commands[name])
        self._wait_ready(time.monotonic() + timeout)

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_port(self, port: int, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.05)
        raise ControlPlaneError(f"{name} did not listen on {port}")

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5) -> str:
        """GET a path of the API server as admin."""
        with urllib.request.urlopen(f"{self.server}{path}", context=self.ssl_context(), timeout=timeout) as r:
            return str(r.read().decode())

    def _wait_ready(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.get("/readyz", timeout=2) == "ok":
                    return
            except Exception as exc:  # not up yet
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(f"kube-apiserver not ready: {last}")

    def _wait_default_service_account(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(Exception):
                self.get("/api/v1/namespaces/default/serviceaccounts/default", timeout=2)
                return
            time.sleep(0.1)
        raise ControlPlaneError("the service-account controller did not create default/default")

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane. With `check`, a failure raises
        ControlPlaneError carrying kubectl's own words."""
        out = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
        )
        if check and out.returncode != 0:
            words = out.stderr.strip()[-2000:]
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited {out.returncode}: {words}")
        return out

    def env(self) -> dict[str, str]:
        """Environment for child processes: KUBECONFIG and the binaries on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def stop(self) -> None:
        """Stop every process this control plane started, by process id (newest first)."""
        for _name, proc in reversed(list(self.processes.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()


@contextlib.contextmanager
def control_plane(workdir: Path | None = None, keep: bool = False) -> Iterator[ControlPlane]:
    """Start a control plane in `workdir` (a fresh temporary folder by default) and stop it after."""
    own = workdir is None
    path = Path(tempfile.mkdtemp(prefix="olivekube-cp-")) if workdir is None else workdir
    cp = ControlPlane(workdir=path, bin=bin_dir())
    try:
        yield cp.start()
    finally:
        cp.stop()
        if own and not keep:
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "build"):
        print("usage: python -m tools.controlplane.harness up|build [WORKDIR]", file=sys.stderr)
        raise SystemExit(2)
    if sys.argv[1] == "build":
        print(bin_dir(build=True))
        return
    workdir = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    with control_plane(workdir, keep=True) as cp:
        print(f"# control plane up in {cp.startup_seconds:.1f}s; logs in {cp.workdir}", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"export PATH={cp.bin}:$PATH", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
