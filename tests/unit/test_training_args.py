"""training_args: the common TrainingArguments keys typed, every other one passed through as given,
and a key transformers does not have refused at its own path before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from olivekube.api.passes.lora import TrainingArgs
from olivekube.api.validation import validate_document
from tests.helpers.manifests import workflow_doc


def manifest(training_args: dict[str, Any]) -> dict[str, Any]:
    lora = {"type": "LoRA", "train_data_config": "tone", "training_args": training_args}
    return workflow_doc("microsoft/Phi-3-mini-4k-instruct", "tone.json", {"lora": lora})


def test_the_name_list_is_the_installed_transformers() -> None:
    """olivekube/api has no transformers (the operator image): its list is generated, and not stale."""
    from tools.training_argument_names import TARGET, render

    assert TARGET.read_text() == render(), "stale: run `python tools/training_argument_names.py`"


def test_untyped_training_arguments_pass_through() -> None:
    args = {"max_steps": 5, "load_best_model_at_end": True, "metric_for_best_model": "eval_loss"}
    assert validate_document(manifest(args)) == []
    options = TrainingArgs.model_validate(args).trainer_options()
    assert options == args


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("learning_rat", "not an option of transformers.TrainingArguments"),
        ("output_dir", "the runner keeps checkpoints"),
        ("deepspeed", "DeepSpeed is not in the runner image"),
    ],
)
def test_a_key_the_runner_cannot_pass_is_refused_at_its_path(key: str, words: str) -> None:
    for args, path in (
        ({key: 1}, f"spec.passes.lora.training_args.{key}"),
        ({"extra_args": {key: 1}}, f"spec.passes.lora.training_args.extra_args.{key}"),
    ):
        problems = validate_document(manifest(args))
        assert [p.path for p in problems] == [path], problems
        assert words in problems[0].message
