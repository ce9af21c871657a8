"""What a training pass hands to the Trainer: the collator's labels and the FLOPs estimate."""

from __future__ import annotations

from pathlib import Path

import torch

from olivekube.runner.training import IGNORE_INDEX, CausalLMCollator, PassTrainer

EOS = 2


def test_labels_keep_eos_when_the_tokenizer_pads_with_eos() -> None:
    collate = CausalLMCollator(pad_token_id=EOS)
    batch = collate([{"input_ids": [1, 7, 8, EOS]}, {"input_ids": [1, 9, EOS, 1, 5, 6, EOS]}])
    assert batch["input_ids"].tolist() == [[1, 7, 8, EOS, EOS, EOS, EOS], [1, 9, EOS, 1, 5, 6, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert batch["labels"].tolist() == [
        [1, 7, 8, EOS, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
        [1, 9, EOS, 1, 5, 6, EOS],
    ]
    assert batch["labels"].dtype == torch.long


def test_full_length_sequences_are_stacked_unchanged() -> None:
    rows = [{"input_ids": list(range(4, 20))}, {"input_ids": list(range(20, 36))}]
    batch = CausalLMCollator(pad_token_id=0)(rows)
    assert torch.equal(batch["input_ids"], batch["labels"])
    assert batch["attention_mask"].all()


def test_a_tokenizer_without_pad_or_eos_still_pads() -> None:
    batch = CausalLMCollator(pad_token_id=None)([{"input_ids": [5, 6]}, {"input_ids": [7]}])
    assert batch["labels"].tolist() == [[5, 6], [7, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_floating_point_ops_match_the_trainer_s_own(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"], dtype=torch.float32)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    inputs = {"input_ids": torch.ones(3, 17, dtype=torch.long)}
    ours = PassTrainer(model=model, args=args).floating_point_ops(inputs)
    assert ours == Trainer(model=model, args=args).floating_point_ops(inputs) > 0
    assert PassTrainer(model=model, args=args).floating_point_ops({"other": inputs["input_ids"]}) == 0
