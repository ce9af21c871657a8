"""The Dockerfile is hadolint-clean and every path it copies or mounts from the build context exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_copied_or_mounted_path_exists_and_targets_are_defined() -> None:
    text = (REPO / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), source
    mounted = re.findall(r"--mount=type=bind,source=([^,\s]+)", text)
    assert mounted
    for source in mounted:
        assert (REPO / source).exists(), source
    for script in re.findall(r"/(requirements/[\w.-]+)", text):
        assert (REPO / script).exists(), script
    assert {"operator", "runner-cpu", "runner"} <= set(re.findall(r"^FROM \S+ AS ([\w-]+)$", text, flags=re.M))
    assert "USER 65532" in text
