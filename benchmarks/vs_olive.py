"""olivekube run vs olive run on the same workflow, measured in one run.

A small Llama-config model (hidden 256, 4 layers, trained BPE tokenizer), LoRA for 200 steps on
sequences of 128 tokens, merge, int4 ONNX. Olive runs at its best on the CPU: CI=true (no
telemetry heartbeat), torch_dtype float32 and gradient_checkpointing false. Olive 0.13 needs
onnxruntime-genai 0.14 for its ModelBuilder pass; it lives in a side virtualenv
(~/.cache/olivekube/bench/olive-0.13.0, created on first use). Olive's exit code is not trusted:
its output model must exist.

    .venv/bin/python benchmarks/vs_olive.py [--steps 200] [--repeat 3] [--keep DIR]

With --cpu-quota CPUS (root, cgroup v1 or v2), each run is also repeated inside a cgroup whose CPU
quota is CPUS, below the machine's cores, as a Kubernetes CPU limit sets it: it prints each tool's
constrained/quiet wall-time ratio (2 cores → 1 CPU: 2 is the floor) and olivekube/Olive under the
quota. olivekube sizes its thread pools to the quota; a tool that sizes them to the cores it sees
runs more threads than it has CPU for.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "tone-classifier" / "dataset-classification.json"
OLIVE_VENV = Path.home() / ".cache" / "olivekube" / "bench" / "olive-0.13.0"
OLIVE_PACKAGES = [
    "olive-ai[finetune]==0.13.0",
    "onnxruntime==1.31.1",
    "onnxruntime-genai==0.14.1",
    "requests",
    "datasets==5.2.0",
    "torch==2.15.0",
    "transformers==5.23.0",
    "peft==0.21.2",
    "accelerate==1.15.0",
]
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def ensure_olive() -> Path:
    """Olive's side virtualenv, made with uv (its download cache is the one tools/setup.sh fills, so
    torch and the other shared wheels are not fetched again)."""
    python = OLIVE_VENV / "bin" / "python"
    if not (OLIVE_VENV / "bin" / "olive").exists():
        uv = shutil.which("uv") or str(REPO / ".venv" / "bin" / "uv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(OLIVE_VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *OLIVE_PACKAGES], check=True)
    return OLIVE_VENV / "bin" / "olive"


def config(model: str, steps: int, output: str, cache: str, seed: int) -> dict[str, Any]:
    """One Olive current-form config, run by both tools."""
    data = [
        {
            "name": name,
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(DATA), "split": split},
            "pre_process_data_config": {"text_template": TEMPLATE, "max_seq_len": 128},
        }
        for name, split in (("train", "train[:90%]"), ("eval", "train[90%:]"))
    ]
    return {
        "input_model": {"type": "HfModel", "model_path": model},
        "systems": {
            "local_system": {
                "type": "LocalSystem",
                "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
            }
        },
        "data_configs": data,
        "passes": {
            "lora": {
                "type": "LoRA",
                "r": 16,
                "alpha": 32,
                "lora_dropout": 0.05,
                "torch_dtype": "float32",
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "train_data_config": "train",
                "eval_data_config": "eval",
                "training_args": {
                    "seed": seed,
                    "max_steps": steps,
                    "per_device_train_batch_size": 4,
                    "per_device_eval_batch_size": 4,
                    "learning_rate": 0.001,
                    "warmup_ratio": 0.0,  # Olive 0.13 drops warmup_ratio under transformers 5: match it
                    "gradient_checkpointing": False,
                    "logging_steps": 20,
                    "eval_steps": steps,
                    "eval_strategy": "steps",
                },
            },
            "merge": {"type": "MergeAdapterWeights"},
            "builder": {"type": "ModelBuilder", "precision": "int4"},
        },
        "host": "local_system",
        "target": "local_system",
        "cache_dir": cache,
        "output_dir": output,
        "log_severity_level": 1,
        "evaluate_input_model": False,
    }


class CpuQuota:
    """A cgroup with a CPU quota (v2 cpu.max, else v1 cfs quota) that commands can be started in."""

    def __init__(self, cpus: float) -> None:
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        self.v2 = v2.is_file() and "cpu" in v2.read_text().split()
        root = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/cpu")
        self.path = root / f"olivekube-bench-{os.getpid()}"
        self.path.mkdir()
        period = 100_000
        if self.v2:
            (self.path / "cpu.max").write_text(f"{int(cpus * period)} {period}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(period))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))

    def enter(self) -> None:
        """Move the calling process (a child before it execs) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        self.path.rmdir()


def timed(
    cmd: list[str], env: dict[str, str], log: Path, quota: CpuQuota | None = None
) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of a command, by GNU time (in `quota`'s cgroup)."""
    stats = log.with_suffix(".time")
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(stats), *cmd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=quota.enter if quota else None,
        )
    wall = time.monotonic() - started
    return wall, int(stats.read_text().split()[-1]) / 1024, proc.returncode


def olive_pass_times(log: str) -> dict[str, float]:
    """Olive logs 'Running pass X' and 'Run pass X ... done, time: Ns' style lines at INFO."""
    times = {}
    for name, seconds in re.findall(r"Pass (\w+):\w+ finished in ([0-9.]+) seconds", log):
        times[name] = float(seconds)
    return times


def olive_losses(log: str) -> tuple[float | None, float | None]:
    train = re.findall(r"'train_loss': '?([0-9.]+)", log)
    evals = re.findall(r"'eval_loss': '?([0-9.]+)", log)
    return (float(train[-1]) if train else None, float(evals[-1]) if evals else None)


@dataclass
class Run:
    wall: float
    rss: float
    passes: dict[str, float]
    train_loss: float | None
    eval_loss: float | None


def run_ours(
    work: Path, model: Path, steps: int, env: dict[str, str], i: int, quota: CpuQuota | None = None
) -> Run:
    cfg = work / "olivekube.json"
    cfg.write_text(json.dumps(config(str(model), steps, str(work / "ours-out"), str(work / "ours-cache"), seed=i)))
    summary = work / "ours-summary.json"
    for old in ("ours-cache", "ours-out"):
        shutil.rmtree(work / old, ignore_errors=True)
    log = work / f"ours-{i}.log"
    wall, rss, code = timed(
        [str(REPO / ".venv/bin/olivekube"), "run", str(cfg), "--summary-json", str(summary)], env, log, quota
    )
    if code != 0 or not list((work / "ours-out" / "versions").glob("*/model.onnx")):
        raise SystemExit(f"olivekube failed; see {log}")
    passes = json.loads(summary.read_text())["passes"]
    metrics = next(p for p in passes if p["name"] == "lora")["metrics"]
    return Run(
        wall, rss, {p["name"]: p["seconds"] for p in passes}, metrics.get("train_loss"), metrics.get("eval_loss")
    )


def run_olive(
    olive: Path, work: Path, model: Path, steps: int, env: dict[str, str], i: int, quota: CpuQuota | None = None
) -> Run:
    cfg = work / "olive.json"
    cfg.write_text(
        json.dumps(config(str(model), steps, str(work / "olive-out"), str(work / "olive-cache"), seed=i))
    )
    for old in ("olive-cache", "olive-out"):
        shutil.rmtree(work / old, ignore_errors=True)
    log = work / f"olive-{i}.log"
    wall, rss, code = timed([str(olive), "run", "--config", str(cfg)], env, log, quota)
    if not list((work / "olive-out").rglob("model.onnx")):
        raise SystemExit(f"olive produced no ONNX model (exit code {code}); see {log}")
    text = log.read_text(errors="replace")
    train, evaluated = olive_losses(text)
    return Run(wall, rss, olive_pass_times(text), train, evaluated)


def _row(label: str, ours: float | None, theirs: float | None, digits: int = 1) -> str:
    nan = float("nan")
    ratio = f"{ours / theirs:8.2f}" if ours is not None and theirs else f"{'':>8}"
    return f"{label:24}{ours if ours is not None else nan:12.{digits}f}{theirs or nan:12.{digits}f}{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, interleaved (default 3)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--cpu-quota", type=float, help="also run each tool under this CPU quota (CPUs)")
    parser.add_argument("--search", action="store_true", help="compare a search instead (vs_olive_search.py)")
    args = parser.parse_args()
    olive = ensure_olive()
    work = args.keep or Path(tempfile.mkdtemp(prefix="olivekube-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from tools.tiny_models import make_model, texts_from_json

    model = work / "llama-256x4"
    if not (model / "config.json").exists():
        make_model(model, "llama", texts_from_json(DATA), hidden=256, layers=4, heads=8)
    env = {**os.environ, "CI": "true", "TOKENIZERS_PARALLELISM": "false"}
    if args.search:
        import vs_olive_search

        vs_olive_search.main(args, olive, work, model, env)
        print(f"work folder: {work}")
        return

    # Interleaved, and alternating which goes first, so that a slower stretch of a shared machine
    # falls on both tools alike; run i trains with seed i in both tools (one seed's eval loss is a
    # draw, not a property of the tool); each figure below is the median of the runs.
    ours: list[Run] = []
    theirs: list[Run] = []
    for i in range(args.repeat):
        for tool in ("ours", "olive") if i % 2 == 0 else ("olive", "ours"):
            if tool == "ours":
                ours.append(run_ours(work, model, args.steps, env, i))
            else:
                theirs.append(run_olive(olive, work, model, args.steps, env, i))

    def med(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    print(
        f"workflow: Llama hidden 256 x 4 layers, LoRA r16, {args.steps} steps, seq 128 → merge → int4 ONNX; "
        f"median of {args.repeat} interleaved runs each"
    )
    print(f"{'':24}{'olivekube':>12}{'olive 0.13':>12}{'ratio':>8}")
    print(_row("wall time (s)", med([r.wall for r in ours]), med([r.wall for r in theirs])))
    print(_row("peak RSS (MB)", med([r.rss for r in ours]), med([r.rss for r in theirs]), 0))
    for name in ours[0].passes:
        print(
            _row(
                f"pass {name} (s)", med([r.passes[name] for r in ours]), med([r.passes.get(name) for r in theirs])
            )
        )
    print(_row("final train loss", med([r.train_loss for r in ours]), med([r.train_loss for r in theirs]), 4))
    print(_row("final eval loss", med([r.eval_loss for r in ours]), med([r.eval_loss for r in theirs]), 4))
    ratios = [a.wall / b.wall for a, b in zip(ours, theirs, strict=True)]
    print(f"wall-time ratio of each pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(
        "wall (s) ours / olive per run: "
        + ", ".join(f"{a.wall:.1f}/{b.wall:.1f}" for a, b in zip(ours, theirs, strict=True))
    )
    nan = float("nan")
    print(
        "eval loss ours / olive, seed by seed: "
        + ", ".join(
            f"{a.eval_loss or nan:.4f}/{b.eval_loss or nan:.4f}" for a, b in zip(ours, theirs, strict=True)
        )
    )
    if args.cpu_quota:
        constrained(args, olive, work, model, env, ours, theirs)
    print(f"work folder: {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def constrained(
    args: argparse.Namespace,
    olive: Path,
    work: Path,
    model: Path,
    env: dict[str, str],
    ours_quiet: list[Run],
    olive_quiet: list[Run],
) -> None:
    """The same runs under a CPU quota, interleaved as the quiet ones; their ratios."""
    quota = CpuQuota(args.cpu_quota)
    ours: list[Run] = []
    theirs: list[Run] = []
    try:
        for i in range(args.repeat):
            for tool in ("ours", "olive") if i % 2 == 0 else ("olive", "ours"):
                if tool == "ours":
                    ours.append(run_ours(work, model, args.steps, env, i, quota))
                else:
                    theirs.append(run_olive(olive, work, model, args.steps, env, i, quota))
    finally:
        quota.remove()
    ours_wall = statistics.median(r.wall for r in ours)
    olive_wall = statistics.median(r.wall for r in theirs)
    ours_ratio = ours_wall / statistics.median(r.wall for r in ours_quiet)
    olive_ratio = olive_wall / statistics.median(r.wall for r in olive_quiet)
    print(f"under a CPU quota of {args.cpu_quota:g} of {os.cpu_count()} cores (median of {args.repeat}):")
    print(f"{'':24}{'olivekube':>12}{'olive 0.13':>12}{'ratio':>8}")
    print(_row("wall time (s)", ours_wall, olive_wall))
    print(_row("quota / quiet wall", ours_ratio, olive_ratio, 2))


if __name__ == "__main__":
    main()
