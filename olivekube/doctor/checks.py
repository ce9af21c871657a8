"""`olivekube doctor`: can this node run olivekube's passes? Each check is timed and reported on its own
(a failing one does not stop the others); the command exits 1 when any check failed or could not run.

  environment    python, torch, CUDA, the GPUs and the driver, bitsandbytes, onnxruntime(-genai) and
                 their execution providers
  cuda libraries onnxruntime's and onnxruntime-genai's CUDA providers and bitsandbytes' CUDA library
                 for torch's CUDA version: every shared library they link resolves (`ldd`), but the
                 driver's `libcuda.so.1`, which the node provides (needs no GPU; skipped on a CPU build)
  process group  a one-rank NCCL group (gloo on `--device cpu`) and an all-reduce of 64 MB
  qlora          `olivekube run`: QLoRA on a tiny Llama-config model made here, merge, int4 build for
                 the device's execution provider
  fp16 build     the same workflow built in fp16 (fp32 on the CPU); the trained passes come from cache
  generate       greedy generation with onnxruntime-genai from each build: tokens/s
  data-parallel  LoRA on every GPU under torchrun (NCCL), then sharded with FSDP (two or more GPUs)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Device = Literal["cuda", "cpu"]
State = Literal["ok", "failed", "skipped", "not checked"]
PROMPT = "### Text: I am so happy today\n### The tone is:\n"
DRIVER_LIBRARY = "libcuda.so.1"  # the node's driver provides it (the NVIDIA container toolkit mounts it)


class NotChecked(Exception):
    """A check that could not run here (no GPU): reported as such, and the command exits 1."""


class Skipped(Exception):
    """A check that does not apply to this image (a CPU build has no CUDA libraries): not a failure."""


@dataclass
class Check:
    name: str
    state: State
    seconds: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "skipped")

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "state": self.state,
            "seconds": self.seconds,
            "detail": self.detail,
        }


@dataclass
class Doctor:
    """The checks, run in order; `say` gets a line as each one ends (stderr in the command)."""

    device: Device
    steps: int = 30
    hidden: int = 256
    layers: int = 4
    new_tokens: int = 32
    say: Callable[[str], None] = print
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, body: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            state: State = "ok"
            detail = body()
        except NotChecked as exc:
            state, detail = "not checked", str(exc)
        except Skipped as exc:
            state, detail = "skipped", str(exc)
        except Exception as exc:  # every failure becomes a reported row; the next check still runs
            state, detail = "failed", f"{type(exc).__name__}: {exc}".strip()[-1500:]
            traceback.print_exc(file=sys.stderr)
        self.checks.append(Check(name, state, time.perf_counter() - started, detail))
        self.say(f"[{state}] {name} ({self.checks[-1].seconds:.1f} s): {detail}")

    def run(self) -> list[Check]:
        self.check("environment", lambda: environment(self.device))
        gpu = self.device == "cpu" or self.checks[-1].ok
        self.check("cuda libraries", cuda_libraries)
        needs_gpu = "not checked: no GPU is visible (see environment)"
        self.check("process group", lambda: process_group(self.device) if gpu else _not_checked(needs_gpu))
        work = Path(tempfile.mkdtemp(prefix="olivekube-doctor-"))
        try:
            self._workflows(work, gpu, needs_gpu)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.checks

    def _workflows(self, work: Path, gpu: bool, needs_gpu: str) -> None:
        model = work / "model"
        low = "fp16" if self.device == "cuda" else "fp32"
        builds: dict[str, Path] = {}
        for name, precision in (("qlora, merge, int4 build", "int4"), (f"{low} build", low)):

            def build(precision: str = precision) -> str:
                if not gpu:
                    raise NotChecked(needs_gpu)
                if not (model / "config.json").is_file():
                    tiny_llama(model, self.hidden, self.layers)
                doc = workflow(model, work, self.device, precision, self.steps)
                summary = olivekube_run(work / f"{precision}.json", doc)
                builds[precision] = built_model(summary)
                return describe(summary)

            self.check(name, build)
        for precision in ("int4", low):
            self.check(
                f"generate {precision}",
                lambda p=precision: (
                    generate(builds[p], self.new_tokens)  # type: ignore[misc]
                    if p in builds
                    else _not_checked(f"not checked: the {p} build did not run")
                ),
            )
        gpus = _gpu_count() if self.device == "cuda" and gpu else 0
        if gpus >= 2:
            for name, fsdp in ((f"data-parallel LoRA on {gpus} GPUs", False), (f"FSDP LoRA on {gpus} GPUs", True)):
                self.check(name, lambda fsdp=fsdp: data_parallel(model, work, self.steps, gpus, fsdp))  # type: ignore[misc]


def _not_checked(why: str) -> str:
    raise NotChecked(why)


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def driver_version() -> str:
    """The NVIDIA kernel driver's version, as the node reports it; "unknown" where it cannot be read."""
    proc = Path("/proc/driver/nvidia/version")
    if proc.is_file():
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9.]+)", proc.read_text())
        if found:
            return found.group(1)
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.splitlines()[0].strip()
    return "unknown"


def _gpu_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def environment(device: Device) -> str:
    import torch

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
    if device == "cuda":
        if not torch.cuda.is_available():
            devices = sorted(p.name for p in Path("/dev").glob("nvidia*"))
            raise RuntimeError(
                f"no GPU is visible: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device; "
                f"/dev/nvidia*: {', '.join(devices) or 'none'}; "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; "
                f"driver {driver_version()}. A pod gets a GPU from the device plugin "
                "(resources.limits nvidia.com/gpu); `--device cpu` checks what a CPU node runs"
            )
        props = torch.cuda.get_device_properties(0)
        parts += [
            f"{torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB)",
            f"driver {driver_version()}",
        ]
    packages = ["transformers", "peft", "bitsandbytes", "onnxruntime", "onnxruntime-gpu"]
    packages += ["onnxruntime-genai", "onnxruntime-genai-cuda"]
    parts += [f"{p} {version(p)}" for p in packages if version(p)]
    import onnxruntime as ort

    parts.append(f"onnxruntime providers {', '.join(ort.get_available_providers())}")
    return ", ".join(parts)


def _package_folder(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{module} is not installed")
    return Path(spec.origin).parent


def cuda_library_files() -> list[Path]:
    """The shared libraries of onnxruntime's and onnxruntime-genai's CUDA providers, and bitsandbytes'
    CUDA library for the CUDA version torch was built with."""
    import torch

    ort, genai = _package_folder("onnxruntime") / "capi", _package_folder("onnxruntime_genai")
    files = [ort / "libonnxruntime_providers_cuda.so", genai / "libonnxruntime-genai-cuda.so"]
    if torch.version.cuda:
        cuda = torch.version.cuda.replace(".", "")
        files.append(_package_folder("bitsandbytes") / f"libbitsandbytes_cuda{cuda}.so")
    return files


def unresolved(library: Path) -> list[str]:
    """The libraries `ldd` cannot find for `library`, but the driver's."""
    out = subprocess.run(["ldd", str(library)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ldd {library}: {out.stderr.strip() or out.stdout.strip()}")
    missing = re.findall(r"^\s*(\S+) => not found", out.stdout, flags=re.M)
    return [m for m in missing if m != DRIVER_LIBRARY]


def cuda_libraries() -> str:
    if not (version("onnxruntime-gpu") or version("onnxruntime-genai-cuda")):
        raise Skipped("skipped: this image has onnxruntime's CPU builds (the runner-cpu image)")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime lists no CUDA provider: {ort.get_available_providers()}")
    problems, found = [], []
    for library in cuda_library_files():
        if not library.is_file():
            problems.append(f"{library.name} is missing")
            continue
        missing = unresolved(library)
        if missing:
            problems.append(f"{library.name} needs {', '.join(missing)}")
        found.append(library.name)
    if problems:
        raise RuntimeError(
            "; ".join(problems) + f" (LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '(unset)')})"
        )
    return f"CUDAExecutionProvider listed; {', '.join(found)} resolve every library but {DRIVER_LIBRARY}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_group(device: Device) -> str:
    """One rank, the backend our data-parallel runs use on this device, and an all-reduce through it."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        tensor = torch.ones(16 * 2**20, device=device)  # 64 MB of float32
        dist.all_reduce(tensor)
        if device == "cuda":
            torch.cuda.synchronize()
        started, rounds = time.perf_counter(), 10
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


TONES = {
    "joy": ["so happy", "delighted", "thrilled", "glad", "cheerful", "overjoyed"],
    "sadness": ["so sad", "heartbroken", "gloomy", "down", "miserable", "lonely"],
    "anger": ["furious", "so angry", "annoyed", "fed up", "outraged", "irritated"],
    "fear": ["scared", "afraid", "nervous", "terrified", "worried", "anxious"],
}
WHEN = ["today", "this morning", "right now", "after the call", "about the news", "again"]


def tone_rows() -> list[dict[str, str]]:
    """A small labelled text set (phrase → tone), made here so the check needs no dataset hub."""
    return [
        {"phrase": f"I am {w} {when}", "tone": t} for t, words in TONES.items() for w in words for when in WHEN
    ]


def tiny_llama(out: Path, hidden: int, layers: int) -> Path:
    from olivekube.doctor.tiny_model import make_model

    texts = [f"{r['phrase']} {r['tone']}" for r in tone_rows()]
    return make_model(out, "llama", texts, hidden, layers, heads=max(4, hidden // 64))


def workflow(model: Path, work: Path, device: Device, precision: str, steps: int) -> dict[str, Any]:
    data = work / "tone.json"
    if not data.is_file():
        data.write_text(json.dumps(tone_rows()))
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    accelerator = {"device": "gpu" if device == "cuda" else "cpu", "execution_providers": [provider]}
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": f"doctor-{precision}"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": str(model)},
            "systems": {"local": {"type": "LocalSystem", "accelerators": [accelerator]}},
            "host": "local",
            "target": "local",
            "data_configs": [
                {
                    "name": "tone",
                    "load_dataset_config": {"data_name": "json", "data_files": str(data), "split": "train"},
                    "pre_process_data_config": {
                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                        "max_seq_len": 64,
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
            "cache_dir": str(work / "cache"),
            "output_dir": str(work / f"out-{precision}"),
        },
    }


def olivekube_run(path: Path, doc: dict[str, Any], *extra: str) -> dict[str, Any]:
    """`olivekube run` of `doc` (written to `path`) in a process of its own; its summary."""
    path.write_text(json.dumps(doc))
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
    return Path(current_model(output) or output)


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
    session = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["session_options"]
    providers = [next(iter(p)) for p in session.get("provider_options") or []] or ["cpu"]
    return (
        f"{new_tokens} tokens, first after {(first - started) * 1000:.1f} ms, then "
        f"{(new_tokens - 1) / rest:.0f} tokens/s on {', '.join(providers)}"
    )


def data_parallel(model: Path, work: Path, steps: int, gpus: int, fsdp: bool) -> str:
    """LoRA on every GPU (one process each, NCCL), optionally sharded with FSDP."""
    label = "fsdp" if fsdp else "ddp"
    doc = workflow(model, work, "cuda", "int4", steps)
    doc["spec"]["cache_dir"], doc["spec"]["output_dir"] = str(work / f"cache-{label}"), str(work / f"out-{label}")
    lora = {**doc["spec"]["passes"]["qlora"], "type": "LoRA"}
    if fsdp:
        lora["training_args"] = {**lora["training_args"], "fsdp": "full_shard auto_wrap"}
    doc["spec"]["passes"] = {"lora": lora}
    return describe(olivekube_run(work / f"{label}.json", doc, "--nproc-per-node", str(gpus)))
