"""ExtractAdapters: one int4 base, two LoRA adapters (trained on other data) switched at run time with
onnxruntime-genai's Adapters, each generating what its own merged fp32 model generates; an adapter
that does not fit the base is refused before any pass runs, naming what differs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from olivekube.api.workflow import parse_workflow
from olivekube.core.errors import PassError
from olivekube.runner.engine import WorkflowRunner
from tests.helpers.manifests import DATA, LORA, workflow_doc
from tests.helpers.processes import olivekube_cli

PROMPTS = [[1, 20, 30, 40], [1, 57, 99, 140, 33], [1, 7, 8]]
NEW_TOKENS = 6
VOCAB = 512  # the tiny models' vocabulary
OTHER_TEMPLATE = "Tone of '{phrase}' is {tone}."


def workflow(model: Path, passes: dict[str, Any], template: str | None = None) -> dict[str, Any]:
    doc = workflow_doc(str(model), "tone.json", passes)
    if template:
        doc["spec"]["data_configs"][0]["pre_process_data_config"]["text_template"] = template
    return doc


def run(workspace: Path, doc: dict[str, Any]) -> tuple[list[Any], str]:
    return WorkflowRunner(parse_workflow(doc), workspace).run()


def adapter_passes(name: str) -> tuple[dict[str, Any], str | None]:
    """The training pass of adapter a or b (b: another seed, another text template), and its template."""
    if name == "a":
        return copy.deepcopy(LORA), None
    other = copy.deepcopy(LORA)
    other["training_args"]["seed"] = 7
    return other, OTHER_TEMPLATE


@pytest.fixture(scope="module")
def built(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """For fp32 and int4: one base with adapters a and b (ExtractAdapters), and each adapter merged and
    built on its own (MergeAdapterWeights → ModelBuilder), the way one would without adapters."""
    workspace = tmp_path_factory.mktemp("extract")
    shutil.copy(DATA, workspace / "tone.json")
    model = tiny_models["phi3"]
    out: dict[str, Any] = {"model": model, "workspace": workspace}
    for name in ("a", "b"):
        lora, template = adapter_passes(name)
        results, _ = run(workspace, workflow(model, {"lora": lora}, template))
        out[name] = results[0].uri
    for precision in ("fp32", "int4"):
        builder = {"type": "ModelBuilder", "precision": precision}
        passes = {
            "lora": LORA,
            "builder": builder,
            "extract": {"type": "ExtractAdapters", "adapter_name": "a", "adapters": {"b": out["b"]}},
        }
        out[precision] = run(workspace, workflow(model, passes))[1]
        for name in ("a", "b"):
            lora, template = adapter_passes(name)
            merged = {"lora": lora, "merge": {"type": "MergeAdapterWeights"}, "builder": builder}
            out[f"{precision}-merged-{name}"] = run(workspace, workflow(model, merged, template))[1]
    return out


def genai_generator(model_dir: str, max_length: int, adapter: str | None) -> tuple[Any, tuple[Any, ...]]:
    """An onnxruntime-genai greedy generator over the model, with one of its adapters active, and the
    objects the caller keeps alive while it uses the generator (the model and its adapters)."""
    import onnxruntime_genai as og

    model = og.Model(model_dir)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, do_sample=False)
    generator = og.Generator(model, params)
    if adapter is None:
        return generator, (model,)
    adapters = og.Adapters(model)
    adapters.load(str(Path(model_dir) / "adapters" / f"{adapter}.onnx_adapter"), adapter)
    generator.set_active_adapter(adapters, adapter)
    return generator, (model, adapters)


def generate(model_dir: str, prompt: list[int], adapter: str | None) -> list[int]:
    generator, _alive = genai_generator(model_dir, len(prompt) + NEW_TOKENS, adapter)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)]


def merged_greedy(base: Path, adapter: str, prompt: list[int]) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    merged = merged.merge_and_unload()
    with torch.no_grad():
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)
    return without_eos(out[0].tolist(), merged.generation_config.eos_token_id)


def without_eos(tokens: list[int], eos: int | list[int] | None) -> list[int]:
    """Greedy search stops at EOS; onnxruntime-genai and transformers differ on whether it is kept."""
    ends = set(eos if isinstance(eos, list) else [eos])
    return tokens[:-1] if tokens and tokens[-1] in ends else tokens


def test_one_base_two_adapter_files_and_lora_inputs(built: dict[str, Any]) -> None:
    output = Path(built["int4"])
    assert sorted(p.name for p in (output / "adapters").iterdir()) == ["a.onnx_adapter", "b.onnx_adapter"]
    graph = onnx.load(str(output / "model.onnx"), load_external_data=False).graph
    lora_inputs = [i for i in graph.input if ".lora_" in i.name]
    assert lora_inputs and all("MatMul" in i.name for i in lora_inputs)
    assert not [n.name for n in graph.node if n.op_type == "MatMulNBits" and "/lora_" in n.name]
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) >= 4  # the base is int4


def test_adapters_a_b_and_none_generate_three_different_outputs(built: dict[str, Any]) -> None:
    outputs = {name: [generate(built["int4"], p, name) for p in PROMPTS] for name in ("a", "b", None)}
    assert outputs["a"] != outputs["b"] and outputs["b"] != outputs[None] and outputs[None] != outputs["a"]


@pytest.mark.parametrize("adapter", ["a", "b"])
def test_on_an_fp32_base_each_adapter_generates_what_its_merged_fp32_model_does(
    built: dict[str, Any], adapter: str
) -> None:
    """The extraction is exact: the built adapter (a) and the converted one (b) alike."""
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(built["model"]).eos_token_id
    expected = [merged_greedy(built["model"], built[adapter], p) for p in PROMPTS]
    assert [without_eos(generate(built["fp32"], p, adapter), eos) for p in PROMPTS] == expected


def last_logits(model_dir: str, prompt: list[int], adapter: str | None) -> np.ndarray:
    generator, _alive = genai_generator(model_dir, len(prompt) + 1, adapter)
    generator.append_tokens(prompt)
    return np.asarray(generator.get_output("logits"), dtype=np.float32).reshape(-1, VOCAB)[-1]


def merged_logits(base: Path, adapter: str, prompt: list[int]) -> np.ndarray:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    with torch.no_grad():
        return merged.merge_and_unload()(torch.tensor([prompt])).logits[0, -1].numpy()


@pytest.mark.parametrize("adapter", ["a", "b"])
def test_on_the_int4_base_each_adapter_brings_the_model_to_its_merged_fp32_model(
    built: dict[str, Any], adapter: str
) -> None:
    """int4 rounds the base, so greedy tokens of this tiny random model may differ from fp32 where two
    choices are close; the adapter must still take the int4 base most of the way to its merged fp32
    model: the next-token logits' distance at most a quarter of the base's without the adapter."""
    for prompt in PROMPTS:
        target = merged_logits(built["model"], built[adapter], prompt)
        with_adapter = np.linalg.norm(last_logits(built["int4"], prompt, adapter) - target)
        without = np.linalg.norm(last_logits(built["int4"], prompt, None) - target)
        assert with_adapter < 0.25 * without, (prompt, float(with_adapter), float(without))


def test_generate_cli_switches_adapters(built: dict[str, Any]) -> None:
    texts = {}
    for adapter in ("a", "b", None):
        args = ["generate", built["int4"], "-p", "hello", "--max-new-tokens", "6"]
        out = olivekube_cli(*args, *(["--adapter", adapter] if adapter else []))
        assert out.returncode == 0, out.stderr
        texts[adapter] = out.stdout
    assert len(set(texts.values())) == 3, texts
    missing = olivekube_cli("generate", built["int4"], "--adapter", "c")
    assert missing.returncode == 1 and "a, b" in missing.stderr


@pytest.mark.parametrize(
    ("other", "words"),
    [
        ({"target_modules": ["o_proj"]}, "target_modules"),
        ({"arch": "llama"}, "which the input model does not have"),
    ],
)
def test_an_adapter_that_does_not_fit_is_refused_before_any_pass(
    built: dict[str, Any], tiny_models: dict[str, Path], other: dict[str, Any], words: str
) -> None:
    workspace = built["workspace"]
    lora = {**copy.deepcopy(LORA), **{k: v for k, v in other.items() if k != "arch"}}
    lora["training_args"]["max_steps"] = 2
    results, _ = run(workspace, workflow(tiny_models[other.get("arch", "phi3")], {"lora": lora}))
    passes = {
        "lora": LORA,
        "builder": {"type": "ModelBuilder", "precision": "int4"},
        "extract": {"type": "ExtractAdapters", "adapters": {"odd": results[0].uri}},
    }
    fresh = workspace / "fresh-cache"
    doc = workflow(built["model"], passes)
    doc["spec"]["cache_dir"] = str(fresh)
    with pytest.raises(PassError) as exc:
        run(workspace, doc)
    assert exc.value.field == "spec.passes.extract.adapters.odd"
    assert words in exc.value.message
    assert not (fresh / "passes").exists(), "a pass ran before the adapter was refused"
