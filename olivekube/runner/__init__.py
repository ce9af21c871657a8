"""The runner: executes passes (LoRA/QLoRA, merge, model builder) on artifacts from any store."""

from olivekube.core.constants import RUNNER_VERSION

__all__ = ["RUNNER_VERSION"]
