"""Convert a model to ONNX with onnxruntime-genai's model builder, optionally quantized."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olivekube.api.passes.builder import ModelBuilder
from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.passes.base import RunnerPass

# Precisions each execution provider runs, per onnxruntime-genai's builder documentation.
BUILDABLE: dict[str, tuple[str, ...]] = {
    "cpu": ("int4", "int8", "fp32"),
    "cuda": ("int4", "int8", "fp16", "bf16", "fp32"),
    "dml": ("int4", "fp16", "fp32"),
    "webgpu": ("int4", "int8", "fp16", "fp32"),
    "NvTensorRtRtx": ("int4", "fp16"),
}
# Our option → the builder's extra option (0.18 names).
EXTRA_OPTION_NAMES = {
    "int4_block_size": "block_size",
    "int4_accuracy_level": "accuracy_level",
    "int4_is_symmetric": "is_symmetric",
    "int4_algo_config": "algo_config",
    "exclude_embeds": "exclude_embeds",
    "exclude_lm_head": "exclude_lm_head",
    "include_hidden_states": "include_hidden_states",
    "enable_cuda_graph": "enable_cuda_graph",
    "metadata_only": "config_only",
}


LORA_MATMUL = re.compile(r"/lora_[AB]/MatMul")
"""The model builder's names for the MatMuls of an adapter built into the graph."""


@contextlib.contextmanager
def lora_kept_float() -> Iterator[None]:
    """Build with the adapter's LoRA MatMuls left out of int4/int8 quantization.

    They are a rank-r sliver of the weights, so quantizing them saves nothing, and quantized they
    could not become inputs of dynamic rank for other adapters (ExtractAdapters). The builder
    quantizes the whole graph in `to_nbits` and takes node names to exclude only before the graph
    exists; this adds the LoRA nodes' names when it gets there. `run` checks the result.
    """
    import onnxruntime_genai.models.builder  # noqa: F401 - loads its own `builders` package by that name

    model_class = sys.modules["builders.base"].Model  # the class create_model instantiates
    original = model_class.to_nbits

    def to_nbits(self: Any) -> Any:
        lora = [node.name for node in self.model.graph if LORA_MATMUL.search(node.name or "")]
        self.quant_attrs["nodes_to_exclude"] = [*self.quant_attrs["nodes_to_exclude"], *lora]
        return original(self)

    model_class.to_nbits = to_nbits
    try:
        yield
    finally:
        model_class.to_nbits = original


def quantized_lora_nodes(model_file: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type != "MatMul" and LORA_MATMUL.search(n.name)]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ModelBuilderPass(RunnerPass, pass_type="ModelBuilder"):
    """The output folder is an onnxruntime-genai model: model.onnx, genai_config.json, tokenizer."""

    accepts = ("hf", "adapter")
    produces = "onnx"
    options: ModelBuilder

    def preflight(self, model: ModelArtifact) -> None:
        ep_name, ep = self.ctx.execution_provider()
        allowed = BUILDABLE[ep]
        if self.options.precision not in allowed:
            raise PassError(
                f"{self.ctx.field}.precision",
                f"{self.options.precision} cannot be built for {ep_name} "
                f"(the target system's execution provider); allowed: {', '.join(allowed)}",
            )

    def extra_options(self, model: ModelArtifact) -> list[str]:
        opts = self.options
        pairs: dict[str, str] = {}
        for ours, theirs in EXTRA_OPTION_NAMES.items():
            value = getattr(opts, ours)
            if value is not None:
                pairs[theirs] = _value(value)
        if opts.int4_op_types_to_quantize:
            pairs["op_types_to_quantize"] = "/".join(opts.int4_op_types_to_quantize)
        if opts.int4_nodes_to_exclude:
            pairs["nodes_to_exclude"] = ",".join(opts.int4_nodes_to_exclude)
        adapter = model.model_ref if model.kind == "adapter" else None  # adapter_path: resolved by the engine
        if adapter:
            pairs["adapter_path"] = adapter
        for key, value in (opts.extra_options or {}).items():
            pairs[key] = _value(value)
        if model.metadata.get("load_kwargs", {}).get("trust_remote_code"):
            pairs.setdefault("hf_remote", "true")
        return [f"{k}={v}" for k, v in pairs.items()]

    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        started = time.perf_counter()
        from onnxruntime_genai.models.builder import create_model, parse_extra_options

        # Most of a small model's build: the builder's module imports transformers' Gemma3 model and,
        # through it, torch._dynamo (1.5 s here), once per process; later builds in the process (a
        # search's trials) skip it. Kept apart in the pass's metadata so a build's time reads right.
        import_seconds = time.perf_counter() - started

        if model.kind == "adapter" and model.path is not None:
            adapter_config = model.path / "adapter_config.json"
            if adapter_config.is_file() and json.loads(adapter_config.read_text()).get("use_dora"):
                raise PassError(
                    f"{self.ctx.field}.adapter_path",
                    "a DoRA adapter cannot be built into the graph (the model builder has no DoRA magnitude); "
                    "merge it first with a MergeAdapterWeights pass",
                )

        source = model.base if model.kind == "adapter" and model.base is not None else model
        input_path = str(source.path) if source.path is not None else ""
        name = source.hub_id or input_path
        _, ep = self.ctx.execution_provider()
        cache = self.ctx.workdir / "builder-cache"
        precision = self.options.precision
        self.ctx.progress(message=f"building {precision} ONNX for {ep}")
        quiet = io.StringIO()
        previous = logging.root.manager.disable
        logging.disable(logging.INFO)
        try:
            lora = lora_kept_float() if model.kind == "adapter" else contextlib.nullcontext()
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), lora:
                options = parse_extra_options(
                    name,
                    input_path,
                    str(out),
                    precision,
                    ep,
                    str(cache),
                    self.extra_options(model),
                    search=self.options.search,
                )
                create_model(name, input_path, str(out), precision, ep, str(cache), **options)
        except Exception as exc:
            raise PassError(f"{self.ctx.field}", f"the model builder failed: {exc}") from exc
        finally:
            logging.disable(previous)
            shutil.rmtree(cache, ignore_errors=True)
        metadata: dict[str, Any] = {
            "precision": precision,
            "execution_provider": ep,
            "builder": "onnxruntime-genai",
            "builder_import_seconds": round(import_seconds, 3),
        }
        if model.kind == "adapter":
            quantized = quantized_lora_nodes(out / "model.onnx")
            if quantized:
                raise PassError(self.ctx.field, f"the LoRA MatMuls were quantized ({quantized[0]}, ...)")
            metadata["built_adapter"] = {"uri": model.uri or str(model.path), "digest": model.digest}
        return metadata
