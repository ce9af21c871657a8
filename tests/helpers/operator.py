"""The operator as a process of its own, and the namespace it works in (each workflow gets its own
runner identity from the operator)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.helpers.manifests import REPO

NS = "ml"


class Operator:
    """The operator as its own process (outside the cluster, with the admin kubeconfig)."""

    def __init__(self, cp, s3, workdir: Path, *args: str, namespace: str | None = NS) -> None:  # type: ignore[no-untyped-def]
        """`args`: more options of `olivekube operator`; `namespace` None: cluster-wide."""
        self.cp, self.s3, self.workdir, self.args = cp, s3, workdir, args
        self.namespaces = ("--namespace", namespace) if namespace else ()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        env = {**self.cp.env(), **self.s3.env()}
        self.proc = subprocess.Popen(
            [
                str(REPO / ".venv/bin/olivekube"),
                "operator",
                *self.namespaces,
                "--runner-image",
                "olivekube/runner:test",
                "--metrics-port",
                "0",
                "--liveness-port",
                "0",
                "--retry-backoff-seconds",
                "1",
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
