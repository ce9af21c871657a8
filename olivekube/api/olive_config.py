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
from olivekube.api.validation import Problem, validate_document
from olivekube.search.config import inline
from olivekube.search.parameters import is_search_parameter
from olivekube.search.space import SEARCHABLE

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
    "evaluator",
    "clean_cache",
)
UNSUPPORTED_TOP = {
    "packaging_config": unsupported.PACKAGING,
    "workflow_host": unsupported.WORKFLOW_HOST,
}
UNSUPPORTED_MODEL = {
    "components": unsupported.COMPONENTS,
    "model_loader": unsupported.USER_CODE,
}
UNUSED_MODEL_KEYS = ("model_script", "script_dir", "io_config", "dummy_inputs_func")
"""Olive's ONNX export (OnnxConversion) reads these; no olivekube pass does, so Olive would ignore them too."""
PASS_HINTS = {
    "OnnxConversion": "use ModelBuilder, which converts (and quantizes) causal LMs to ONNX",
    "OnnxMatMul4Quantizer": "use ModelBuilder with precision int4",
    "OrtTransformersOptimization": "ModelBuilder writes an already-optimized graph",
}
DROPPED_PASS_KEYS = {
    "disable_search": (
        "Olive 0.8 and later have no per-pass switch: search_strategy.include_pass_params (default true) "
        "decides for every pass"
    ),
    "clean_run_cache": "set spec.clean_cache instead to rerun cached passes",
    "output_name": "outputs are named by pass",
    "save_as_external_data": "ModelBuilder decides how to store weights",
    "all_tensors_to_one_file": "ModelBuilder decides how to store weights",
}
RENAMED_TEXT_GEN = {"source_max_len": "max_seq_len", "corpus_strategy": "strategy"}
LOAD_KEYS = ("data_name", "subset", "split", "data_files", "data_dir", "col_filters", "trust_remote_code")
"""Keys of Olive's load_dataset component (huggingface_dataset)."""
PRE_PROCESS_KEYS = (
    "text_template",
    "text_cols",
    "strategy",
    "max_seq_len",
    "max_samples",
    "add_special_tokens",
    "pad_to_max_len",
    "use_attention_mask",
    "stride",
    "joiner",
    "dataset_type",
    *RENAMED_TEXT_GEN,
)
"""Keys of Olive's text-generation pre_process component, current and legacy names."""
UNUSED_DATA_KEYS = {
    "model_name": "the runner tokenizes with the input model's tokenizer",
    "task": "the task is the input model's (text-generation)",
    "batch_size": "the trainer batches by training_args.per_device_train_batch_size",
    "input_cols": "used only by Olive's evaluators",
    "label_cols": "used only by Olive's evaluators",
}
"""Legacy params_config keys that meant something to another component or to evaluation only."""
BUILTIN_COMPONENTS = {
    "load_dataset": ("huggingface_dataset",),
    "pre_process_data": ("text_generation_huggingface_pre_process", "huggingface_pre_process"),
    "post_process_data": ("text_generation_post_process", "default_post_process"),
    "dataloader": ("default_dataloader", "no_auto_batch_dataloader"),
}
"""The components of Olive's HuggingfaceContainer for causal LMs, which olivekube implements."""


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


@dataclass(frozen=True)
class _OneOf:
    """A node that may take either shape, chosen by its Python type (a list, a mapping, a string)."""

    shapes: tuple[Any, ...]


_KWARGS: Json = {}
_MODEL: Json = {
    "type": str,
    "hf_config": {"model_loading_args": _KWARGS, "from_pretrained_args": _KWARGS, "load_kwargs": _KWARGS},
    "model_loading_args": _KWARGS,
    "from_pretrained_args": _KWARGS,
    "load_kwargs": _KWARGS,
}
_DATA: Json = {
    "type": str,
    "name": str,
    "load_dataset_config": {"params": _KWARGS},
    "pre_process_data_config": {"params": _KWARGS},
    "params_config": {"component_kwargs": {"*": _KWARGS}},
    "components": {"*": _OneOf((str, {"params": _KWARGS}))},
}
_PASS: Json = {"type": str, "training_args": {"extra_args": _KWARGS}, "train_data_config": _OneOf((str, _DATA))}
_PASS["eval_data_config"] = _PASS["train_data_config"]
_SYSTEM: Json = {"type": str, "accelerators": [_OneOf((str, {}))]}
SHAPES: Json = {
    "input_model": {**_MODEL, "config": _MODEL},
    "systems": {"*": {**_SYSTEM, "config": _SYSTEM}},
    "data_configs": _OneOf(([_DATA], {"*": _DATA})),
    "passes": {"*": _OneOf(({**_PASS, "config": _PASS}, [{**_PASS, "config": _PASS}]))},
    "pass_flows": [[str]],
    "engine": {"execution_providers": [_OneOf((str, [None]))], "host": str, "target": str},
    "host": str,
    "target": str,
    "azureml_client": {},
    "evaluators": {
        "*": {
            "metrics": [
                {
                    "name": str,
                    "type": str,
                    "data_config": _OneOf((str, _DATA)),
                    "sub_types": [{"name": str, "goal": {}}],
                    "user_config": {},
                }
            ]
        }
    },
}
"""The containers the conversion walks, checked first so that a config of the wrong shape is an error
naming the key, never a crash: a dict is a mapping (its listed keys checked when present, "*" every
key), a list a list of the one shape in it, `str` a string, None anything."""


def _check_shape(value: Any, shape: Any, path: str, conv: _Conversion) -> None:
    if shape is None:
        return
    if isinstance(shape, _OneOf):
        kinds: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
        for option in shape.shapes:
            kind = option if isinstance(option, type) else type(option)
            if isinstance(value, kind):
                _check_shape(value, option, path, conv)
                return
        allowed = " or ".join(kinds[o if isinstance(o, type) else type(o)] for o in shape.shapes)
        conv.error(path, f"must be {allowed}, not {type(value).__name__}")
    elif shape is str:
        if not isinstance(value, str):
            conv.error(path, f"must be a string, not {type(value).__name__}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            conv.error(path, f"must be a list, not {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check_shape(item, shape[0], f"{path}[{i}]", conv)
    elif not isinstance(value, dict):
        conv.error(path, f"must be a mapping, not {type(value).__name__}")
    else:
        for key, item in value.items():
            if not isinstance(key, str):
                conv.error(path, f"keys must be strings, not {type(key).__name__} ({key!r})")
            elif key in shape or "*" in shape:
                _check_shape(item, shape.get(key, shape.get("*")), f"{path}.{key}" if path else key, conv)


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


RESOURCE_PATH_KEYS = {
    "azureml_datastore": ("datastore_name", "relative_path"),
    "azureml_registry_model": ("registry_name", "name", "version"),
    "azureml_model": ("name", "version"),
}


def _resource_path(value: Any, path: str, conv: _Conversion, client: Json | None) -> Any:
    """Map Olive's typed resource paths ({"type": "azureml_datastore", ...}) to URIs."""
    if not isinstance(value, dict) or "type" not in value:
        return value
    kind = value["type"]
    cfg = value.get("config", {k: v for k, v in value.items() if k != "type"})
    if not isinstance(kind, str) or not isinstance(cfg, dict):
        conv.error(path, "a resource path is a URI string, or a mapping with a type and its config")
        return value
    needs = RESOURCE_PATH_KEYS.get(kind, ())
    missing = [key for key in needs if key not in cfg]
    if missing or (kind == "azureml_datastore" and not isinstance(cfg.get("azureml_client", client) or {}, dict)):
        conv.error(path, f"a {kind} resource path needs {', '.join(needs)} (missing: {', '.join(missing)})")
        return value
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


def _auto_optimizer(value: Any, has_passes: bool, conv: _Conversion) -> None:
    """Olive's auto-optimizer picks the passes only when a config lists none and does not disable it;
    otherwise the block has no effect there and is dropped here."""
    if value is None:
        return
    disabled = isinstance(value, dict) and bool(value.get("disable_auto_optimizer"))
    if not has_passes and not disabled:
        conv.error("auto_optimizer_config", f"not supported: {unsupported.AUTO_OPTIMIZER}")
        return
    why = "disable_auto_optimizer is set" if disabled else "the config lists its passes"
    conv.warn("auto_optimizer_config", f"dropped: Olive would not use it either ({why})")


def _input_model(raw: Json, conv: _Conversion, client: Json | None) -> Json:
    node = _flatten_config(raw)
    kind = node.pop("type", "HfModel")
    path = "input_model"
    if kind not in ("HfModel", "PyTorchModel", "HFModel"):
        conv.error(f"{path}.type", f"model type {kind!r} is not supported; only Hugging Face causal LMs (HfModel)")
    for key, why in UNSUPPORTED_MODEL.items():
        if key in node:
            conv.error(f"{path}.{key}", f"not supported: {why}")
    for key in UNUSED_MODEL_KEYS:
        if key in node:
            node.pop(key)
            conv.warn(
                f"{path}.{key}",
                "dropped: no pass of this workflow uses it (ModelBuilder loads the model and derives its "
                "inputs and outputs itself)",
            )
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
    if node.pop("generative", True) is False:
        conv.error(f"{path}.generative", "false is not supported: olivekube's models are causal LMs (generative)")
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
    names = [e if isinstance(e, str) else e[0] for e in eps if e]
    if not names or not all(isinstance(n, str) for n in names):
        conv.error("engine.execution_providers", "must list execution provider names, e.g. [CPUExecutionProvider]")
        return
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


def _legacy_components(node: Json, conv: _Conversion, path: str) -> None:
    """Olive's legacy `components` (a type per component): only its built-in causal-LM ones run here."""
    for component, spec in (node.pop("components", None) or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else spec
        if kind not in BUILTIN_COMPONENTS.get(component, ()):
            conv.error(
                f"{path}.components.{component}.type",
                f"{kind!r} is not a built-in Olive component (it comes from user_script): {unsupported.USER_CODE}",
            )
        elif isinstance(spec, dict) and spec.get("params"):
            node.setdefault("params_config", {}).setdefault("component_kwargs", {}).setdefault(component, {})
            node["params_config"]["component_kwargs"][component] = {
                **spec["params"],
                **node["params_config"]["component_kwargs"][component],
            }


def _legacy_params(node: Json, conv: _Conversion, path: str) -> None:
    """Olive's legacy data form: `params_config` (keys matched to components by parameter name) and
    `component_kwargs` (per component) become load_dataset_config and pre_process_data_config."""
    params = dict(node.pop("params_config", None) or {})
    kwargs = dict(params.pop("component_kwargs", None) or {})
    load = {k: params.pop(k) for k in LOAD_KEYS if k in params}
    pre = {k: params.pop(k) for k in PRE_PROCESS_KEYS if k in params}
    load.update(kwargs.pop("load_dataset", None) or {})
    pre.update(kwargs.pop("pre_process_data", None) or {})
    for component in ("post_process_data", "dataloader"):
        if kwargs.pop(component, None):
            conv.warn(
                f"{path}.params_config.component_kwargs.{component}",
                "dropped: used only by Olive's evaluators and dataloaders; the trainer builds its own batches",
            )
    for key, why in UNUSED_DATA_KEYS.items():
        for source, where in ((params, "params_config"), (pre, "params_config.component_kwargs.pre_process_data")):
            if key in source:
                source.pop(key)
                conv.warn(f"{path}.{where}.{key}", f"dropped: {why}")
    for key in params:
        conv.error(f"{path}.params_config.{key}", "unknown data parameter for a HuggingfaceContainer")
    for key in kwargs:
        conv.error(f"{path}.params_config.component_kwargs.{key}", "unknown data component")
    if load:
        node["load_dataset_config"] = {**load, **(node.get("load_dataset_config") or {})}
    if pre:
        node["pre_process_data_config"] = {**pre, **(node.get("pre_process_data_config") or {})}


def _data_config(raw: Json, conv: _Conversion, path: str, client: Json | None) -> Json:
    node = dict(raw)
    kind = node.get("type", "HuggingfaceContainer")
    if kind != "HuggingfaceContainer":
        conv.error(f"{path}.type", f"data container {kind!r} is not supported; use HuggingfaceContainer")
    for key in ("user_script", "script_dir"):
        if key in node:
            conv.error(f"{path}.{key}", f"not supported: {unsupported.USER_CODE}")
    _legacy_components(node, conv, path)
    if "params_config" in node:
        _legacy_params(node, conv, path)
    for key in ("post_process_data_config", "dataloader_config"):
        if key in node:
            conv.warn(
                f"{path}.{key}", "dropped: olivekube's metrics take the label from text_template's last field"
            )
            node.pop(key)
    node["type"] = "HuggingfaceContainer"
    load = node.get("load_dataset_config")
    if isinstance(load, dict):
        load = {**{k: v for k, v in load.items() if k not in ("params", "type")}, **load.get("params", {})}
        if "data_files" in load:
            load["data_files"] = _resource_path(
                load["data_files"], f"{path}.load_dataset_config.data_files", conv, client
            )
        if "max_samples" in load:  # Olive's loader passed it on to datasets, which has no such option
            conv.warn(f"{path}.load_dataset_config.max_samples", "moved to pre_process_data_config.max_samples")
            node["pre_process_data_config"] = {
                "max_samples": load.pop("max_samples"),
                **(node.get("pre_process_data_config") or {}),
            }
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


def _data_configs(raw: Any, client: Json | None) -> list[tuple[Json, _Conversion]]:
    """Each data config converted on its own: one that no pass uses may be dropped with its problems."""
    # The legacy form may give data configs as a map of name -> config.
    items = [{"name": name, **cfg} for name, cfg in raw.items()] if isinstance(raw, dict) else list(raw)
    out = []
    for i, item in enumerate(items):
        own = _Conversion()
        out.append((_data_config(item, own, f"data_configs[{i}]", client), own))
    return out


def _keep_used_data_configs(
    converted: list[tuple[Json, _Conversion]], passes: Json, conv: _Conversion, spec_evaluators: Json | None = None
) -> list[Json]:
    """The data configs, less those that no pass uses and that could not run (an evaluator's dummy
    data, say): Olive would not load those either, so they become warnings."""
    used = {p.get(key) for p in passes.values() for key in ("train_data_config", "eval_data_config")}
    used |= {
        m.get("data_config")
        for evaluator in (spec_evaluators or {}).values()
        for m in evaluator.get("metrics") or []
        if isinstance(m, dict) and m.get("type") not in ("latency", "throughput")
    }
    kept: list[Json] = []
    for i, (config, own) in enumerate(converted):
        if own.problems and config.get("name") not in used:
            conv.warn(
                f"data_configs[{i}]",
                f"dropped {config.get('name')!r}: no pass uses it, and it could not run here ({own.problems[0]})",
            )
            continue
        conv.problems += own.problems
        conv.warnings += own.warnings
        kept.append(config)
    return kept


DROPPED_TRAINING_ARGS = {
    "output_dir": "the runner keeps checkpoints in the pass's own folder",
    "deepspeed": "DeepSpeed is not in the runner image; the pass trains without it",
    "use_cpu": "the pass's system (its accelerator) decides the device",
    "no_cuda": "the pass's system (its accelerator) decides the device",
}


def _training_args(args: Json, path: str, conv: _Conversion) -> Json:
    """Olive's training_args: legacy names renamed, options the runner sets itself dropped with a
    warning; every other key stays (transformers.TrainingArguments keys not typed pass through)."""
    out = dict(args)
    if "evaluation_strategy" in out:
        out["eval_strategy"] = out.pop("evaluation_strategy")
    for key, why in DROPPED_TRAINING_ARGS.items():
        if key in out:
            out.pop(key)
            conv.warn(f"{path}.{key}", f"dropped: {why}")
    return out


ALTERNATIVES = (
    "searches over passes, which a manifest cannot hold; run the Olive config itself with olivekube run, "
    "or keep one and search its options"
)
PASS_TYPE_NAMES = {name.lower(): name for name in PASS_TYPES}
"""Olive looks pass types up case-insensitively ("qlora" is QLoRA)."""
DROPPED_BUILDER_KEYS = {
    "enable_GQA_on_CPU": "current model builders use GroupQueryAttention on the CPU by default",
}


def _pass(name: str, raw: Any, spec: Json, conv: _Conversion) -> Json | None:
    path = f"passes.{name}"
    if isinstance(raw, list):
        if len(raw) != 1:
            conv.error(path, f"a list of {len(raw)} alternatives {ALTERNATIVES}")
            return None
        raw = raw[0]
    node = _flatten_config(raw)
    kind = node.get("type")
    if isinstance(kind, str) and kind.lower() in PASS_TYPE_NAMES:
        kind = node["type"] = PASS_TYPE_NAMES[kind.lower()]
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
    if isinstance(node.get("evaluator"), dict):
        conv.error(f"{path}.evaluator", "name the evaluator under evaluators and give its name here")
    if isinstance(node.get("training_args"), dict):
        node["training_args"] = _training_args(node["training_args"], f"{path}.training_args", conv)
    if kind == "ModelBuilder":
        for key, why in DROPPED_BUILDER_KEYS.items():
            if key in node:
                node.pop(key)
                conv.warn(f"{path}.{key}", f"dropped: {why}")
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
    _move_searched_options(name, node, spec)
    return node


def _move_searched_options(name: str, node: Json, spec: Json) -> None:
    """A typed CRD field cannot hold a search parameter: the manifest keeps them in search_space."""
    searched = {k: node.pop(k) for k in list(node) if is_search_parameter(node[k]) or node[k] == SEARCHABLE}
    if searched:
        spec.setdefault("search_space", {})[name] = searched


METRIC_USER_CONFIG_KEYS = ("warmup_num", "repeat_test_num", "sleep_num", "max_new_tokens", "max_samples")


FRAMEWORK_EVALUATORS = ("OnnxEvaluator", "PyTorchEvaluator", "ONNX", "PyTorch")
"""Olive's evaluators by model format (its registry names): the metrics are the same."""
EVALUATOR_TYPES = (
    "olivekube evaluates with Olive's metrics (accuracy, latency, throughput, size_on_disk) on your data; "
    "the runner does not implement lm-evaluation-harness tasks (LMEvaluator): give metrics instead"
)


def _evaluators(raw: Json, spec: Json, conv: _Conversion) -> Json:
    """Olive's evaluators as they are, with inline data configs named and added to data_configs, and
    user_config keys that tune ONNX Runtime sessions (io_bind, inference_settings, ...) dropped."""
    out: Json = {}
    for ename, evaluator in raw.items():
        node = _flatten_config(evaluator)
        kind = node.pop("type", None)
        if kind in FRAMEWORK_EVALUATORS:
            conv.warn(f"evaluators.{ename}.type", "dropped: olivekube evaluates each model by its format")
        elif kind is not None:
            conv.error(f"evaluators.{ename}.type", f"{kind!r} is not supported: {EVALUATOR_TYPES}")
            continue
        metrics = []
        for i, raw_metric in enumerate(node.get("metrics") or []):
            path = f"evaluators.{ename}.metrics[{i}]"
            metric = dict(raw_metric) if isinstance(raw_metric, dict) else raw_metric
            if not isinstance(metric, dict):
                metrics.append(metric)
                continue
            for key in ("user_script", "script_dir"):
                if key in metric:
                    conv.error(f"{path}.{key}", f"not supported: {unsupported.USER_CODE}")
            data = metric.get("data_config")
            if isinstance(data, dict):
                name = data.get("name") or f"{ename}_{metric.get('name', i)}_data"
                spec.setdefault("data_configs", []).append(
                    _data_config({**data, "name": name}, conv, f"{path}.data_config", spec.get("azureml_client"))
                )
                metric["data_config"] = name
            user = metric.get("user_config")
            if isinstance(user, dict):
                for key in sorted(set(user) - set(METRIC_USER_CONFIG_KEYS)):
                    conv.warn(
                        f"{path}.user_config.{key}", "dropped: an ONNX Runtime session setting olivekube chooses"
                    )
                metric["user_config"] = {k: v for k, v in user.items() if k in METRIC_USER_CONFIG_KEYS} or None
                if metric["user_config"] is None:
                    metric.pop("user_config")
            metrics.append(metric)
        out[ename] = {**{k: v for k, v in node.items() if k != "metrics"}, "metrics": metrics}
    return out


def _timing_without_data(spec: Json, conv: _Conversion) -> None:
    """A latency or throughput metric whose data config could not run times a fixed prompt instead."""
    names = {d.get("name") for d in spec.get("data_configs") or []}
    for ename, evaluator in (spec.get("evaluators") or {}).items():
        for i, metric in enumerate(evaluator.get("metrics") or []):
            if not isinstance(metric, dict) or metric.get("type") not in ("latency", "throughput"):
                continue
            if metric.get("data_config") is not None and metric["data_config"] not in names:
                conv.warn(
                    f"evaluators.{ename}.metrics[{i}].data_config",
                    f"dropped {metric.pop('data_config')!r}: it cannot run here; the metric times a fixed prompt",
                )


def _engine_options(src: Json, spec: Json, conv: _Conversion) -> Any:
    """Move the engine options (nested under `engine` in the legacy form) into `spec`; returns the
    engine's execution_providers, which become the target system's."""
    engine = src.pop("engine", {}) or {}
    engine_eps = engine.pop("execution_providers", None)
    for key in ENGINE_KEYS:
        for source in (engine, src):
            if key in source:
                spec[key] = source.pop(key)
    for key in ("packaging_config", "plot_pareto_frontier", "no_artifacts", "log_to_file", "output_name"):
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
    _check_shape(src, SHAPES, "", conv)
    if conv.problems:
        raise ConvertError(conv.problems)
    spec: Json = {}
    client = src.pop("azureml_client", None)
    if client:
        spec["azureml_client"] = client
    for key, why in UNSUPPORTED_TOP.items():
        if key in src:
            conv.error(key, f"not supported: {why}")
            src.pop(key)
    _auto_optimizer(src.pop("auto_optimizer_config", None), bool(src.get("passes")), conv)
    if "workflow_id" in src:
        spec["workflow_id"] = src.pop("workflow_id")
    if "input_model" not in src:
        conv.error("input_model", "missing")
    else:
        spec["input_model"] = _input_model(src.pop("input_model"), conv, client)
    if "systems" in src:
        spec["systems"] = _systems(src.pop("systems"), conv)
    data_configs = _data_configs(src.pop("data_configs", None) or [], client)
    if data_configs:
        spec["data_configs"] = []
    engine_eps = _engine_options(src, spec, conv)
    if "evaluators" in src:
        spec["evaluators"] = _evaluators(src.pop("evaluators"), spec, conv)
    passes, order = _passes(src, spec, conv)
    spec["passes"] = passes
    if data_configs:
        # Inline data configs of passes were appended while converting them; the named ones go first.
        spec["data_configs"][:0] = _keep_used_data_configs(data_configs, passes, conv, spec.get("evaluators"))
        if not spec["data_configs"]:
            spec.pop("data_configs")
    _timing_without_data(spec, conv)
    if engine_eps:
        _apply_execution_providers(spec, engine_eps, conv)
    for key in src:
        conv.error(key, "unknown Olive config key")
    if conv.problems:
        raise ConvertError(conv.problems)
    _check_result(spec)
    _warn_order(passes, order, conv)
    return spec, conv.warnings


def _check_result(spec: Json) -> None:
    """`convert` never emits a manifest that `validate` refuses: what the API refuses is an error here,
    at the Olive config's own path (the spec mirrors the Olive config's keys)."""
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "converted"}, "spec": spec}
    problems = validate_document(doc)
    if problems:
        at_olive_paths = [Problem(p.path.removeprefix("spec.").removeprefix("spec"), p.message) for p in problems]
        raise ConvertError(at_olive_paths)


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
    out = {k: copy.deepcopy(v) for k, v in spec.items() if k not in ("kubernetes", "suspend", "search_space")}
    if spec.get("search_space"):
        out["passes"] = inline(out["passes"], spec["search_space"])  # inline, as Olive writes them
    return out
