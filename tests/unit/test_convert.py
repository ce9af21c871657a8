"""Olive configs (legacy and current) convert to valid manifests, and back without loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olivekube.api.olive_config import ConvertError, olive_to_spec, spec_to_olive, to_manifest
from olivekube.api.validation import validate_document
from olivekube.api.workflow import parse_workflow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "olive").glob("*.json"))


def load(name: str) -> dict:
    return json.loads((REPO / "examples" / "olive" / name).read_text())


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_examples_convert_to_valid_manifests(config: Path) -> None:
    manifest, _ = to_manifest(json.loads(config.read_text()), "wf", "ml")
    assert validate_document(manifest) == []


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_round_trip_loses_nothing(config: Path) -> None:
    spec, _ = olive_to_spec(json.loads(config.read_text()))
    again, warnings = olive_to_spec(spec_to_olive(spec))
    assert again == spec
    assert warnings == []


def test_seed_legacy_config_maps_every_option() -> None:
    spec, warnings = olive_to_spec(load("phi3-seed-legacy.json"))
    assert spec["input_model"] == {
        "type": "HfModel",
        "model_path": "model-cache/microsoft/phi-3-mini",
        "task": "text-generation",
        "load_kwargs": {"trust_remote_code": True},
    }
    data = spec["data_configs"][0]
    assert data["load_dataset_config"] == {
        "data_name": "json",
        "data_files": "dataset/dataset-classification.json",
        "split": "train",
    }
    pre = data["pre_process_data_config"]
    assert pre["strategy"] == "join" and pre["max_seq_len"] == 2048 and pre["text_cols"] == ["phrase", "tone"]
    assert "dataset_type" not in pre and "source_max_len" not in pre
    lora = spec["passes"]["lora"]
    assert (lora["r"], lora["alpha"], lora["lora_dropout"]) == (64, 64, 0.1)
    assert lora["training_args"]["eval_strategy"] == "steps"
    assert "evaluation_strategy" not in lora["training_args"]
    assert "double_quant" not in lora
    assert [str(w) for w in warnings if "double_quant" in w.path]
    assert spec["passes"]["builder"] == {"type": "ModelBuilder", "precision": "int4"}
    assert (spec["host"], spec["target"], spec["search_strategy"]) == ("aml", "aml", False)
    aml = spec["systems"]["aml"]
    assert aml["accelerators"] == [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]
    assert aml["aml_docker_config"]["conda_file_path"] == "conda.yaml"
    assert spec["cache_dir"].endswith("phi3-finetuned/cache")


def test_seed_azure_variants_become_azureml_uris() -> None:
    spec, _ = olive_to_spec(load("phi3-seed-aml-legacy.json"))
    assert spec["input_model"]["model_path"] == (
        "azureml://registries/azureml-msr/models/microsoft/Phi-3-mini-4k-instruct/versions/11"
    )
    assert spec["input_model"]["model_file_format"] == "PyTorch.MLflow"
    files = spec["data_configs"][0]["load_dataset_config"]["data_files"]
    assert files.startswith("azureml://subscriptions/") and "/datastores/workspaceblobstore/paths/" in files


def test_current_form_passes_through_unchanged() -> None:
    config = load("phi3-lora-current.json")
    spec, warnings = olive_to_spec(config)
    assert warnings == []
    assert spec["data_configs"] == config["data_configs"] or all(
        d["load_dataset_config"] == c["load_dataset_config"]
        for d, c in zip(spec["data_configs"], config["data_configs"], strict=True)
    )
    assert spec["passes"] == config["passes"]


def test_one_pass_flow_orders_passes_and_several_are_refused() -> None:
    config = load("phi3-seed-legacy.json")
    config["pass_flows"] = [["lora", "merge_adapter_weights", "builder"]]
    spec, _ = olive_to_spec(config)
    assert list(spec["passes"]) == ["lora", "merge_adapter_weights", "builder"]
    config["pass_flows"] = [["lora"], ["builder"]]
    with pytest.raises(ConvertError) as exc:
        olive_to_spec(config)
    assert any(p.path == "pass_flows" for p in exc.value.problems)


BAD_CONFIGS = [
    ("passes.conv.type", lambda c: c["passes"].update(conv={"type": "OnnxConversion"}), "ModelBuilder"),
    ("passes.ex", lambda c: c["passes"].update(ex={"type": "ExtractAdapters"}), "ModelBuilder pass before it"),
    ("passes.lora", lambda c: c["passes"].update(lora=[c["passes"]["lora"], c["passes"]["lora"]]), "search"),
    ("input_model.model_loader", lambda c: c["input_model"]["config"].update(model_loader="load"), "Python"),
    ("passes.lora.r", lambda c: c["passes"]["lora"]["config"].update(lora_r=0), "greater than or equal to 1"),
    (
        "passes.lora.training_args.learning_rat",
        lambda c: c["passes"]["lora"]["config"]["training_args"].update(learning_rat=1e-4),
        "TrainingArguments",
    ),
    (
        "data_configs[0].params_config.frobnicate",
        lambda c: c["data_configs"][0].update(params_config={"frobnicate": 1}),
        "unknown",
    ),
    ("data_configs[0].user_script", lambda c: c["data_configs"][0].update(user_script="u.py"), "Python"),
    ("evaluators.e.metrics", lambda c: c.update(evaluators={"e": {}}), "at least 1"),
    (
        "search_strategy.sampler",
        lambda c: c["engine"].update(search_strategy={"execution_order": "pass-by-pass", "sampler": "tpe"}),
        "sequential or random",
    ),
    ("systems.aml.type", lambda c: c["systems"]["aml"].update(type="Docker"), "runner image"),
    ("input_model.type", lambda c: c["input_model"].update(type="ONNXModel"), "HfModel"),
    ("engine.frobnicate", lambda c: c["engine"].update(frobnicate=1), "unknown"),
    (
        "data_configs[0].pre_process_data_config.dataset_type",
        lambda c: c["data_configs"][0]["pre_process_data_config"]["params"].update(dataset_type="pair"),
        "pair",
    ),
]


@pytest.mark.parametrize(("path", "mutate", "word"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_unsupported_olive_features_are_named_errors(path: str, mutate, word: str) -> None:
    config = load("phi3-seed-legacy.json")
    mutate(config)
    with pytest.raises(ConvertError) as exc:
        olive_to_spec(config)
    hits = [p for p in exc.value.problems if p.path == path]
    assert hits, [str(p) for p in exc.value.problems]
    assert word.lower() in hits[0].message.lower()


def test_cli_convert_then_validate(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "olivekube.cli"]
    out = subprocess.run(
        [
            *cli,
            "convert",
            str(REPO / "examples/olive/phi3-seed-legacy.json"),
            "-n",
            "seed",
            "--namespace",
            "ml",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "double_quant" in out.stderr
    manifest = yaml.safe_load(out.stdout)
    assert manifest["metadata"] == {"name": "seed", "namespace": "ml"}
    path = tmp_path / "seed.yaml"
    path.write_text(out.stdout)
    ok = subprocess.run([*cli, "validate", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    back = subprocess.run(
        [*cli, "convert", "--to", "olive", str(path)], check=True, capture_output=True, text=True
    )
    assert olive_to_spec(json.loads(back.stdout))[0] == manifest["spec"]


def test_cli_convert_reports_problems_and_fails(tmp_path: Path) -> None:
    config = load("phi3-seed-legacy.json")
    config["passes"]["conv"] = {"type": "OnnxConversion"}
    path = tmp_path / "olive.json"
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "convert", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "passes.conv.type" in out.stderr and out.stdout == ""


def test_model_keys_no_pass_uses_are_dropped_with_a_warning() -> None:
    config = load("phi3-seed-legacy.json")
    config["input_model"]["config"].update(model_script="u.py", io_config="io", dummy_inputs_func="dummy")
    spec, warnings = olive_to_spec(config)
    assert set(spec["input_model"]) == {"type", "model_path", "task", "load_kwargs"}
    dropped = {w.path for w in warnings if "no pass of this workflow uses it" in w.message}
    assert dropped == {"input_model.model_script", "input_model.io_config", "input_model.dummy_inputs_func"}


def test_legacy_params_config_becomes_load_and_pre_process_configs() -> None:
    config = load("phi3-lora-current.json")
    data = config["data_configs"][0]
    load_config, pre = data.pop("load_dataset_config"), data.pop("pre_process_data_config", {})
    data["params_config"] = {
        **load_config,
        "model_name": "microsoft/Phi-3-mini-4k-instruct",
        "batch_size": 4,
        "component_kwargs": {"pre_process_data": {**pre, "source_max_len": 128}, "dataloader": {"batch_size": 2}},
    }
    spec, warnings = olive_to_spec(config)
    converted = spec["data_configs"][0]
    assert converted["load_dataset_config"] == load_config
    assert converted["pre_process_data_config"] == {**pre, "max_seq_len": 128}
    assert {w.path.rsplit(".", 1)[-1] for w in warnings} >= {"model_name", "batch_size", "dataloader"}


def test_a_data_config_no_pass_uses_is_dropped_when_it_cannot_run() -> None:
    config = load("phi3-lora-current.json")
    config["data_configs"].append({"name": "dummy", "type": "TransformersPromptDummyDataContainer"})
    spec, warnings = olive_to_spec(config)
    assert "dummy" not in [d["name"] for d in spec["data_configs"]]
    assert any("dropped 'dummy'" in w.message for w in warnings)
    config["passes"]["lora"]["eval_data_config"] = "dummy"  # used by a pass: an error, not a drop
    with pytest.raises(ConvertError) as exc:
        olive_to_spec(config)
    assert [p.path for p in exc.value.problems] == [f"data_configs[{len(config['data_configs']) - 1}].type"]


@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_an_olive_config_that_searches_converts_with_its_space_apart_and_back_inline(
    generation: str, tmp_path: Path
) -> None:
    """Olive writes search parameters in the passes; a typed CRD field cannot hold one, so the manifest
    keeps them in spec.search_space, and `--to olive` puts them back."""
    config = load("phi3-seed-legacy.json")
    rank = {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": [4, 8]}
    config["passes"]["lora"]["config"]["lora_r"] = rank  # Olive's older name for r
    config["passes"]["builder"] = {
        "type": "ModelBuilder",
        "precision": "int4",
        "int4_block_size": "SEARCHABLE_VALUES",
    }
    strategy = (
        {"search_algorithm": "exhaustive"}
        if generation == "legacy"
        else {"execution_order": "joint", "sampler": "random", "sampler_config": {"seed": 3, "max_samples": 2}}
    )
    config["engine"]["search_strategy"] = strategy
    manifest, _ = to_manifest(config, "searched")
    spec = manifest["spec"]
    assert spec["search_space"] == {"lora": {"r": rank}, "builder": {"int4_block_size": "SEARCHABLE_VALUES"}}
    assert "r" not in spec["passes"]["lora"] and spec["search_strategy"] == strategy
    found = parse_workflow(manifest).spec.search()
    # r 4, 8 by block sizes 32, 64, 128, by Olive's default spaces of int4_is_symmetric (2) and
    # int4_algo_config (4), which a search tries where they are not written (include_pass_params)
    assert found is not None and len(found[0]) == 48
    back = spec_to_olive(spec)
    assert (
        back["passes"]["lora"]["r"] == rank and back["passes"]["builder"]["int4_block_size"] == "SEARCHABLE_VALUES"
    )
    assert "search_space" not in back and back["search_strategy"] == strategy
    if generation == "current":  # the CLI says the space before anything runs, on stderr
        path = tmp_path / "olive.json"
        path.write_text(json.dumps(config))
        cli = [sys.executable, "-m", "olivekube.cli"]
        out = subprocess.run([*cli, "convert", str(path)], capture_output=True, text=True, check=True)
        assert "search over 48 points (joint, random; 2 drawn by the random sampler)" in out.stderr
        assert yaml.safe_load(out.stdout)["spec"]["search_space"] == spec["search_space"]
