"""A real S3-compatible server on loopback for the tests: gofakes3, built from Go modules by
tools/controlplane/build.sh. Started as its own process; stopped by process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.controlplane.harness import bin_dir, free_port


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    proc: subprocess.Popen[bytes] | None = None
    relaunch: Callable[[], subprocess.Popen[bytes]] | None = None
    objects: Path | None = None

    def restart(self, down_seconds: float = 2.0) -> None:
        """SIGKILL the server, keep it down a while, and start it again on the same port and files."""
        assert self.proc is not None and self.relaunch is not None
        _stop(self.proc, signal.SIGKILL)
        time.sleep(down_seconds)
        self.proc = self.relaunch()

    def env(self) -> dict[str, str]:
        """Variables that point boto3 (and so the runner) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "olivekube-test",
            "AWS_SECRET_ACCESS_KEY": "olivekube-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_secret(self, cp, namespace: str, name: str = "s3-credentials") -> None:  # type: ignore[no-untyped-def]
        """A Secret with this server's variables, for envFrom in pods of `namespace` (kept if present)."""
        literals = [f"--from-literal={k}={v}" for k, v in self.env().items()]
        cp.kubectl("create", "secret", "generic", name, "-n", namespace, *literals, check=False)

    def upload_folder(self, folder: Path, prefix: str) -> str:
        """Upload every file of `folder` under `prefix`; returns its s3:// URI."""
        client = self.client()
        for path in folder.iterdir():
            client.upload_file(str(path), self.bucket, f"{prefix}/{path.name}")
        return f"s3://{self.bucket}/{prefix}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            config=Config(s3={"addressing_style": "path"}),
        )


def _launch(workdir: Path, port: int, bucket: str) -> subprocess.Popen[bytes]:
    exe = bin_dir() / "gofakes3"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run tools/controlplane/build.sh")
    log = open(workdir / "gofakes3.log", "ab")  # noqa: SIM115 - the process owns it
    command = [str(exe), "-host", f"127.0.0.1:{port}", "-backend", "fs", "-fs.path", str(workdir / "s3")]
    proc = subprocess.Popen(
        [*command, "-fs.create", "-initialbucket", bucket, "-autobucket"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gofakes3 exited: {(workdir / 'gofakes3.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc
        time.sleep(0.05)
    raise RuntimeError(f"gofakes3 did not listen on {port}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=10)


@contextlib.contextmanager
def s3_server(workdir: Path, bucket: str = "olivekube") -> Iterator[S3Server]:
    port = free_port()
    server = S3Server(f"http://127.0.0.1:{port}", bucket)
    server.relaunch = lambda: _launch(workdir, port, bucket)
    server.objects = workdir / "s3" / "buckets" / bucket  # the -fs backend's files, one per object
    server.proc = server.relaunch()
    try:
        yield server
    finally:
        if server.proc is not None:
            _stop(server.proc)
