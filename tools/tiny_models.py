"""Tiny random causal LMs for the tests and the example, from the command line (`python -m tools.tiny_models`).

The models themselves are made by `olivekube.doctor.tiny_model` (which `olivekube doctor` uses too);
this adds reading texts from a JSON file of rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from olivekube.doctor.tiny_model import SPECIAL_TOKENS, make_model, model_config, pretrain, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "make_model", "model_config", "pretrain", "texts_from_json", "train_tokenizer"]


def texts_from_json(path: Path) -> list[str]:
    rows = json.loads(path.read_text())
    return [" ".join(str(v) for v in row.values()) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description="Create a tiny random causal LM with a local BPE tokenizer.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="phi3", choices=["phi3", "llama", "qwen2"])
    parser.add_argument("--texts", type=Path, required=True, help="JSON list of rows to train the tokenizer on")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument(
        "--pretrain-column", help="Pretrain briefly on this column of the rows (e.g. phrase, without labels)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=0)
    args = parser.parse_args()
    rows = json.loads(args.texts.read_text())
    pretrain_texts = [str(r[args.pretrain_column]) for r in rows] if args.pretrain_column else None
    make_model(
        args.out,
        args.arch,
        texts_from_json(args.texts),
        args.hidden,
        args.layers,
        args.heads,
        pretrain_texts=pretrain_texts,
        pretrain_steps=args.pretrain_steps,
    )
    print(args.out)


if __name__ == "__main__":
    main()
