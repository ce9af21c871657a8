"""A pass type added in one module and nothing else: its options model and its runner class."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from olivekube.api.passes import PassBase
from olivekube.core.artifact import ModelArtifact
from olivekube.runner.passes import RunnerPass


class NoOp(PassBase):
    """Copy the model unchanged."""

    stage = 3
    defaults = {"note": "untouched"}

    type: Literal["NoOp"] = Field(description="Pass type.")
    note: str | None = Field(
        None, max_length=64, description="Written into the output's metadata. Default untouched."
    )


class NoOpPass(RunnerPass, pass_type="NoOp"):
    accepts = ("hf",)
    produces = "hf"

    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        assert model.path is not None
        shutil.copytree(model.path, out, dirs_exist_ok=True)
        self.ctx.metrics["files"] = float(sum(1 for p in out.rglob("*") if p.is_file()))
        return {"note": self.options.option("note")}
