"""The dependency lock: uv.lock holds every package of every environment (exact versions and hashes),
it agrees with pyproject.toml's pins, and requirements/ (what the images install) is its export."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "tools/lock.sh", "--check"], cwd=root, capture_output=True, text=True)


def test_the_lock_and_the_images_requirements_agree_with_pyproject() -> None:
    checked = _check(REPO)
    assert checked.returncode == 0, checked.stderr[-3000:]


def _copy(tmp_path: Path) -> Path:
    for name in ["pyproject.toml", "uv.lock", "README.md"]:
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ["requirements", "tools"]:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_pin_changed_without_relocking_fails_the_check(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"rich==15.0.0"', '"rich==14.3.3"'))
    checked = _check(root)
    assert checked.returncode != 0 and "uv.lock is stale" in checked.stderr, checked.stderr[-3000:]


def test_a_hand_edited_requirements_file_fails_the_check(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    operator = root / "requirements" / "operator.txt"
    operator.write_text(re.sub(r"^botocore==\S+", "botocore==1.44.5", operator.read_text(), flags=re.M))
    checked = _check(root)
    assert checked.returncode != 0 and "requirements/ is stale" in checked.stderr, checked.stderr[-3000:]


def test_every_locked_package_has_one_version_and_hashes() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == "olivekube":
            continue
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]
    for requirements in (REPO / "requirements").glob("*.txt"):
        pins = re.findall(r"^(\S+?)==(\S+)", requirements.read_text(), flags=re.M)
        assert pins, requirements
        names = [name for name, _ in pins]
        assert len(names) == len(set(names)), requirements
        blocks = re.split(r"\n(?=\S)", requirements.read_text().strip())
        unhashed = [b.split()[0] for b in blocks if not b.startswith("#") and "--hash=sha256:" not in b]
        assert not unhashed, f"{requirements.name}: {unhashed}"


def test_each_pin_in_pyproject_is_the_version_the_lock_holds() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    pins = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins += extra
    for pin in pins:
        name, version = pin.split("==")
        assert locked[re.sub(r"[-_.]+", "-", name).lower()] == version, pin
