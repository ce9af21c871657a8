"""The LoRA weights of a model-builder graph: found, turned into inputs, and written as adapter files.

The model builder puts an adapter into the graph as two MatMuls per adapted projection, named
`…/lora_A/MatMul` and `…/lora_B/MatMul`, with weights A^T and (s B)^T (s = alpha / r); it splits
packed projections (Phi-3's qkv_proj, gate_up_proj) into one LoRA path per part, sharing A and
cutting B's rows. Other adapters of the same base must reach the same weight names: `Recipe` learns
from the built adapter where each graph weight comes from (which PEFT module, which rows of B), by
value, so that it holds for every architecture the builder knows, and then applies it to others.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LORA_MATMUL = re.compile(r"/lora_[AB]/MatMul$")
LORA_WEIGHT = re.compile(r"\.lora_(?P<part>[AB])\.MatMul\.weight$")
PEFT_WEIGHT = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(\.default)?\.weight$")
LAYER = re.compile(r"layers\.(\d+)\.")
RANK_DIM = "lora_r"


class AdapterMismatch(ValueError):
    """An adapter does not fit the built one's graph; the message names what differs."""


def lora_weight_names(model: Any) -> list[str]:
    """The weight names of the graph's LoRA MatMuls (an onnx ModelProto), in graph order."""
    return [
        node.input[1] for node in model.graph.node if node.op_type == "MatMul" and LORA_MATMUL.search(node.name)
    ]


def graph_lora_weights(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    names = set(lora_weight_names(model))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in names}


def make_inputs(model: Any, names: list[str], dynamic_rank: bool, optional: bool) -> None:
    """Turn the named LoRA weights into graph inputs (rank `lora_r` when dynamic); with `optional`,
    a rank-0 initializer of the same name is the default, so that the model runs without an adapter."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    for name in names:
        init = initializers[name]
        shape = tuple(init.dims)
        match = LORA_WEIGHT.search(name)
        is_a = match is not None and match["part"] == "A"
        dims: list[Any] = list(shape)
        if dynamic_rank:
            dims = [shape[0], RANK_DIM] if is_a else [RANK_DIM, shape[1]]
        graph.input.append(helper.make_tensor_value_info(name, init.data_type, dims))
        graph.initializer.remove(init)
        if optional:
            dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
            empty = np.zeros((shape[0], 0) if is_a else (0, shape[1]), dtype=dtype)
            graph.initializer.append(numpy_helper.from_array(empty, name))


def write_adapter(weights: dict[str, np.ndarray], path: Path) -> None:
    """An .onnx_adapter file (onnxruntime's adapter format, what onnxruntime-genai's Adapters loads)."""
    import onnxruntime as ort

    # An OrtValue made from numpy borrows the array's memory: keep every array alive until written.
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in arrays.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    adapter.export_adapter(str(path))


@dataclass(frozen=True)
class PeftAdapter:
    """A PEFT LoRA adapter folder: its config and its A (r x in) and B (out x r) per module."""

    folder: Path
    config: dict[str, Any]
    a: dict[str, np.ndarray]
    b: dict[str, np.ndarray]

    @classmethod
    def load(cls, folder: Path) -> PeftAdapter:
        from safetensors.numpy import load_file

        config_file = folder / "adapter_config.json"
        weights_file = folder / "adapter_model.safetensors"
        if not config_file.is_file() or not weights_file.is_file():
            raise AdapterMismatch(
                f"{folder} is not a PEFT adapter (adapter_config.json, adapter_model.safetensors)"
            )
        config = json.loads(config_file.read_text())
        a: dict[str, np.ndarray] = {}
        b: dict[str, np.ndarray] = {}
        for key, value in load_file(str(weights_file)).items():
            match = PEFT_WEIGHT.match(key)
            if match:
                (a if match["part"] == "A" else b)[match["module"]] = value.astype(np.float32)
        return cls(folder, config, a, b)

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0))

    @property
    def scaling(self) -> float:
        alpha, r = float(self.config.get("lora_alpha", self.rank)), self.rank
        return alpha / (r**0.5 if self.config.get("use_rslora") else r)

    def problems(self) -> list[str]:
        """What makes it unusable as a switchable LoRA adapter at all."""
        out = []
        if self.config.get("peft_type", "LORA") != "LORA":
            out.append(f"peft_type is {self.config.get('peft_type')}, not LORA")
        if self.config.get("use_dora"):
            out.append("it is a DoRA adapter (merge it instead)")
        for key in ("rank_pattern", "alpha_pattern"):
            if self.config.get(key):
                out.append(f"{key} is set (per-module ranks or scales)")
        if self.config.get("modules_to_save"):
            out.append("modules_to_save is set (fully trained modules are not adapter weights)")
        if not self.a:
            out.append("it has no LoRA weights")
        return out


@dataclass(frozen=True)
class Source:
    """Where one graph weight comes from: a PEFT module's A, or rows [start, stop) of its B."""

    module: str
    part: str
    start: int = 0
    stop: int | None = None


def _layer(name: str) -> str | None:
    match = LAYER.search(name)
    return match.group(1) if match else None


def _close(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-3, atol=1e-5))


class Recipe:
    """Graph weight name → Source, learnt from the adapter the graph was built with."""

    def __init__(self, sources: dict[str, Source], shapes: dict[str, tuple[int, ...]]) -> None:
        self.sources = sources
        self.shapes = shapes

    @classmethod
    def learn(cls, graph: dict[str, np.ndarray], built: PeftAdapter) -> Recipe:
        sources: dict[str, Source] = {}
        for name, weight in graph.items():
            part = LORA_WEIGHT.search(name)
            if part is None:
                continue
            layer = _layer(name)
            modules = [m for m in built.a if _layer(m) == layer]
            source = (
                cls._find_a(weight, built, modules) if part["part"] == "A" else cls._find_b(weight, built, modules)
            )
            if source is None:
                raise AdapterMismatch(f"the graph's {name} matches no weight of the adapter it was built with")
            sources[name] = source
        return cls(sources, {k: v.shape for k, v in graph.items()})

    @staticmethod
    def _find_a(weight: np.ndarray, built: PeftAdapter, modules: list[str]) -> Source | None:
        for module in modules:
            if _close(built.a[module].T, weight):
                return Source(module, "A")
        return None

    @staticmethod
    def _find_b(weight: np.ndarray, built: PeftAdapter, modules: list[str]) -> Source | None:
        rows = weight.T  # (out part, r)
        for module in modules:
            scaled = built.b[module] * built.scaling
            if scaled.shape[1] != rows.shape[1] or scaled.shape[0] < rows.shape[0]:
                continue
            for start in np.flatnonzero(np.isclose(scaled, rows[0], rtol=1e-3, atol=1e-5).all(axis=1)):
                stop = int(start) + rows.shape[0]
                if _close(scaled[int(start) : stop], rows):
                    return Source(module, "B", int(start), stop)
        return None

    def apply(self, adapter: PeftAdapter, dtype: dict[str, np.dtype], dynamic_rank: bool) -> dict[str, np.ndarray]:
        """The graph's weights from another adapter of the same base; AdapterMismatch names what differs."""
        missing = sorted({s.module for s in self.sources.values()} - set(adapter.a))
        if missing:
            raise AdapterMismatch(
                f"it does not adapt {', '.join(_short(m) for m in missing[:4])}"
                f"{' …' if len(missing) > 4 else ''} (target_modules differ)"
            )
        extra = sorted(set(adapter.a) - {s.module for s in self.sources.values()})
        if extra:
            raise AdapterMismatch(
                f"it also adapts {', '.join(_short(m) for m in extra[:4])}{' …' if len(extra) > 4 else ''}, "
                "which the base graph has no LoRA path for (target_modules differ)"
            )
        out: dict[str, np.ndarray] = {}
        for name, source in self.sources.items():
            if source.part == "A":
                weight = adapter.a[source.module].T
            else:
                b = adapter.b[source.module] * adapter.scaling
                weight = b[source.start : source.stop].T
            built = self.shapes[name]
            fixed = 0 if source.part == "A" else 1  # the dimension that is not the rank
            if weight.shape[fixed] != built[fixed] or (not dynamic_rank and weight.shape != built):
                raise AdapterMismatch(
                    f"{_short(source.module)}.lora_{source.part} gives the graph's {name} the shape "
                    f"{tuple(weight.shape)}, where the base needs {_shape_text(built, fixed, dynamic_rank)}"
                )
            out[name] = weight.astype(dtype[name])
        return out


def _short(module: str) -> str:
    return module.removeprefix("base_model.model.")


def _shape_text(shape: tuple[int, ...], fixed: int, dynamic_rank: bool) -> str:
    if not dynamic_rank:
        return str(tuple(shape))
    return f"({shape[0]}, r)" if fixed == 0 else f"(r, {shape[1]})"
