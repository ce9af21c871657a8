"""ExtractAdapters: the built adapter's LoRA weights become inputs of the base model and adapter files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from olivekube.api.passes.adapters import ExtractAdapters
from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.lora_graph import (
    AdapterMismatch,
    PeftAdapter,
    Recipe,
    graph_lora_weights,
    lora_weight_names,
    make_inputs,
    write_adapter,
)
from olivekube.runner.passes.base import RunnerPass
from olivekube.runner.torch_utils import load_config

ADAPTERS_DIR = "adapters"
MODEL_FILE = "model.onnx"


class ExtractAdaptersPass(RunnerPass, pass_type="ExtractAdapters"):
    """The output is the ModelBuilder model with LoRA weight inputs, and adapters/NAME.onnx_adapter."""

    accepts = ("onnx",)
    produces = "onnx"
    options: ExtractAdapters

    def _others(self) -> dict[str, PeftAdapter]:
        assert self.ctx.resolve_model is not None
        out = {}
        for name, uri in (self.options.adapters or {}).items():
            field = f"{self.ctx.field}.adapters.{name}"
            artifact = self.ctx.resolve_model(uri, field)
            if artifact.path is None:
                raise PassError(field, f"{uri} is not an adapter folder or URI")
            try:
                adapter = PeftAdapter.load(artifact.path)
            except AdapterMismatch as exc:
                raise PassError(field, str(exc)) from exc
            if adapter.problems():
                raise PassError(field, f"{uri} cannot be switched on the base: {'; '.join(adapter.problems())}")
            out[name] = adapter
        return out

    def preflight(self, model: ModelArtifact) -> None:
        """Before any pass runs: every other adapter is a plain LoRA adapter whose modules exist in
        the input model with the shapes its weights have."""
        import torch
        from transformers import AutoModelForCausalLM

        if model.kind != "hf" or not self.options.adapters:
            return
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(load_config(model, self.ctx))
        linears = {name: m for name, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)}
        trainers = [p for p in self.ctx.spec.passes.values() if p.trains]
        expected: set[str] | None = None
        if trainers:
            given = getattr(trainers[0], "target_modules", None)
            expected = set(given) if given else {n.rsplit(".", 1)[-1] for n in linears} - {"lm_head"}
        for name, adapter in self._others().items():
            field = f"{self.ctx.field}.adapters.{name}"
            for module, a in adapter.a.items():
                target = linears.get(module.removeprefix("base_model.model."))
                if target is None:
                    short = module.removeprefix("base_model.model.")
                    raise PassError(field, f"it adapts {short}, which the input model does not have")
                b = adapter.b.get(module)
                if a.shape[1] != target.in_features or b is None or b.shape[0] != target.out_features:
                    raise PassError(
                        field,
                        f"{module.removeprefix('base_model.model.')}: A {a.shape} and B "
                        f"{None if b is None else b.shape} do not fit a {target.in_features} → "
                        f"{target.out_features} layer of the input model (another base?)",
                    )
            adapted = {m.rsplit(".", 1)[-1] for m in adapter.a}
            if expected is not None and adapted != expected:
                raise PassError(
                    field,
                    f"its target_modules are {sorted(adapted)}, the workflow's adapter's are {sorted(expected)}",
                )
            rank = trainers[0].option("r") if trainers else None
            if rank is not None and not self.options.option("dynamic_lora_r") and adapter.rank != rank:
                raise PassError(field, f"its rank is {adapter.rank}, the workflow's adapter's is {rank}")

    def _built_adapter(self, model: ModelArtifact) -> PeftAdapter:
        built = model.metadata.get("built_adapter") or {}
        if not built.get("uri"):
            raise PassError(
                f"{self.ctx.field}.type",
                "the input model was not built with an adapter inside (a ModelBuilder pass after a training "
                "pass, without MergeAdapterWeights)",
            )
        assert self.ctx.resolve_model is not None
        artifact = self.ctx.resolve_model(str(built["uri"]), f"{self.ctx.field}.type")
        assert artifact.path is not None
        return PeftAdapter.load(artifact.path)

    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        import onnx

        assert model.path is not None
        built = self._built_adapter(model)
        others = self._others()
        graph_model = onnx.load(str(model.path / MODEL_FILE))
        weights = graph_lora_weights(graph_model)
        if not weights:
            raise PassError(f"{self.ctx.field}.type", "the input model has no LoRA MatMuls to extract")
        dtypes = {k: v.dtype for k, v in weights.items()}
        recipe = Recipe.learn(weights, built)
        built_name = str(self.options.option("adapter_name"))
        files: dict[str, dict[str, Any]] = {built_name: weights}  # the built adapter first
        for name, adapter in others.items():
            try:
                files[name] = recipe.apply(adapter, dtypes, self.options.option("dynamic_lora_r"))
            except AdapterMismatch as exc:
                raise PassError(f"{self.ctx.field}.adapters.{name}", f"it does not fit the base: {exc}") from exc
        names = lora_weight_names(graph_model)
        make_inputs(
            graph_model, names, self.options.option("dynamic_lora_r"), self.options.option("optional_inputs")
        )
        for item in model.path.iterdir():
            if item.name not in (MODEL_FILE, f"{MODEL_FILE}.data"):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
        onnx.save_model(
            graph_model, str(out / MODEL_FILE), save_as_external_data=True, location=f"{MODEL_FILE}.data"
        )
        for name, adapter_weights in files.items():
            write_adapter(adapter_weights, out / ADAPTERS_DIR / f"{name}.onnx_adapter")
        self.ctx.metrics["lora_inputs"] = len(names)
        return {"adapters": sorted(files), "built_adapter_name": built_name, "lora_inputs": len(names)}
