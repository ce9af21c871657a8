"""A new pass type is one module: defining its options model and runner class is all it takes for
validation, the CRD, the operator's plan and `olivekube run` to accept it. Each check runs in a
process of its own, so the extra type never reaches the other tests (the CRD freshness test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olivekube.api.passes import PASS_TYPES
from tests.helpers.manifests import write

PLUGINS = Path(__file__).resolve().parent / "plugins"


def olivekube_with_noop(*args: str) -> subprocess.CompletedProcess[str]:
    """`olivekube ARGS` in a process that imported tests/runner/plugins/noop_pass.py first."""
    code = f"import sys; sys.path.insert(0, {str(PLUGINS)!r}); import noop_pass; "
    code += "from olivekube.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )


def noop_workflow(model: Path, **noop: str) -> dict[str, object]:
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "noop"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": str(model)},
            "passes": {"copy": {"type": "NoOp", **noop}},
        },
    }


def test_the_type_is_unknown_without_its_module(tmp_path: Path) -> None:
    assert "NoOp" not in PASS_TYPES
    path = write(tmp_path / "wf.json", noop_workflow(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1 and "spec.passes.copy.type" in out.stdout


def test_validate_and_the_crd_accept_it(tmp_path: Path) -> None:
    path = write(tmp_path / "wf.json", noop_workflow(tmp_path, note="hello"))
    out = olivekube_with_noop("validate", str(path))
    assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr
    bad = write(tmp_path / "bad.json", noop_workflow(tmp_path, colour="red"))
    out = olivekube_with_noop("validate", str(bad))
    assert out.returncode == 1 and "spec.passes.copy.colour" in out.stdout, out.stdout
    crd = yaml.safe_load(olivekube_with_noop("crd").stdout)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["passes"]
    assert "NoOp" in json.dumps(schema) and "Written into the output's metadata" in json.dumps(schema)


def test_the_operator_plans_a_job_for_it(tmp_path: Path) -> None:
    path = write(tmp_path / "wf.json", noop_workflow(tmp_path))
    script = str(PLUGINS / "plan_noop.py")
    out = subprocess.run(
        [sys.executable, script, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    planned = json.loads(out.stdout)
    assert planned["create"] == "copy" and planned["command"][-2:] == ["--pass", "copy"]


@pytest.mark.runner
def test_olivekube_run_runs_it(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path / "wf.json", noop_workflow(tiny_models["qwen2"], note="from a plugin"))
    summary = tmp_path / "summary.json"
    out = olivekube_with_noop("run", str(path), "--summary-json", str(summary))
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(summary.read_text())
    (copy,) = result["passes"]
    assert copy["type"] == "NoOp" and copy["status"] == "ran" and copy["metrics"]["files"] > 3
    output = Path(result["output"])
    manifest = json.loads((output / "olivekube-manifest.json").read_text())
    assert manifest["metadata"]["note"] == "from a plugin"
    assert (output / "config.json").read_text() == (tiny_models["qwen2"] / "config.json").read_text()
