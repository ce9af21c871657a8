"""benchmarks/gpu_check.py runs only where a GPU is lent: its CPU mode keeps the script itself working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.manifests import REPO


def test_the_gpu_check_runs_every_check_on_the_cpu(tmp_path: Path) -> None:
    report = tmp_path / "checks.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--json", str(report)]
    small = ["--hidden", "64", "--layers", "2", "--steps", "4", "--new-tokens", "8"]
    out = subprocess.run([*command, *small], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(report.read_text())}
    assert list(checks) == [
        "environment",
        "process group",
        "qlora, merge, int4 build",
        "fp32 build",
        "generate int4",
        "generate fp32",
    ]
    assert all(c["ok"] for c in checks.values())
    assert "qlora ran" in checks["qlora, merge, int4 build"]["detail"]
    assert "qlora cached" in checks["fp32 build"]["detail"]  # the second build trains nothing again
    assert "8 tokens" in checks["generate int4"]["detail"]


def test_a_failing_check_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    report = tmp_path / "checks.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--json", str(report)]
    small = ["--hidden", "64", "--layers", "2", "--steps", "0", "--new-tokens", "8"]
    out = subprocess.run([*command, *small], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(report.read_text())}
    assert checks["process group"]["ok"]
    assert not checks["qlora, merge, int4 build"]["ok"]
    assert "max_steps" in checks["qlora, merge, int4 build"]["detail"]
