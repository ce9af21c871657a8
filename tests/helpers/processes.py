"""Running things as a user does, and waiting for them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def olivekube_run(path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`olivekube run PATH` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "run", str(path)], capture_output=True, text=True, timeout=timeout
    )


def olivekube_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`olivekube ARGS...` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "olivekube.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(predicate: Any, timeout: float = 60, step: float = 0.2) -> Any:
    """Poll `predicate` until it returns something true; return that, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s")
