"""A pass is checked before any heavy work once per chain key and input in a process: a search's
trials share the process, and LoRA's check builds a model skeleton and reads its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from olivekube.api.workflow import parse_workflow
from olivekube.core.artifact import ModelArtifact
from olivekube.runner import engine
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.passes import PASSES
from tests.helpers.manifests import valid_manifest


def runner(tmp_path: Path, r: int) -> WorkflowRunner:
    doc = valid_manifest()
    doc["spec"].pop("evaluators", None)
    doc["spec"].pop("evaluator", None)
    doc["spec"]["passes"]["lora"]["r"] = r
    doc["spec"]["cache_dir"] = str(tmp_path / "cache")
    doc["spec"]["output_dir"] = str(tmp_path / "out")
    return WorkflowRunner(parse_workflow(doc), tmp_path)


def test_a_pass_is_checked_once_per_chain_key_and_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[tuple[int, str]] = []
    monkeypatch.setattr(engine, "PREFLIGHT_PASSED", set())
    monkeypatch.setattr(
        PASSES["LoRA"], "preflight", lambda self, model: checked.append((self.options.r, model.digest))
    )
    base = ModelArtifact(kind="hf", digest="base-1", path=tmp_path)
    for _ in range(2):  # two trials of the same rank on the same model
        runner(tmp_path, 8).preflight(base)
    assert checked == [(8, "base-1")]
    runner(tmp_path, 4).preflight(base)  # another rank: another chain key
    runner(tmp_path, 8).preflight(ModelArtifact(kind="hf", digest="base-2", path=tmp_path))  # another input
    assert checked == [(8, "base-1"), (4, "base-1"), (8, "base-2")]


def test_a_check_that_failed_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olivekube.core.errors import PassError

    calls: list[Any] = []

    def refuse(self: Any, model: ModelArtifact) -> None:
        calls.append(model.digest)
        raise PassError("spec.passes.lora.train_data_config", "no rows")

    monkeypatch.setattr(engine, "PREFLIGHT_PASSED", set())
    monkeypatch.setattr(PASSES["LoRA"], "preflight", refuse)
    base = ModelArtifact(kind="hf", digest="base-1", path=tmp_path)
    for _ in range(2):
        with pytest.raises(PassError):
            runner(tmp_path, 8).preflight(base)
    assert calls == ["base-1", "base-1"]
