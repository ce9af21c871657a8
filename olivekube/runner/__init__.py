"""The runner: executes passes (LoRA/QLoRA, merge, model builder) on artifacts from any store."""

RUNNER_VERSION = "0.1.0"
