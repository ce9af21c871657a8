"""benchmarks/gpu_check.py runs only where a GPU is lent: its CPU mode keeps the script itself working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.manifests import REPO


def gpu_check_on_the_cpu(tmp_path: Path, steps: int) -> tuple[int, dict[str, Any], str]:
    """Run the script small with --device cpu: its exit code, its checks by name, what it printed."""
    report = tmp_path / "checks.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--json", str(report)]
    small = ["--hidden", "64", "--layers", "2", "--steps", str(steps), "--new-tokens", "8"]
    out = subprocess.run([*command, *small], capture_output=True, text=True, timeout=600)
    checks = {c["name"]: c for c in json.loads(report.read_text())} if report.is_file() else {}
    return out.returncode, checks, out.stdout[-3000:] + out.stderr[-3000:]


def test_the_gpu_check_runs_every_check_on_the_cpu(tmp_path: Path) -> None:
    returncode, checks, printed = gpu_check_on_the_cpu(tmp_path, steps=4)
    assert returncode == 0, printed
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
    returncode, checks, printed = gpu_check_on_the_cpu(tmp_path, steps=0)
    assert returncode == 1, printed
    assert checks["process group"]["ok"]
    assert not checks["qlora, merge, int4 build"]["ok"]
    assert "max_steps" in checks["qlora, merge, int4 build"]["detail"]
