"""Tiny real models (Phi-3, Llama, Qwen2) with a locally trained tokenizer, and the tone data."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def olivekube_run(path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`olivekube run PATH` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "run", str(path)], capture_output=True, text=True, timeout=timeout
    )


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


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copy(DATA, tmp_path / "tone.json")
    return tmp_path


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def peft_model(path: Path, **lora: Any) -> Any:
    """A peft LoRA model of a tiny model (r 4 on q_proj and v_proj unless given), B drawn at random."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    options = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"], **lora}
    model = get_peft_model(base, LoraConfig(**options))
    with torch.no_grad():  # B starts at zero in peft: make the adapter do something
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    return model
