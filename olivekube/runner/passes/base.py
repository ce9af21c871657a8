"""The shape of a pass: check cheaply, then run once on an input model into an output folder.

A runner pass registers itself for its pass type by being defined:
`class NoOpPass(RunnerPass, pass_type="NoOp")`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from olivekube.core.artifact import ModelArtifact, ModelKind
from olivekube.runner.context import PassContext

PASSES: dict[str, type[RunnerPass]] = {}
"""Pass type name → the runner class that implements it."""


class RunnerPass(ABC):
    """A pass. `accepts` are the input kinds it takes; `produces` is the kind it writes."""

    accepts: ClassVar[tuple[ModelKind, ...]]
    produces: ClassVar[ModelKind]

    def __init_subclass__(cls, pass_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if pass_type is not None:
            PASSES[pass_type] = cls

    def __init__(self, options: Any, ctx: PassContext) -> None:
        self.options = options
        self.ctx = ctx

    def preflight(self, model: ModelArtifact) -> None:  # noqa: B027 - optional hook
        """Fail fast, before heavy work, naming the field at fault. Default: nothing to check."""

    @abstractmethod
    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        """Write the output model to `out`; return metadata for its manifest (metrics go to ctx.metrics)."""
