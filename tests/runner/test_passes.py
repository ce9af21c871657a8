"""Real training, merging, export and generation on tiny models, on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from olivekube.api.workflow import parse_workflow
from olivekube.runner.engine import WorkflowRunner
from tests.helpers.manifests import ARCHS, LORA, workflow_doc


def run(workspace: Path, model: Path, passes: dict[str, Any], **spec: Any):  # type: ignore[no-untyped-def]
    doc = workflow_doc(str(model), "tone.json", passes, **spec)
    runner = WorkflowRunner(parse_workflow(doc), workspace)
    return runner, *runner.run()


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_loss_goes_down(arch: str, tiny_models: dict[str, Path], workspace: Path) -> None:
    _, results, _ = run(workspace, tiny_models[arch], {"lora": LORA})
    metrics = results[0].metrics
    assert results[0].status == "ran"
    assert metrics["final_loss"] < metrics["first_loss"] - 0.2, metrics
    assert metrics["eval_loss"] > 0 and metrics["steps"] == 30


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_merged_model_equals_base_plus_adapter(tiny_models: dict[str, Path], workspace: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    passes = {"lora": LORA, "merge": {"type": "MergeAdapterWeights"}}
    _, results, output = run(workspace, tiny_models["phi3"], passes)
    adapter_dir = results[0].uri
    assert adapter_dir is not None
    ids = torch.tensor([[1, 20, 30, 40, 50, 60, 70]])
    base = AutoModelForCausalLM.from_pretrained(tiny_models["phi3"], dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, adapter_dir)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in with_adapter.named_parameters())
    merged = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(tiny_models["phi3"], dtype=torch.float32)
    assert torch.allclose(_logits(with_adapter, ids), _logits(merged, ids), atol=1e-4)
    assert not torch.allclose(_logits(plain, ids), _logits(merged, ids), atol=1e-4), "the adapter changed nothing"


def _generate(model_dir: str, prompt_ids: list[int], steps: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(model_dir)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    while not generator.is_done():
        generator.generate_next_token()
    return list(generator.get_sequence(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_int4_onnx_has_matmulnbits_and_generates(arch: str, tiny_models: dict[str, Path], workspace: Path) -> None:
    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4"},
    }
    _, results, output = run(workspace, tiny_models[arch], passes)
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    graph = onnx.load(str(Path(output) / "model.onnx"), load_external_data=False).graph
    assert sum(node.op_type == "MatMulNBits" for node in graph.node) >= 4
    tokens = _generate(output, [1, 20, 30, 40], 8)
    assert len(tokens) == 12


def test_fp32_onnx_greedy_equals_pytorch(tiny_models: dict[str, Path], workspace: Path) -> None:
    from transformers import AutoModelForCausalLM

    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "fp32"},
    }
    _, results, output = run(workspace, tiny_models["phi3"], passes)
    merged = AutoModelForCausalLM.from_pretrained(results[1].uri, dtype=torch.float32)
    prompt = [1, 57, 99, 140, 33]
    with torch.no_grad():
        expected = merged.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    got = _generate(output, prompt, 12)
    assert got == expected[0].tolist()


def test_qlora_merge_int4(tiny_models: dict[str, Path], workspace: Path) -> None:
    qlora = {**LORA, "type": "QLoRA", "quant_type": "nf4", "double_quant": True}
    passes = {
        "qlora": qlora,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4"},
    }
    _, results, output = run(workspace, tiny_models["llama"], passes)
    assert results[0].metrics["quantized_linear_layers"] > 0
    assert results[0].metrics["final_loss"] < results[0].metrics["first_loss"]
    merge_meta = results[1].metadata
    assert merge_meta["adapter_trained_on"] == "4-bit base" and "full-precision" in merge_meta["note"]
    config = (Path(results[1].uri) / "config.json").read_text()
    assert "quantization_config" not in config
    assert len(_generate(output, [1, 5, 9], 5)) == 8


def test_embeddings_of_tokenizer_and_model_agree(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    for arch, path in tiny_models.items():
        assert len(AutoTokenizer.from_pretrained(path)) == AutoConfig.from_pretrained(path).vocab_size, arch


def test_a_changed_adapter_under_the_same_adapter_path_builds_again(
    tiny_models: dict[str, Path], workspace: Path
) -> None:
    import shutil

    def train(seed: int) -> Path:
        lora = {**LORA, "training_args": {**LORA["training_args"], "seed": seed, "max_steps": 3}}
        _, results, _ = run(workspace, tiny_models["phi3"], {"lora": lora})
        return Path(results[0].uri)

    adapter = workspace / "my-adapter"  # the user's folder, given by path
    shutil.copytree(train(0), adapter)
    build = {"builder": {"type": "ModelBuilder", "precision": "fp32", "adapter_path": str(adapter)}}
    _, first, _ = run(workspace, tiny_models["phi3"], build)
    _, again, _ = run(workspace, tiny_models["phi3"], build)
    shutil.rmtree(adapter)
    shutil.copytree(train(1), adapter)  # other weights, same path
    _, changed, _ = run(workspace, tiny_models["phi3"], build)
    assert [r.status for r in (first[0], again[0], changed[0])] == ["ran", "cached", "ran"]
    assert changed[0].digest != first[0].digest
