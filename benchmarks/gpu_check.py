"""GPU check: the parts of olivekube that only a CUDA machine runs, timed. Never run in CI.

Checks, each timed and reported on its own (a failing one does not stop the others):
  environment   torch, CUDA, the GPU, bitsandbytes, onnxruntime-genai and its providers
  process group a one-rank NCCL process group (gloo on --device cpu) and an all-reduce of 64 MB
  qlora         `olivekube run`: QLoRA (bitsandbytes nf4 base) on a Llama-config model, then merge,
                then the int4 model builder for the CUDA execution provider
  fp16 build    the same workflow with an fp16 build (the trained passes come from the cache)
  generate      greedy generation with onnxruntime-genai from each build: tokens/s
  data-parallel LoRA on every GPU under torchrun (NCCL), then the same sharded with FSDP, when the
                machine has two or more GPUs

On a machine lent by the device tool (see /work/.library/device/README.md):

    python benchmarks/gpu_check.py --json $OUT/gpu_check.json

`--device cpu` runs the same checks on the CPU (gloo, CPU builds): it is how the script itself is
tested where there is no GPU. Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "tone-classifier" / "dataset-classification.json"
PROMPT = "### Text: I am so happy today\n### The tone is:\n"


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str


def timed(name: str, checks: list[Check], body: Callable[[], str]) -> None:
    """Run one check; record its time and what it printed, or its error."""
    started = time.perf_counter()
    try:
        detail, ok = body(), True
    except Exception as exc:  # every failure becomes a reported row; the next check still runs
        detail, ok = f"{type(exc).__name__}: {exc}".strip()[-1500:], False
        traceback.print_exc()
    checks.append(Check(name, ok, time.perf_counter() - started, detail))
    print(f"[{'ok' if ok else 'FAILED'}] {name} ({checks[-1].seconds:.1f} s): {detail}", flush=True)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: str) -> str:
    import torch

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
        props = torch.cuda.get_device_properties(0)
        parts += [
            f"{torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB)",
            f"CUDA {torch.version.cuda}",
        ]
    for package in ("transformers", "peft", "bitsandbytes", "onnxruntime-genai", "onnxruntime-genai-cuda"):
        parts.append(f"{package} {version(package)}")
    import onnxruntime_genai as og

    parts.append(f"onnxruntime-genai CUDA available: {og.is_cuda_available()}")
    return ", ".join(parts)


def process_group(device: str) -> str:
    """One rank, the backend our data-parallel runs use on this device, and an all-reduce through it."""
    import torch
    import torch.distributed as dist

    from tools.controlplane.harness import free_port

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        tensor = torch.ones(16 * 2**20, device=device)  # 64 MB of float32
        dist.all_reduce(tensor)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        rounds = 10
        for _ in range(rounds):
            dist.all_reduce(tensor)
        if device == "cuda":
            torch.cuda.synchronize()
        per_round = (time.perf_counter() - started) / rounds
        if float(tensor[0]) != 1.0:
            raise RuntimeError(f"an all-reduce over one rank changed the tensor: {float(tensor[0])}")
        return f"{backend}: all-reduce of 64 MB in {per_round * 1000:.2f} ms"
    finally:
        dist.destroy_process_group()


def workflow(model: Path, cache: Path, output: Path, device: str, precision: str, steps: int) -> dict[str, Any]:
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": f"gpu-check-{precision}"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": str(model)},
            "systems": {
                "local": {
                    "type": "LocalSystem",
                    "accelerators": [
                        {"device": "gpu" if device == "cuda" else "cpu", "execution_providers": [provider]}
                    ],
                }
            },
            "host": "local",
            "target": "local",
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
                "qlora": {
                    "type": "QLoRA",
                    "r": 16,
                    "alpha": 32,
                    "train_data_config": "tone",
                    "eval_dataset_size": 0.1,
                    "training_args": {
                        "seed": 0,
                        "max_steps": steps,
                        "per_device_train_batch_size": 8,
                        "learning_rate": 0.0005,
                        "logging_steps": 10,
                    },
                },
                "merge": {"type": "MergeAdapterWeights"},
                "builder": {"type": "ModelBuilder", "precision": precision},
            },
            "cache_dir": str(cache),
            "output_dir": str(output),
        },
    }


def olivekube_run(path: Path, *extra: str) -> dict[str, Any]:
    """`olivekube run PATH`; the run's summary (passes with their seconds and metrics)."""
    summary = path.with_suffix(".summary.json")
    command = [sys.executable, "-m", "olivekube.cli", "run", str(path), "--summary-json", str(summary), *extra]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if out.returncode != 0:
        raise RuntimeError(f"olivekube run failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return dict(json.loads(summary.read_text()))


def describe(summary: dict[str, Any]) -> str:
    rows = []
    for p in summary["passes"]:
        metrics = p.get("metrics") or {}
        row = f"{p['name']} {p['status']} {p['seconds']:.1f} s"
        if "train_seconds" in metrics and "steps" in metrics:
            speed = metrics["steps"] / metrics["train_seconds"]
            row += f" ({speed:.1f} steps/s, eval_loss {metrics.get('eval_loss')})"
        rows.append(row)
    return "; ".join(rows)


def built_model(summary: dict[str, Any]) -> Path:
    from olivekube.storage.outputs import current_model

    output = summary["output"]
    current = current_model(output)
    return Path(current or output)


def generate(folder: Path, new_tokens: int) -> str:
    """Greedy generation of exactly `new_tokens` tokens; tokens/s after the first (the prompt's) one."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    tokens = tokenizer.encode(PROMPT)
    params = og.GeneratorParams(model)
    length = len(tokens) + new_tokens
    params.set_search_options(max_length=length, min_length=length, do_sample=False)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(tokens)
    generator.generate_next_token()
    first = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
    rest = time.perf_counter() - first
    text = tokenizer.decode(generator.get_sequence(0)[len(tokens) :])
    provider = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["session_options"]
    return (
        f"{new_tokens} tokens, first after {(first - started) * 1000:.1f} ms, then "
        f"{(new_tokens - 1) / rest:.0f} tokens/s; providers {provider.get('provider_options')}; text {text[:40]!r}"
    )


def data_parallel(model: Path, work: Path, steps: int, gpus: int, fsdp: bool | None) -> str:
    """LoRA on every GPU (one process each, NCCL), optionally sharded with FSDP."""
    label = "fsdp" if fsdp else "ddp"
    doc = workflow(model, work / f"cache-{label}", work / f"out-{label}", "cuda", "int4", steps)
    lora = {**doc["spec"]["passes"]["qlora"], "type": "LoRA"}
    if fsdp:
        lora["training_args"] = {**lora["training_args"], "fsdp": "full_shard auto_wrap"}
    doc["spec"]["passes"] = {"lora": lora}
    path = work / f"{label}.json"
    path.write_text(json.dumps(doc))
    return describe(olivekube_run(path, "--nproc-per-node", str(gpus)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the QLoRA pass")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the checks here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="olivekube-gpu-check-"))
    checks: list[Check] = []
    timed("environment", checks, lambda: environment(args.device))
    timed("process group", checks, lambda: process_group(args.device))

    from tools.tiny_models import make_model, texts_from_json

    heads = max(4, args.hidden // 64)
    model = make_model(work / "model", "llama", texts_from_json(DATA), args.hidden, args.layers, heads)
    cache = work / "cache"
    builds: dict[str, Path] = {}
    low_precision = "fp16" if args.device == "cuda" else "fp32"
    for name, precision in (("qlora, merge, int4 build", "int4"), (f"{low_precision} build", low_precision)):
        path = work / f"{precision}.json"
        doc = workflow(model, cache, work / f"out-{precision}", args.device, precision, args.steps)
        path.write_text(json.dumps(doc))

        def run(path: Path = path, precision: str = precision) -> str:
            summary = olivekube_run(path)
            builds[precision] = built_model(summary)
            return describe(summary)

        timed(name, checks, run)
    for precision, folder in builds.items():
        timed(f"generate {precision}", checks, lambda folder=folder: generate(folder, args.new_tokens))  # type: ignore[misc]
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if gpus >= 2:
            for name, fsdp in ((f"data-parallel LoRA on {gpus} GPUs", None), (f"FSDP LoRA on {gpus} GPUs", True)):
                timed(name, checks, lambda fsdp=fsdp: data_parallel(model, work, args.steps, gpus, fsdp))  # type: ignore[misc]
    print()
    print(f"{'check':32} {'ok':6} {'seconds':>8}")
    for c in checks:
        print(f"{c.name:32} {'ok' if c.ok else 'FAILED':6} {c.seconds:8.1f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in checks], indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
