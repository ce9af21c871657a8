"""Import Olive run configs (legacy and current forms) as OptimizationWorkflow manifests, and back.

The legacy form (Olive before 0.7 and the seed document) nests options under "config", describes
the model as PyTorchModel with hf_config, nests data component options under "params", keeps the
engine options in an "engine" block and may carry pass_flows. The current form is flat. Anything
that cannot run in a cluster is an error that names the key and says what to do: never a silent
drop. Keys that are dropped because they have no meaning any more come back as warnings.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from olivekube.api import unsupported
from olivekube.api.common import API_VERSION, KIND
from olivekube.api.passes import PASS_TYPES, stage_of
from olivekube.api.validation import Problem

Json = dict[str, Any]

ENGINE_KEYS = (
    "host",
    "target",
    "cache_dir",
    "output_dir",
    "log_severity_level",
    "ort_log_severity_level",
    "search_strategy",
    "evaluate_input_model",
    "clean_cache",
)
UNSUPPORTED_TOP = {
    "evaluators": unsupported.EVALUATORS,
    "evaluator": unsupported.EVALUATORS,
    "auto_optimizer_config": unsupported.SEARCH,
    "packaging_config": unsupported.PACKAGING,
    "workflow_host": unsupported.WORKFLOW_HOST,
}
UNSUPPORTED_MODEL = {
    "model_script": unsupported.USER_CODE,
    "script_dir": unsupported.USER_CODE,
    "components": unsupported.COMPONENTS,
    "io_config": unsupported.IO_CONFIG,
    "dummy_inputs_func": unsupported.USER_CODE,
}
PASS_HINTS = {
    "OnnxConversion": "use ModelBuilder, which converts (and quantizes) causal LMs to ONNX",
    "OnnxMatMul4Quantizer": "use ModelBuilder with precision int4",
    "OrtTransformersOptimization": "ModelBuilder writes an already-optimized graph",
    "LoftQ": "use QLoRA",
    "ExtractAdapters": "not implemented yet; build with the adapter inside the graph (ModelBuilder after LoRA "
    "without MergeAdapterWeights) or merge it",
}
DROPPED_PASS_KEYS = {
    "disable_search": "search is not supported, so there is nothing to disable",
    "clean_run_cache": "set spec.clean_cache instead to rerun cached passes",
    "output_name": "outputs are named by pass",
    "save_as_external_data": "ModelBuilder decides how to store weights",
    "all_tensors_to_one_file": "ModelBuilder decides how to store weights",
    "evaluator": "olivekube has no evaluators",
}
RENAMED_TEXT_GEN = {"source_max_len": "max_seq_len", "corpus_strategy": "strategy"}


class ConvertError(ValueError):
    """The config cannot become a manifest; `problems` name each key and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class _Conversion:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem(path, message))


def _flatten_config(node: Json) -> Json:
    """Lift a legacy {"type": X, "config": {...}} node into the flat current form."""
    out = {k: v for k, v in node.items() if k != "config"}
    inner = node.get("config")
    if isinstance(inner, dict):
        out.update(inner)
    return out


def _azureml_datastore_uri(cfg: Json, default_client: Json | None) -> str:
    client = cfg.get("azureml_client") or default_client or {}
    return (
        f"azureml://subscriptions/{client.get('subscription_id', '')}"
        f"/resourcegroups/{client.get('resource_group', '')}"
        f"/workspaces/{client.get('workspace_name', '')}"
        f"/datastores/{cfg['datastore_name']}/paths/{str(cfg['relative_path']).lstrip('/')}"
    )


def _resource_path(value: Any, path: str, conv: _Conversion, client: Json | None) -> Any:
    """Map Olive's typed resource paths ({"type": "azureml_datastore", ...}) to URIs."""
    if not isinstance(value, dict) or "type" not in value:
        return value
    kind = value["type"]
    cfg = value.get("config", {k: v for k, v in value.items() if k != "type"})
    if kind == "azureml_datastore":
        return _azureml_datastore_uri(cfg, client)
    if kind == "azureml_registry_model":
        return f"azureml://registries/{cfg['registry_name']}/models/{cfg['name']}/versions/{cfg['version']}"
    if kind == "azureml_model":
        return f"azureml:{cfg['name']}:{cfg['version']}"
    if kind in ("file", "folder", "string_name"):
        return cfg.get("path", cfg.get("name"))
    conv.error(
        path, f"resource path type {kind!r} is not supported; use a URI (s3://, pvc://, azureml://, file://)"
    )
    return value


def _input_model(raw: Json, conv: _Conversion, client: Json | None) -> Json:
    node = _flatten_config(raw)
    kind = node.pop("type", "HfModel")
    path = "input_model"
    if kind not in ("HfModel", "PyTorchModel", "HFModel"):
        conv.error(f"{path}.type", f"model type {kind!r} is not supported; only Hugging Face causal LMs (HfModel)")
    for key, why in UNSUPPORTED_MODEL.items():
        if key in node:
            conv.error(f"{path}.{key}", f"not supported: {why}")
    hf = node.pop("hf_config", None) or {}
    out: Json = {"type": "HfModel"}
    model_path = _resource_path(node.pop("model_path", None), f"{path}.model_path", conv, client)
    out["model_path"] = model_path or hf.get("model_name") or node.pop("model_name", None)
    if not out["model_path"]:
        conv.error(f"{path}.model_path", "missing: give model_path or hf_config.model_name")
    task = node.pop("task", None) or hf.get("task") or "text-generation"
    out["task"] = task
    load_kwargs: Json = {}
    for key in ("model_loading_args", "from_pretrained_args", "load_kwargs"):
        for src in (hf, node):
            if isinstance(src.get(key), dict):
                load_kwargs.update(src.pop(key))
    if load_kwargs:
        out["load_kwargs"] = load_kwargs
    if "model_class" in hf:
        conv.warn(
            f"{path}.hf_config.model_class", "dropped: the runner loads causal LMs with AutoModelForCausalLM"
        )
    for key in ("adapter_path", "model_file_format"):
        if key in node:
            out[key] = _resource_path(node.pop(key), f"{path}.{key}", conv, client)
    if out.get("model_file_format") == "PyTorch.HuggingFace":
        out.pop("model_file_format")
    for key in set(node) - set(UNSUPPORTED_MODEL):
        conv.error(f"{path}.{key}", "unknown input_model key for an HfModel")
    return out


def _accelerators(value: Any) -> Any:
    """Legacy accelerators are device names (["gpu"]); current ones are objects. Devices lowercased."""
    if not isinstance(value, list):
        return value
    out = [{"device": a} if isinstance(a, str) else a for a in value]
    for acc in out:
        if isinstance(acc, dict) and isinstance(acc.get("device"), str):
            acc["device"] = acc["device"].lower()
    return out


def _systems(raw: Json, conv: _Conversion) -> Json:
    out: Json = {}
    for name, sys_raw in raw.items():
        node = _flatten_config(sys_raw)
        kind = node.get("type")
        if kind in ("Docker", "PythonEnvironment", "IsolatedORT"):
            conv.error(
                f"systems.{name}.type",
                f"{kind} systems run on the machine of `olive run`; in a cluster every pass runs in the runner "
                "image: use LocalSystem or Kubernetes (and spec.kubernetes.image for a custom image)",
            )
        if "accelerators" in node:
            node["accelerators"] = _accelerators(node["accelerators"])
        for key in ("olive_managed_env", "requirements_file", "is_dev", "resources"):
            if key in node:
                conv.warn(f"systems.{name}.{key}", "dropped: Olive-managed environments do not apply in a cluster")
                node.pop(key)
        out[name] = node
    return out


def _device_for(ep: str) -> str:
    return "cpu" if ep == "CPUExecutionProvider" else "gpu"


def _apply_execution_providers(spec: Json, eps: list[Any], conv: _Conversion) -> None:
    """engine.execution_providers (legacy) → accelerators of the target system."""
    names = [e if isinstance(e, str) else e[0] for e in eps]
    systems = spec.setdefault("systems", {})
    target = spec.get("target") or spec.get("host")
    if target is None:
        target = "local_system"
        systems.setdefault(target, {"type": "LocalSystem"})
        spec["host"] = spec["target"] = target
    if target not in systems:
        conv.error("engine.execution_providers", f"target {target!r} is not in systems")
        return
    system = systems[target]
    accelerators = system.get("accelerators") or [{"device": _device_for(names[0])}]
    for acc in accelerators:
        acc.setdefault("execution_providers", names)
    system["accelerators"] = accelerators


def _data_config(raw: Json, conv: _Conversion, path: str, client: Json | None) -> Json:
    node = dict(raw)
    kind = node.get("type", "HuggingfaceContainer")
    if kind != "HuggingfaceContainer":
        conv.error(f"{path}.type", f"data container {kind!r} is not supported; use HuggingfaceContainer")
    for key in ("user_script", "script_dir"):
        if key in node:
            conv.error(f"{path}.{key}", f"not supported: {unsupported.USER_CODE}")
    for key in ("post_process_data_config", "dataloader_config"):
        if key in node:
            conv.warn(f"{path}.{key}", "dropped: used only by Olive's evaluators, which olivekube does not run")
            node.pop(key)
    node["type"] = "HuggingfaceContainer"
    load = node.get("load_dataset_config")
    if isinstance(load, dict):
        load = {**{k: v for k, v in load.items() if k not in ("params", "type")}, **load.get("params", {})}
        if "data_files" in load:
            load["data_files"] = _resource_path(
                load["data_files"], f"{path}.load_dataset_config.data_files", conv, client
            )
        node["load_dataset_config"] = load
    pre = node.get("pre_process_data_config")
    if isinstance(pre, dict):
        pre = {**{k: v for k, v in pre.items() if k != "params"}, **pre.get("params", {})}
        ppath = f"{path}.pre_process_data_config"
        for old, new in RENAMED_TEXT_GEN.items():
            if old in pre:
                pre[new] = pre.pop(old)
        dataset_type = pre.pop("dataset_type", "corpus")
        if dataset_type != "corpus":
            conv.error(f"{ppath}.dataset_type", f"{dataset_type!r} data is not supported; only corpus text data")
        if pre.get("type") in (None, "text_generation_huggingface_pre_process", "huggingface_pre_process"):
            pre.pop("type", None)
        for key in ("user_script", "text_formatting_func"):
            if key in pre:
                conv.error(f"{ppath}.{key}", f"not supported: {unsupported.USER_CODE}")
        node["pre_process_data_config"] = pre
    return node


def _data_configs(raw: Any, conv: _Conversion, client: Json | None) -> list[Json]:
    # The legacy form may give data configs as a map of name -> config.
    items = [{"name": name, **cfg} for name, cfg in raw.items()] if isinstance(raw, dict) else list(raw)
    return [_data_config(item, conv, f"data_configs[{i}]", client) for i, item in enumerate(items)]


def _training_args(args: Json) -> Json:
    out = dict(args)
    if "evaluation_strategy" in out:
        out["eval_strategy"] = out.pop("evaluation_strategy")
    return out


def _pass(name: str, raw: Any, spec: Json, conv: _Conversion) -> Json | None:
    path = f"passes.{name}"
    if isinstance(raw, list):
        if len(raw) != 1:
            conv.error(
                path, f"a list of {len(raw)} alternatives is Olive's search, which is not supported; keep one"
            )
            return None
        raw = raw[0]
    node = _flatten_config(raw)
    kind = node.get("type")
    if kind not in PASS_TYPES:
        hint = PASS_HINTS.get(str(kind), f"supported: {', '.join(PASS_TYPES)}")
        conv.error(f"{path}.type", f"pass type {kind!r} is not implemented by the olivekube runner; {hint}")
        return None
    for key in ("user_script", "script_dir"):
        if key in node:
            conv.error(f"{path}.{key}", f"not supported: {unsupported.USER_CODE}")
    for key, why in DROPPED_PASS_KEYS.items():
        if key in node:
            conv.warn(f"{path}.{key}", f"dropped: {why}")
            node.pop(key)
    if "lora_r" in node:
        node["r"] = node.pop("lora_r")
    if "lora_alpha" in node:
        node["alpha"] = node.pop("lora_alpha")
    if kind == "LoRA":
        for key in ("double_quant", "quant_type", "compute_dtype"):
            if key in node:
                conv.warn(
                    f"{path}.{key}",
                    "dropped: a QLoRA option on a LoRA pass, which Olive ignored too; "
                    "set type: QLoRA to train on a 4-bit base",
                )
                node.pop(key)
    if isinstance(node.get("training_args"), dict):
        node["training_args"] = _training_args(node["training_args"])
    for key in ("train_data_config", "eval_data_config"):
        ref = node.get(key)
        if isinstance(ref, dict):  # an inline data config: give it a name
            inline_name = ref.get("name") or f"{name}_{key.split('_')[0]}"
            spec.setdefault("data_configs", []).append(
                _data_config({**ref, "name": inline_name}, conv, f"{path}.{key}", spec.get("azureml_client"))
            )
            node[key] = inline_name
    if kind == "ModelBuilder" and isinstance(node.get("precision"), str):
        node["precision"] = node["precision"].lower()
    return node


def _engine_options(src: Json, spec: Json, conv: _Conversion) -> Any:
    """Move the engine options (nested under `engine` in the legacy form) into `spec`; returns the
    engine's execution_providers, which become the target system's."""
    engine = src.pop("engine", {}) or {}
    engine_eps = engine.pop("execution_providers", None)
    for key in ENGINE_KEYS:
        for source in (engine, src):
            if key in source:
                spec[key] = source.pop(key)
    if spec.get("search_strategy") not in (None, False):
        conv.error("search_strategy", "search is not supported; set it to false and list the passes explicitly")
    for key in ("packaging_config", "evaluator", "plot_pareto_frontier", "no_artifacts", "log_to_file"):
        if key in engine:
            conv.warn(f"engine.{key}", "dropped: an Olive engine option with no effect in olivekube")
            engine.pop(key)
    for key in engine:
        conv.error(f"engine.{key}", "unknown engine option")
    return engine_eps


def _passes(src: Json, spec: Json, conv: _Conversion) -> tuple[Json, list[str]]:
    """The converted passes, and the order the config wrote them in (its pass flow, if any)."""
    raw_passes = src.pop("passes", {}) or {}
    order = list(raw_passes)
    flows = src.pop("pass_flows", None)
    if flows is not None:
        if len(flows) != 1:
            conv.error(
                "pass_flows", f"{len(flows)} pass flows are several workflows; split the config, one per flow"
            )
        else:
            order = list(flows[0])
            for name in set(raw_passes) - set(order):
                conv.warn(f"passes.{name}", "dropped: not in the pass flow")
    passes: Json = {}
    for name in order:
        if name not in raw_passes:
            conv.error("pass_flows", f"names unknown pass {name!r}")
            continue
        converted = _pass(name, raw_passes[name], spec, conv)
        if converted is not None:
            passes[name] = converted
    return passes, order


def olive_to_spec(config: Json) -> tuple[Json, list[Problem]]:
    """Convert an Olive run config (either form) to a workflow spec. Returns (spec, warnings)."""
    conv = _Conversion()
    if not isinstance(config, dict):
        raise ConvertError([Problem("", f"an Olive config must be a mapping, not {type(config).__name__}")])
    src = copy.deepcopy(config)
    src.pop("$schema", None)
    spec: Json = {}
    client = src.pop("azureml_client", None)
    if client:
        spec["azureml_client"] = client
    for key, why in UNSUPPORTED_TOP.items():
        if key in src:
            conv.error(key, f"not supported: {why}")
            src.pop(key)
    if "workflow_id" in src:
        spec["workflow_id"] = src.pop("workflow_id")
    if "input_model" not in src:
        conv.error("input_model", "missing")
    else:
        spec["input_model"] = _input_model(src.pop("input_model"), conv, client)
    if "systems" in src:
        spec["systems"] = _systems(src.pop("systems"), conv)
    if "data_configs" in src:
        spec["data_configs"] = _data_configs(src.pop("data_configs"), conv, client)
    engine_eps = _engine_options(src, spec, conv)
    passes, order = _passes(src, spec, conv)
    spec["passes"] = passes
    if engine_eps:
        _apply_execution_providers(spec, engine_eps, conv)
    for key in src:
        conv.error(key, "unknown Olive config key")
    if conv.problems:
        raise ConvertError(conv.problems)
    _warn_order(passes, order, conv)
    return spec, conv.warnings


def _warn_order(passes: Json, order: list[str], conv: _Conversion) -> None:
    staged = sorted(passes, key=lambda n: stage_of(passes[n]["type"]))
    written = [n for n in order if n in passes]
    if staged != written:
        conv.warn("passes", f"run in stage order {staged}, not as written {written}")


def manifest_name(hint: str) -> str:
    """A valid resource name from a file name or workflow id."""
    name = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:63].strip("-")
    return name or "workflow"


def to_manifest(config: Json, name: str, namespace: str | None = None) -> tuple[Json, list[Problem]]:
    """An OptimizationWorkflow manifest from an Olive config. Returns (manifest, warnings)."""
    spec, warnings = olive_to_spec(config)
    metadata: Json = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}, warnings


def spec_to_olive(spec: Json) -> Json:
    """The current-form Olive config of a workflow spec (Kubernetes-only settings left out)."""
    return {k: copy.deepcopy(v) for k, v in spec.items() if k not in ("kubernetes", "suspend")}
