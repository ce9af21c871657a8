"""What a pass gets besides its input and options: where to work, the device, the data, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olivekube.api.workflow import WorkflowSpec
from olivekube.core.artifact import ModelArtifact
from olivekube.runner.progress import ProgressSink, null_sink

EP_NAMES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
    "WebGpuExecutionProvider": "webgpu",
    "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
}


@dataclass
class PassContext:
    """The environment of one pass run."""

    spec: WorkflowSpec
    pass_name: str
    workdir: Path
    base_dir: Path
    report: ProgressSink = null_sink
    metrics: dict[str, float] = field(default_factory=dict)
    resolve_model: Callable[[str, str], ModelArtifact] | None = None
    """A model given by folder or URI, fetched when remote: (value, field it came from) → model."""
    checkpoint_root: str | None = None
    """Where a training pass keeps its checkpoints (runner/checkpoints.py); None: it keeps none."""

    @property
    def field(self) -> str:
        return f"spec.passes.{self.pass_name}"

    def progress(self, **values: Any) -> None:
        self.report(self.pass_name, {k: v for k, v in values.items() if v is not None})

    def _system(self, name: str | None) -> Any:
        if name is None or self.spec.systems is None:
            return None
        return self.spec.systems.get(name)

    def host_system(self) -> Any:
        return self.spec.host_system(self.pass_name)

    def target_system(self) -> Any:
        return self._system(self.spec.target or self.spec.host)

    def host_wants_gpu(self) -> bool:
        system = self.host_system()
        return bool(system and any(a.device == "gpu" for a in system.accelerators or []))

    def execution_provider(self) -> tuple[str, str]:
        """(provider name as in the manifest, the model builder's name for it) for the target system."""
        system = self.target_system()
        for accelerator in (system.accelerators if system else None) or []:
            for ep in accelerator.execution_providers or []:
                return ep, EP_NAMES[ep]
            if accelerator.device == "gpu":
                return "CUDAExecutionProvider", "cuda"
        return "CPUExecutionProvider", "cpu"
