"""Manifests the tests start from: the tone workflow over a model, a valid manifest and the bad ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "tone-classifier" / "dataset-classification.json"
ARCHS = ("phi3", "llama", "qwen2")


def workflow_doc(model_path: str, data_path: str, passes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A manifest for the tone data over `model_path`."""
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "test"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": model_path},
            "data_configs": [
                {
                    "name": "tone",
                    "type": "HuggingfaceContainer",
                    "load_dataset_config": {"data_name": "json", "data_files": data_path, "split": "train"},
                    "pre_process_data_config": {
                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                        "max_seq_len": 48,
                    },
                }
            ],
            "passes": copy.deepcopy(passes),
            **spec,
        },
    }


LORA = {
    "type": "LoRA",
    "r": 8,
    "alpha": 16,
    "train_data_config": "tone",
    "eval_dataset_size": 0.1,
    "training_args": {
        "seed": 0,
        "max_steps": 30,
        "learning_rate": 0.003,
        "per_device_train_batch_size": 8,
        "logging_steps": 5,
    },
}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


Doc = dict[str, Any]


def valid_manifest() -> Doc:
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "tone", "namespace": "ml"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": "microsoft/Phi-3-mini-4k-instruct"},
            "systems": {
                "local": {"type": "LocalSystem", "accelerators": [{"device": "cpu"}]},
                "gpu": {
                    "type": "Kubernetes",
                    "accelerators": [{"device": "gpu"}],
                    "nodeSelector": {"a": "b"},
                },
            },
            "data_configs": [
                {
                    "name": "train",
                    "type": "HuggingfaceContainer",
                    "load_dataset_config": {
                        "data_name": "json",
                        "data_files": "s3://b/d.json",
                        "split": "train",
                    },
                    "pre_process_data_config": {"text_template": "{phrase} {tone}", "max_seq_len": 128},
                }
            ],
            "passes": {
                "lora": {
                    "type": "LoRA",
                    "r": 8,
                    "train_data_config": "train",
                    "eval_dataset_size": 0.2,
                    "training_args": {"max_steps": 10, "learning_rate": 0.001},
                },
                "merge": {"type": "MergeAdapterWeights"},
                "builder": {"type": "ModelBuilder", "precision": "int4", "int4_block_size": 32},
            },
            "host": "local",
            "target": "local",
            "kubernetes": {"backoffLimit": 2, "imagePullPolicy": "IfNotPresent"},
        },
    }


def setter(path: str, value: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        node: Any = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return apply


DELETE = object()
P = "spec.passes"
BAD: list[tuple[str, Callable[[Doc], None], str]] = [
    ("spec.passes.lora.r", setter(f"{P}.lora.r", 0), "spec.passes.lora.r"),
    ("r as string", setter(f"{P}.lora.r", "eight"), "spec.passes.lora.r"),
    ("negative alpha", setter(f"{P}.lora.alpha", -1), "spec.passes.lora.alpha"),
    ("dropout over 1", setter(f"{P}.lora.lora_dropout", 1.5), "spec.passes.lora.lora_dropout"),
    ("unknown pass type", setter(f"{P}.conv", {"type": "OnnxConversion"}), "spec.passes.conv.type"),
    ("pass without type", setter(f"{P}.conv", {"precision": "int4"}), "spec.passes.conv.type"),
    ("unknown precision", setter(f"{P}.builder.precision", "int3"), "spec.passes.builder.precision"),
    ("odd block size", setter(f"{P}.builder.int4_block_size", 48), "spec.passes.builder.int4_block_size"),
    (
        "accuracy level",
        setter(f"{P}.builder.int4_accuracy_level", 7),
        "spec.passes.builder.int4_accuracy_level",
    ),
    ("int4 option on fp32", setter(f"{P}.builder.precision", "fp32"), "spec.passes.builder"),
    (
        "dangling train data",
        setter(f"{P}.lora.train_data_config", "nope"),
        "spec.passes.lora.train_data_config",
    ),
    ("dangling eval data", setter(f"{P}.lora.eval_data_config", "nope"), "spec.passes.lora.eval_data_config"),
    (
        "missing train data",
        setter(f"{P}.lora.train_data_config", DELETE),
        "spec.passes.lora.train_data_config",
    ),
    ("dangling host", setter("spec.host", "nope"), "spec.host"),
    ("dangling target", setter("spec.target", "nope"), "spec.target"),
    ("dangling pass host", setter(f"{P}.lora.host", "nope"), "spec.passes.lora.host"),
    ("legacy lora_r", setter(f"{P}.lora.lora_r", 8), "spec.passes.lora.lora_r"),
    (
        "legacy evaluation_strategy",
        setter(f"{P}.lora.training_args.evaluation_strategy", "steps"),
        "spec.passes.lora.training_args.evaluation_strategy",
    ),
    ("legacy engine block", setter("spec.engine", {"host": "local"}), "spec.engine"),
    ("legacy pass_flows", setter("spec.pass_flows", [["lora"]]), "spec.pass_flows"),
    ("legacy nested config", setter(f"{P}.merge.config", {}), "spec.passes.merge.config"),
    (
        "legacy hf_config",
        setter("spec.input_model.hf_config", {"model_name": "x"}),
        "spec.input_model.hf_config",
    ),
    (
        "legacy source_max_len",
        setter("spec.data_configs.0.pre_process_data_config.source_max_len", 9),
        "spec.data_configs.0.pre_process_data_config.source_max_len",
    ),
    (
        "legacy params",
        setter("spec.data_configs.0.load_dataset_config.params", {}),
        "spec.data_configs.0.load_dataset_config.params",
    ),
    ("missing input model", setter("spec.input_model", DELETE), "spec.input_model"),
    ("empty model path", setter("spec.input_model.model_path", ""), "spec.input_model.model_path"),
    ("no passes", setter("spec.passes", {}), "spec.passes"),
    (
        "zero max_steps",
        setter(f"{P}.lora.training_args.max_steps", 0),
        "spec.passes.lora.training_args.max_steps",
    ),
    (
        "negative lr",
        setter(f"{P}.lora.training_args.learning_rate", -1.0),
        "spec.passes.lora.training_args.learning_rate",
    ),
    (
        "zero batch",
        setter(f"{P}.lora.training_args.per_device_train_batch_size", 0),
        "spec.passes.lora.training_args.per_device_train_batch_size",
    ),
    (
        "unknown scheduler",
        setter(f"{P}.lora.training_args.lr_scheduler_type", "zigzag"),
        "spec.passes.lora.training_args.lr_scheduler_type",
    ),
    (
        "duplicate data names",
        lambda d: d["spec"]["data_configs"].append(copy.deepcopy(d["spec"]["data_configs"][0])),
        "spec.data_configs",
    ),
    (
        "data without source",
        setter("spec.data_configs.0.load_dataset_config", DELETE),
        "spec.data_configs.0.load_dataset_config",
    ),
    (
        "bad split slice",
        setter("spec.data_configs.0.load_dataset_config.split", "train[:70%"),
        "spec.data_configs.0.load_dataset_config.split",
    ),
    (
        "zero max_seq_len",
        setter("spec.data_configs.0.pre_process_data_config.max_seq_len", 0),
        "spec.data_configs.0.pre_process_data_config.max_seq_len",
    ),
    (
        "empty text_cols",
        setter("spec.data_configs.0.pre_process_data_config.text_cols", []),
        "spec.data_configs.0.pre_process_data_config.text_cols",
    ),
    (
        "user script in data",
        setter("spec.data_configs.0.user_script", "u.py"),
        "spec.data_configs.0.user_script",
    ),
    ("Docker system", setter("spec.systems.local.type", "Docker"), "spec.systems.local.type"),
    (
        "unknown device",
        setter("spec.systems.local.accelerators.0.device", "tpu"),
        "spec.systems.local.accelerators.0.device",
    ),
    (
        "unknown EP",
        setter("spec.systems.local.accelerators.0.execution_providers", ["FooExecutionProvider"]),
        "spec.systems.local.accelerators.0.execution_providers.0",
    ),
    (
        "AzureML without compute",
        setter("spec.systems.aml", {"type": "AzureML"}),
        "spec.systems.aml.aml_compute",
    ),
    (
        "AzureML without workspace",
        setter("spec.systems.aml", {"type": "AzureML", "aml_compute": "c"}),
        "spec.systems.aml.azureml_client",
    ),
    ("bad metadata name", setter("metadata.name", "Tone_Model"), "metadata.name"),
    ("missing metadata name", setter("metadata.name", DELETE), "metadata.name"),
    ("wrong apiVersion", setter("apiVersion", "olivekube.io/v1"), "apiVersion"),
    ("wrong kind", setter("kind", "Workflow"), "kind"),
    ("negative backoffLimit", setter("spec.kubernetes.backoffLimit", -1), "spec.kubernetes.backoffLimit"),
    (
        "bad pull policy",
        setter("spec.kubernetes.imagePullPolicy", "Sometimes"),
        "spec.kubernetes.imagePullPolicy",
    ),
    (
        "zero deadline",
        setter("spec.kubernetes.activeDeadlineSeconds", 0),
        "spec.kubernetes.activeDeadlineSeconds",
    ),
    ("unknown sampler", setter("spec.search_strategy", {"sampler": "grid"}), "spec.search_strategy.sampler"),
    ("search of no pass", setter("spec.search_space", {"nope": {"r": [4]}}), "spec.search_space.nope"),
    (
        "search of no option",
        setter("spec.search_space", {"lora": {"rank": {"type": "Categorical", "support": [4]}}}),
        "spec.search_space.lora.rank",
    ),
    ("search of a plain value", setter("spec.search_space", {"lora": {"r": 8}}), "spec.search_space.lora.r"),
    (
        "search of the pass type",
        setter("spec.search_space", {"lora": {"type": {"type": "Categorical", "support": ["DoRA"]}}}),
        "spec.search_space.lora.type",
    ),
    ("evaluator with no metrics", setter("spec.evaluators", {"e": {}}), "spec.evaluators.e.metrics"),
    ("suspend as string", setter("spec.suspend", "yes"), "spec.suspend"),
    ("merge without adapter", setter(f"{P}.lora", DELETE), "spec.passes.merge"),
    ("pass type not implemented", setter(f"{P}.ex", {"type": "OnnxConversion"}), "spec.passes.ex.type"),
    ("extract adapters of a merged model", setter(f"{P}.ex", {"type": "ExtractAdapters"}), "spec.passes.ex"),
    (
        "two training passes",
        setter(f"{P}.qlora", {"type": "QLoRA", "train_data_config": "train"}),
        "spec.passes.qlora",
    ),
    ("unknown spec key", setter("spec.foo", 1), "spec.foo"),
    (
        "bad pass name",
        lambda d: d["spec"]["passes"].update({"bad name!": {"type": "MergeAdapterWeights"}}),
        "spec.passes",
    ),
    ("QLoRA option on LoRA", setter(f"{P}.lora.double_quant", True), "spec.passes.lora.double_quant"),
    ("precision on LoRA", setter(f"{P}.lora.precision", "int4"), "spec.passes.lora.precision"),
    (
        "hostPath volume",
        setter("spec.kubernetes.volumes", [{"name": "root", "hostPath": {"path": "/"}}]),
        "spec.kubernetes.volumes.0.hostPath",
    ),
    ("volume without a source", setter("spec.kubernetes.volumes", [{"name": "v"}]), "spec.kubernetes.volumes.0"),
    (
        "privileged pods",
        setter("spec.kubernetes.securityContext", {"privileged": True}),
        "spec.kubernetes.securityContext",
    ),
    ("host network", setter("spec.kubernetes.hostNetwork", True), "spec.kubernetes.hostNetwork"),
    (
        "mount propagation",
        setter(
            "spec.kubernetes.volumeMounts",
            [{"name": "v", "mountPath": "/v", "mountPropagation": "Bidirectional"}],
        ),
        "spec.kubernetes.volumeMounts.0.mountPropagation",
    ),
    (
        "envFrom of a pod field",
        setter("spec.kubernetes.envFrom", [{"secretRef": {"name": "s"}, "fieldRef": {"fieldPath": "x"}}]),
        "spec.kubernetes.envFrom.0.fieldRef",
    ),
    (
        "training settings for a pass that does not train",
        setter("spec.kubernetes.training", {"passes": {"builder": {"numNodes": 2}}}),
        "spec.kubernetes.training.passes",
    ),
    (
        "no nodes",
        setter("spec.kubernetes.training", {"default": {"numNodes": 0}}),
        "spec.kubernetes.training.default.numNodes",
    ),
    (
        "env naming the operator's home",
        setter("spec.kubernetes.env", [{"name": "HOME", "value": "/h"}]),
        "spec.kubernetes.env.0",
    ),
    (
        "env naming the operator's variables",
        setter("spec.kubernetes.env", [{"name": "OLIVEKUBE_ATTEMPT", "value": "9"}]),
        "spec.kubernetes.env.0",
    ),
    (
        "from_pretrained argument outside the list",
        setter("spec.input_model.load_kwargs", {"cache_dir": "/elsewhere"}),
        "spec.input_model.load_kwargs",
    ),
    ("spec is a list", setter("spec", []), "spec"),
]


def merge_patch(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`current` after the JSON merge patch `patch` (RFC 7386), as the API server applies it."""
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out
