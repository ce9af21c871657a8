"""Bad input fails before heavy work, naming the field; nothing is published."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from olivekube.api.workflow import parse_workflow
from olivekube.core.errors import PassError
from olivekube.runner.engine import WorkflowRunner
from tests.helpers.manifests import LORA, workflow_doc, write
from tests.helpers.processes import olivekube_run

BUILD_INT4 = {"type": "ModelBuilder", "precision": "int4"}


def fails(workspace: Path, doc: dict[str, Any]) -> PassError:
    runner = WorkflowRunner(parse_workflow(doc), workspace)
    started = time.monotonic()
    with pytest.raises(PassError) as exc:
        runner.run()
    assert time.monotonic() - started < 20, "the check came after heavy work"
    assert not (workspace / "outputs").exists(), "a failed run published an output"
    cache = workspace / ".olivekube-cache" / "passes"
    assert not cache.exists() or not any(cache.iterdir()), "a failed run left a pass artifact"
    return exc.value


def test_missing_data_file(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    doc = workflow_doc(str(tiny_models["phi3"]), "missing.json", {"lora": LORA})
    err = fails(workspace, doc)
    assert err.field == "spec.data_configs.0.load_dataset_config.data_files"
    assert "missing.json" in err.message


def test_template_column_absent(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    doc = workflow_doc(str(tiny_models["phi3"]), "tone.json", {"lora": LORA})
    doc["spec"]["data_configs"][0]["pre_process_data_config"]["text_template"] = "{phrase} -> {label}"
    err = fails(workspace, doc)
    assert err.field == "spec.data_configs.0.pre_process_data_config.text_template"
    assert "{label}" in err.message and "phrase" in err.message and "tone" in err.message


def test_target_module_absent(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    lora = {**LORA, "target_modules": ["q_proj", "v_proj"]}  # Llama names; Phi-3 fuses them into qkv_proj
    err = fails(workspace, workflow_doc(str(tiny_models["phi3"]), "tone.json", {"lora": lora}))
    assert err.field == "spec.passes.lora.target_modules"
    assert "q_proj" in err.message and "qkv_proj" in err.message


def test_qlora_where_bitsandbytes_cannot_run(tiny_models, workspace: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bitsandbytes.functional as bnbf

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no 4-bit kernel for this device")

    monkeypatch.setattr(bnbf, "quantize_4bit", broken)
    loaded: list[str] = []
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: loaded.append("model") or original(*a, **k),
    )
    qlora = {**LORA, "type": "QLoRA"}
    err = fails(workspace, workflow_doc(str(tiny_models["llama"]), "tone.json", {"qlora": qlora}))
    assert err.field == "spec.passes.qlora.type"
    assert "bitsandbytes" in err.message and "LoRA" in err.message
    assert loaded == [], "the model was loaded before the check"


def test_precision_the_execution_provider_cannot_build(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "fp16"},
    }
    systems = {
        "cpu": {
            "type": "LocalSystem",
            "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
        }
    }
    doc = workflow_doc(str(tiny_models["phi3"]), "tone.json", passes, systems=systems, target="cpu")
    err = fails(workspace, doc)
    assert err.field == "spec.passes.builder.precision"
    assert "CPUExecutionProvider" in err.message and "int4" in err.message


def test_missing_model(workspace: Path) -> None:
    doc = workflow_doc("models/nowhere/at-all", "tone.json", {"lora": LORA})
    err = fails(workspace, doc)
    assert err.field == "spec.input_model.model_path"


def test_failed_pass_is_not_cached(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """Olive caches a failed pass as pruned, so its retries skip it; a failure here is never cached."""
    doc = workflow_doc(str(tiny_models["phi3"]), "tone.json", {"lora": copy.deepcopy(LORA)})
    doc["spec"]["passes"]["lora"]["training_args"] = {"bf16": True, "max_steps": 5}  # refused on the CPU
    err = fails(workspace, doc)
    assert err.field == "spec.passes.lora.training_args" and "bf16" in err.message
    doc["spec"]["passes"]["lora"]["training_args"] = {"max_steps": 5}
    results, _ = WorkflowRunner(parse_workflow(doc), workspace).run()
    assert results[0].status == "ran"


def test_cli_run_names_the_failing_pass(tiny_models, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    doc = workflow_doc(
        str(tiny_models["phi3"]), "missing.json", {"lora": LORA, "merge": {"type": "MergeAdapterWeights"}}
    )
    path = write(workspace / "wf.json", doc)
    out = olivekube_run(path, timeout=300)
    assert out.returncode == 1
    assert "pass 'lora' failed" in out.stdout
    assert "spec.data_configs.0.load_dataset_config.data_files" in out.stdout


def test_cli_run_refuses_an_invalid_manifest(workspace: Path) -> None:
    doc = workflow_doc("m", "tone.json", {"lora": {**LORA, "r": 0}})
    path = write(workspace / "wf.json", doc)
    out = olivekube_run(path)
    assert out.returncode == 1
    assert "spec.passes.lora.r" in out.stderr
    assert json.loads(path.read_text())  # the file is untouched


def test_fsdp_is_refused_where_it_would_not_shard(tiny_models, workspace: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """transformers quietly trains unsharded when `fsdp` is set on the CPU: refused instead, naming it."""
    from olivekube.core.errors import PassError
    from olivekube.runner.passes.lora import check_fsdp

    doc = workflow_doc(str(tiny_models["llama"]), "tone.json", {"lora": copy.deepcopy(LORA)})
    doc["spec"]["passes"]["lora"]["training_args"] = {"max_steps": 2, "fsdp": "full_shard auto_wrap"}
    err = fails(workspace, doc)
    assert err.field == "spec.passes.lora.training_args.fsdp" and "GPU" in err.message

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(PassError, match=r"2 or more processes.*numProcPerNode"):
        check_fsdp("spec.passes.lora.training_args.fsdp", "cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_fsdp("spec.passes.lora.training_args.fsdp", "cuda")  # two GPU processes: allowed
