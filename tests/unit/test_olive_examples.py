"""Olive's own Phi-3 LoRA/QLoRA example configs (examples/olive/upstream, copied from Olive's
repository) convert to manifests that validate, or are refused only for what truly needs user code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olivekube.api.olive_config import ConvertError, to_manifest
from olivekube.api.validation import validate_document

UPSTREAM = Path(__file__).resolve().parents[2] / "examples" / "olive" / "upstream"
CONFIGS = sorted(p for p in UPSTREAM.glob("*.json") if "template" not in p.name)
USER_CODE_PATHS = ("data_configs[0].user_script", "data_configs[0].components.load_dataset.type")


def convert(config: dict) -> tuple[dict | None, list[str], list[str]]:
    """(manifest or None, problem paths, warnings)."""
    try:
        manifest, warnings = to_manifest(config, "wf", "ml")
    except ConvertError as exc:
        return None, [p.path for p in exc.problems], []
    return manifest, [], [str(w) for w in warnings]


def test_every_upstream_config_is_here() -> None:
    assert len(CONFIGS) == 12, [p.name for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_converts_and_validates_or_is_refused_for_user_code(path: Path) -> None:
    config = json.loads(path.read_text())
    manifest, problems, _ = convert(config)
    if manifest is not None:
        assert validate_document(manifest) == []
        return
    assert set(problems) == set(USER_CODE_PATHS), problems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_with_its_data_given_as_a_file_every_config_converts(path: Path) -> None:
    """The user code is the only thing in the way: give the same data as a JSON file and it converts."""
    config = json.loads(path.read_text())
    for data in config.get("data_configs", []):
        for key in ("user_script", "components"):
            data.pop(key, None)
        if "params_config" in data:
            data["params_config"].update(data_name="json", data_files="data/tiny-codes.json")
            data["params_config"].get("component_kwargs", {}).pop("load_dataset", None)
    manifest, problems, _ = convert(config)
    assert manifest is not None, problems
    assert validate_document(manifest) == []


def test_legacy_classification_config_keeps_every_option() -> None:
    config = json.loads((UPSTREAM / "phi3_phi3_classification.json").read_text())
    manifest, problems, warnings = convert(config)
    assert manifest is not None, problems
    spec = manifest["spec"]
    data = spec["data_configs"][0]
    assert data["load_dataset_config"] == {
        "data_name": "json",
        "data_files": "models/dataset-classification.json",
        "split": "train",
    }
    assert data["pre_process_data_config"] == {
        "text_cols": ["phrase", "tone"],
        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
        "strategy": "join",
        "max_seq_len": 1024,
        "pad_to_max_len": False,
        "use_attention_mask": False,
    }
    qlora = spec["passes"]["qlora"]
    assert qlora["type"] == "QLoRA" and qlora["eval_dataset_size"] == 0.3
    args = qlora["training_args"]
    assert args["load_best_model_at_end"] is True  # a TrainingArguments key we do not type: kept
    assert args["eval_strategy"] == "steps" and "output_dir" not in args
    assert any(w.startswith("input_model.io_config: dropped") for w in warnings)
    assert any(w.startswith("passes.qlora.training_args.output_dir: dropped") for w in warnings)


def test_lower_case_pass_type_and_deepspeed() -> None:
    config = json.loads((UPSTREAM / "phi3_deepspeed_test_finetune.json").read_text())
    manifest, problems, warnings = convert(config)
    assert manifest is not None, problems
    assert manifest["spec"]["passes"]["f"]["type"] == "QLoRA"
    assert any("training_args.deepspeed: dropped" in w for w in warnings)


def test_template_generated_configs_run_lora_merge_and_int4() -> None:
    config = json.loads((UPSTREAM / "phi3_phi3_run_qlora_cpu_int4.json").read_text())
    manifest, problems, _ = convert(config)
    assert manifest is not None, problems
    assert list(manifest["spec"]["passes"]) == ["qlora", "merge_adapter_weights", "builder"]
    assert [d["name"] for d in manifest["spec"]["data_configs"]] == ["tiny_codes_train", "tiny_codes_eval"]


def test_the_qlora_int4_extract_adapters_configs_keep_their_pass_chain() -> None:
    config = json.loads((UPSTREAM / "phi3_phi3_qlora_cpu.json").read_text())
    config["data_configs"][0] = {
        "name": "tiny_codes_train",
        "load_dataset_config": {"data_name": "json", "data_files": "codes.json"},
    }
    manifest, problems, warnings = convert(config)
    assert manifest is not None, problems
    passes = manifest["spec"]["passes"]
    assert [p["type"] for p in passes.values()] == ["QLoRA", "ModelBuilder", "ExtractAdapters"]
    assert passes["extract"] == {"type": "ExtractAdapters", "make_inputs": True}
    assert any("enable_GQA_on_CPU: dropped" in w for w in warnings)
