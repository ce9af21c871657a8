"""One class per pass type; adding a pass is one module plus its line here."""

from __future__ import annotations

from olivekube.runner.passes.base import RunnerPass
from olivekube.runner.passes.builder import ModelBuilderPass
from olivekube.runner.passes.lora import LoRAPass, QLoRAPass
from olivekube.runner.passes.merge import MergeAdapterWeightsPass

PASSES: dict[str, type[RunnerPass]] = {
    "LoRA": LoRAPass,
    "QLoRA": QLoRAPass,
    "MergeAdapterWeights": MergeAdapterWeightsPass,
    "ModelBuilder": ModelBuilderPass,
}
