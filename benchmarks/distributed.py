"""Data-parallel scaling and the cost of a checkpoint, on this machine, measured in one run.

The same LoRA pass (a Llama-config model, hidden 256 x 4 layers, sequences of 128 tokens, a global
batch of 8 rows) three ways, interleaved: one process (8 rows a step), two gloo processes under
torchrun (4 rows each, `--nproc-per-node 2`), and one process that checkpoints every 10 steps to
the cache. Prints the training steps/s of each, the speed-up and efficiency of two processes over
one (the peer), and the seconds and bytes one checkpoint costs. Training time is the pass's own
train_seconds (model loading and process start are not in it).

    .venv/bin/python benchmarks/distributed.py [--steps 100] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "tone-classifier" / "dataset-classification.json"
SAVE_STEPS = 10


def workflow(model: Path, steps: int, per_device: int, cache: Path, checkpoints: bool) -> dict[str, Any]:
    training_args: dict[str, Any] = {
        "seed": 0,
        "max_steps": steps,
        "per_device_train_batch_size": per_device,
        "learning_rate": 0.0005,
        "logging_steps": 10,
    }
    if checkpoints:
        training_args.update(save_strategy="steps", save_steps=SAVE_STEPS)
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "scaling"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": str(model)},
            "data_configs": [
                {
                    "name": "tone",
                    "load_dataset_config": {"data_name": "json", "data_files": str(DATA), "split": "train"},
                    "pre_process_data_config": {
                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                        "max_seq_len": 128,
                    },
                }
            ],
            "passes": {
                "lora": {
                    "type": "LoRA",
                    "r": 16,
                    "alpha": 32,
                    "train_data_config": "tone",
                    "training_args": training_args,
                }
            },
            "cache_dir": str(cache),
        },
    }


def train_seconds(work: Path, model: Path, steps: int, procs: int, checkpoints: bool, label: str) -> float:
    """The LoRA pass's training seconds in a fresh cache."""
    cache = work / f"cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    path = work / f"{label}.json"
    path.write_text(json.dumps(workflow(model, steps, 8 // procs, cache, checkpoints)))
    summary = work / f"{label}-summary.json"
    command = [str(REPO / ".venv/bin/olivekube"), "run", str(path), "--summary-json", str(summary)]
    out = subprocess.run([*command, "--nproc-per-node", str(procs)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    (lora,) = json.loads(summary.read_text())["passes"]
    return float(lora["metrics"]["train_seconds"])


def checkpoint_bytes(work: Path, model: Path) -> int:
    """The size of one checkpoint of this pass (adapter, optimizer, scheduler, RNG and trainer state):
    a run stopped by SIGTERM after its first checkpoint keeps its checkpoints (a finished one clears them)."""
    cache = work / "cache-size"
    shutil.rmtree(cache, ignore_errors=True)
    path = work / "size.json"
    path.write_text(json.dumps(workflow(model, 100_000, 8, cache, True)))
    run = subprocess.Popen([str(REPO / ".venv/bin/olivekube"), "run", str(path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(cache.glob("checkpoints/**/steps.json")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
    folders = list(cache.glob("checkpoints/**/step-*"))
    if not folders:
        raise SystemExit(f"no checkpoint under {cache} within 600 s")
    folder = max(folders)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.steps < SAVE_STEPS:
        parser.error(f"--steps must be at least {SAVE_STEPS}: the checkpointed run saves every {SAVE_STEPS} steps")
    work = Path(tempfile.mkdtemp(prefix="olivekube-scaling-"))
    sys.path.insert(0, str(REPO))
    from tools.tiny_models import make_model, texts_from_json

    model = make_model(work / "llama-256x4", "llama", texts_from_json(DATA), hidden=256, layers=4, heads=8)
    runs: dict[str, list[float]] = {"one": [], "two": [], "checkpointed": []}
    shapes = {"one": (1, False), "two": (2, False), "checkpointed": (1, True)}
    for i in range(args.repeat):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for label in order:
            procs, checkpoints = shapes[label]
            runs[label].append(train_seconds(work, model, args.steps, procs, checkpoints, label))
    one, two, checkpointed = (statistics.median(runs[k]) for k in ("one", "two", "checkpointed"))
    speedup = one / two
    saves = args.steps // SAVE_STEPS
    print(
        f"LoRA r16 on Llama 256 x 4, seq 128, global batch 8, {args.steps} steps, {os.cpu_count()} cores; "
        f"median of {args.repeat} interleaved runs"
    )
    print(f"1 process : {args.steps / one:6.2f} steps/s ({one:.1f} s)")
    print(f"2 processes: {args.steps / two:6.2f} steps/s ({two:.1f} s)")
    print(f"speed-up 2/1: {speedup:.2f}x, efficiency {speedup / 2:.0%}")
    print(
        f"checkpoint every {SAVE_STEPS} steps: {checkpointed:.1f} s against {one:.1f} s: "
        f"{(checkpointed - one) / saves * 1000:.0f} ms per checkpoint, ratio {checkpointed / one:.3f}"
    )
    print(f"one checkpoint: {checkpoint_bytes(work, model) / 1e6:.1f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
