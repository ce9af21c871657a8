"""`olivekube doctor`: on the CPU here it runs every check a CPU node can; asked for the GPU path on a
machine with no GPU it says so, names what it could not check, and exits 1. benchmarks/gpu_check.py
(its wrapper for a lent GPU machine) is run here on the CPU so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.helpers.manifests import REPO

SMALL = ["--hidden", "64", "--layers", "2", "--new-tokens", "8"]


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    """`olivekube doctor --json ARGS`: its exit code, its checks by name, what it printed on stderr."""
    command = [sys.executable, "-m", "olivekube.cli", "doctor", "--json", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    checks = {c["name"]: c for c in json.loads(out.stdout)} if out.stdout.strip() else {}
    return out.returncode, checks, out.stderr[-4000:]


def test_doctor_on_the_cpu_runs_every_check_a_cpu_node_can() -> None:
    returncode, checks, printed = doctor("--device", "cpu", "--steps", "4", *SMALL)
    assert returncode == 0, printed
    assert list(checks) == [
        "environment",
        "cuda libraries",
        "process group",
        "qlora, merge, int4 build",
        "fp32 build",
        "generate int4",
        "generate fp32",
    ]
    assert {c["state"] for n, c in checks.items() if n != "cuda libraries"} == {"ok"}
    assert checks["cuda libraries"]["state"] == "skipped"  # the dev environment has onnxruntime's CPU build
    assert "onnxruntime providers" in checks["environment"]["detail"]
    assert "qlora ran" in checks["qlora, merge, int4 build"]["detail"]
    assert "qlora cached" in checks["fp32 build"]["detail"]  # the second build trains nothing again
    assert "8 tokens" in checks["generate int4"]["detail"]


def test_without_a_gpu_the_gpu_path_says_so_and_names_what_it_could_not_check() -> None:
    returncode, checks, printed = doctor(*SMALL)
    assert returncode == 1, printed
    assert checks["environment"]["state"] == "failed"
    assert "no GPU is visible" in checks["environment"]["detail"]
    not_checked = [n for n, c in checks.items() if c["state"] == "not checked"]
    assert not_checked == [
        "process group",
        "qlora, merge, int4 build",
        "fp16 build",
        "generate int4",
        "generate fp16",
    ]


def test_a_failing_check_is_reported_and_fails_the_run_through_the_gpu_check_wrapper(tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "checks.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--steps", "0"]
    out = subprocess.run([*command, *SMALL, "--json", str(report)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(report.read_text())}
    assert checks["process group"]["ok"]
    assert checks["qlora, merge, int4 build"]["state"] == "failed"
    assert "max_steps" in checks["qlora, merge, int4 build"]["detail"]
