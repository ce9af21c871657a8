"""What evaluation adds to a workflow's wall time: the tone classifier example (tiny Phi-3, LoRA →
merge → int4) run with and without its evaluator, each from a cold cache, in the same process tree.

Prints both wall times, the seconds evaluation adds and the ratio. Needs the example's tiny model
(examples/tone-classifier/run.sh makes it).

    .venv/bin/python benchmarks/evaluation.py [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tone-classifier"


def run(doc: dict, folder: Path, model: Path) -> float:
    path = folder / "workflow.json"
    doc = json.loads(json.dumps(doc))
    doc["spec"]["cache_dir"] = str(folder / "cache")
    doc["spec"]["output_dir"] = str(folder / "out")
    doc["spec"]["input_model"]["model_path"] = str(model)
    doc["spec"]["data_configs"] = [
        {
            **d,
            "load_dataset_config": {
                **d["load_dataset_config"],
                "data_files": str(EXAMPLE / "dataset-classification.json"),
            },
        }
        for d in doc["spec"]["data_configs"]
    ]
    path.write_text(json.dumps(doc))
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "olivekube.cli", "run", str(path)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-2000:])
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=EXAMPLE / "models" / "tiny-phi3", help="a tiny Phi-3 folder")
    model = parser.parse_args().model
    if not (model / "config.json").is_file():
        raise SystemExit("run examples/tone-classifier/run.sh first (it makes the tiny model)")
    with_eval = yaml.safe_load((EXAMPLE / "workflow.yaml").read_text())
    without = json.loads(json.dumps(with_eval))
    for key in ("evaluators", "evaluator"):
        without["spec"].pop(key)
    for options in without["spec"]["passes"].values():
        options.pop("evaluator", None)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        plain = run(without, Path(a), model)
        evaluated = run(with_eval, Path(b), model)
    print(f"without evaluation: {plain:.1f} s")
    print(f"with evaluation:    {evaluated:.1f} s  (input, merged and int4 models; 60 held-out rows; latency,")
    print("                    throughput and size)")
    print(f"evaluation adds:    {evaluated - plain:.1f} s, ratio {evaluated / plain:.2f}")


if __name__ == "__main__":
    main()
