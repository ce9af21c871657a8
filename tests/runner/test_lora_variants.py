"""DoRA and LoftQ (Olive's names, peft's implementations): each trains, merges and builds int4 on a
tiny model, and its adapter is not LoRA's for the same seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from olivekube.api.validation import validate_document
from tests.helpers.manifests import LORA, workflow_doc
from tests.runner.test_passes import _generate, run

TO_INT4 = {"merge": {"type": "MergeAdapterWeights"}, "builder": {"type": "ModelBuilder", "precision": "int4"}}


def adapter_weights(uri: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(uri) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def lora_adapter(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, torch.Tensor]:
    import shutil

    from tests.helpers.manifests import DATA

    workspace = tmp_path_factory.mktemp("lora")
    shutil.copy(DATA, workspace / "tone.json")
    _, results, _ = run(workspace, tiny_models["llama"], {"train": LORA})
    return adapter_weights(results[0].uri)


def _differs_from_lora(weights: dict[str, torch.Tensor], lora: dict[str, torch.Tensor]) -> None:
    shared = [k for k in lora if k in weights]
    assert shared, "no LoRA A/B weights in common"
    assert any(not torch.allclose(weights[k], lora[k]) for k in shared)


def test_dora_trains_merges_and_builds_int4(tiny_models, workspace: Path, lora_adapter) -> None:  # type: ignore[no-untyped-def]
    _, results, output = run(workspace, tiny_models["llama"], {"train": {**LORA, "type": "DoRA"}, **TO_INT4})
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    metrics = results[0].metrics
    assert metrics["final_loss"] < metrics["first_loss"] - 0.2, metrics
    weights = adapter_weights(results[0].uri)
    assert any("lora_magnitude_vector" in k for k in weights), sorted(weights)[:5]
    _differs_from_lora(weights, lora_adapter)
    assert len(_generate(output, [1, 20, 30, 40], 6)) == 10


def test_loftq_trains_on_its_own_base_merges_into_it_and_builds_int4(
    tiny_models: dict[str, Path], workspace: Path, lora_adapter: dict[str, torch.Tensor]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, results, output = run(workspace, tiny_models["llama"], {"train": {**LORA, "type": "LoftQ"}, **TO_INT4})
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    metrics = results[0].metrics
    assert metrics["quantized_linear_layers"] > 0
    assert metrics["final_loss"] < metrics["first_loss"] - 0.2, metrics
    adapter = Path(results[0].uri)
    _differs_from_lora(adapter_weights(str(adapter)), lora_adapter)
    new_base = adapter / "loftq_base"
    original = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    loftq = AutoModelForCausalLM.from_pretrained(new_base, dtype=torch.float32)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(original.state_dict()[name], loftq.state_dict()[name]), "LoftQ left the base as it was"
    # The merge went into LoftQ's base, not the original one: base + adapter == merged model.
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(loftq, str(adapter))(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(results[1].uri, dtype=torch.float32)(ids).logits
    assert torch.allclose(expected, merged, atol=1e-4)
    assert len(_generate(output, [1, 20, 30, 40], 6)) == 10


def test_a_dora_adapter_is_merged_before_the_builder() -> None:
    passes: dict[str, Any] = {"train": {**LORA, "type": "DoRA"}, "builder": {"type": "ModelBuilder"}}
    problems = validate_document(workflow_doc("m", "tone.json", passes))
    assert [p.path for p in problems] == ["spec.passes.builder"]
    assert "MergeAdapterWeights" in problems[0].message


@pytest.mark.parametrize("iterations", [1, 4])
def test_loftq_start_is_closer_to_the_weight_than_nf4_alone(iterations: int) -> None:
    from olivekube.runner.loftq import loftq_decompose, nf4_round_trip

    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    quantized, a, b = loftq_decompose(weight, rank=8, iterations=iterations)
    assert a.shape == (8, 64) and b.shape == (96, 8)
    plain = (weight - nf4_round_trip(weight)).norm()
    loftq = (weight - (quantized + b @ a)).norm()
    assert loftq < 0.9 * plain, (float(loftq), float(plain))
    assert torch.equal(nf4_round_trip(quantized), quantized), "the base LoftQ chose is not nf4-representable"
