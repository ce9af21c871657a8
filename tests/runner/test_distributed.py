"""Data-parallel training on the CPU: two gloo processes under torchrun train like one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from olivekube.runner.distributed import Topology, launcher_command, worker_env
from olivekube.storage.manifest import MANIFEST_NAME
from tests.helpers.manifests import LORA, workflow_doc, write
from tests.helpers.processes import olivekube_cli, wait_for

STEPS = 24
# Tolerance of the per-step losses of 2 x 4 rows against 1 x 8 rows. The same rows make each global
# batch (accelerate shards the batches of one seeded order), the loss is averaged over the tokens of
# both shards (average_tokens_across_devices) and the gradients over the ranks: what differs is only
# the order of float32 sums (each rank's half, then gloo's all-reduce), which Adam's steps carry on.
# Measured here: 9.5e-7 at most over 24 steps of a loss near 6; 1e-4 leaves room for other CPUs'
# vector widths, while a wrong shard (other rows, or a batch counted twice) moves a step's loss ~0.1.
LOSS_TOLERANCE = 1e-4


def lora(per_device: int) -> dict[str, Any]:
    options = json.loads(json.dumps(LORA))
    options["lora_dropout"] = 0.0  # each rank draws its own dropout masks; without it the runs compare
    options["training_args"].update(
        max_steps=STEPS, per_device_train_batch_size=per_device, logging_steps=1, eval_steps=STEPS
    )
    return options


def losses(cache: Path) -> list[float]:
    (log,) = cache.glob("passes/default/*/olivekube-training-log.json")
    return [entry["loss"] for entry in json.loads(log.read_text()) if "loss" in entry]


def run(path: Path, *args: str) -> None:
    out = olivekube_cli("run", str(path), *args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_two_processes_train_like_one_and_the_model_builds_and_generates(
    tiny_models: dict[str, Path], workspace: Path
) -> None:
    model = str(tiny_models["qwen2"])
    one = write(workspace / "one.json", workflow_doc(model, "tone.json", {"lora": lora(8)}, cache_dir="cache-one"))
    passes = {
        "lora": lora(4),
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4"},
    }
    two = write(
        workspace / "two.json",
        workflow_doc(model, "tone.json", passes, cache_dir="cache-two", output_dir="out-two"),
    )
    run(one)
    run(two, "--nproc-per-node", "2")

    single, parallel = losses(workspace / "cache-one"), losses(workspace / "cache-two")
    assert len(single) == len(parallel) == STEPS
    worst = max(abs(a - b) for a, b in zip(single, parallel, strict=True))
    print(f"largest per-step loss difference, 2 x 4 rows against 1 x 8: {worst:.2e}")
    assert worst < LOSS_TOLERANCE, (worst, single, parallel)
    assert parallel[-1] < parallel[0] - 0.5  # it learned

    manifests = [json.loads(m.read_text()) for m in (workspace / "cache-two").glob(f"passes/*/*/{MANIFEST_NAME}")]
    (trained,) = [m["metadata"] for m in manifests if m["metadata"]["pass_name"] == "lora"]
    assert trained["metrics"]["world_size"] == 2
    generated = olivekube_cli("generate", str(workspace / "out-two"), "--prompt", "### Text: I am happy")
    assert generated.returncode == 0, generated.stdout[-2000:] + generated.stderr[-2000:]
    assert generated.stdout.strip()


def test_a_failing_rank_fails_the_pass_with_its_message(tiny_models: dict[str, Path], workspace: Path) -> None:
    options = lora(4)
    options["target_modules"] = ["q_proj"]
    doc = workflow_doc(str(tiny_models["qwen2"]), "missing.json", {"lora": options}, cache_dir="cache")
    out = olivekube_cli("run", str(write(workspace / "w.json", doc)), "--nproc-per-node", "2")
    assert out.returncode == 1
    assert "missing.json" in out.stdout + out.stderr


def test_loftq_on_two_processes_writes_one_base_and_merges(tiny_models: dict[str, Path], workspace: Path) -> None:
    """Both ranks initialise LoftQ on one pod (one folder): each loads its own copy, rank 0's is published."""
    options = lora(4)
    options["training_args"].update(max_steps=4)
    passes = {"lora": {**options, "type": "LoftQ"}, "merge": {"type": "MergeAdapterWeights"}}
    doc = workflow_doc(str(tiny_models["llama"]), "tone.json", passes, cache_dir="cache")
    run(write(workspace / "w.json", doc), "--nproc-per-node", "2")
    manifests = [
        json.loads(m.read_text()) for m in (workspace / "cache").glob(f"passes/default/*/{MANIFEST_NAME}")
    ]
    (adapter,) = [m for m in manifests if any(name.startswith("loftq_base/") for name in m["files"])]
    assert adapter["metadata"]["metrics"]["world_size"] == 2
    assert len(manifests) == 2  # the adapter (with its base) and the merged model


def test_fsdp_on_the_cpu_is_refused_by_every_rank_naming_the_field(
    tiny_models: dict[str, Path], workspace: Path
) -> None:
    options = lora(4)
    options["training_args"].update(fsdp="full_shard auto_wrap")
    doc = workflow_doc(str(tiny_models["qwen2"]), "tone.json", {"lora": options}, cache_dir="cache")
    out = olivekube_cli("run", str(write(workspace / "w.json", doc)), "--nproc-per-node", "2")
    assert out.returncode == 1
    printed = " ".join((out.stdout + out.stderr).split())
    assert "spec.passes.lora.training_args.fsdp" in printed, printed[-3000:]
    assert "accelerate has no CPU FSDP" in printed


def test_sigterm_reaches_every_rank_and_they_stop_at_one_checkpoint_and_resume_exactly(
    tiny_models: dict[str, Path], workspace: Path
) -> None:
    options = lora(4)
    options["lora_dropout"] = 0.1  # each rank's dropout masks come from its own RNG state
    options["training_args"].update(max_steps=STEPS, save_strategy="steps", save_steps=2)
    whole = workflow_doc(str(tiny_models["qwen2"]), "tone.json", {"lora": options}, cache_dir="cache-whole")
    run(write(workspace / "whole.json", whole), "--nproc-per-node", "2")
    path = write(
        workspace / "w.json",
        workflow_doc(str(tiny_models["qwen2"]), "tone.json", {"lora": options}, cache_dir="cache"),
    )
    command = [sys.executable, "-m", "olivekube.cli", "run", str(path), "--nproc-per-node", "2"]
    wide = {**os.environ, "COLUMNS": "400"}  # the error line unwrapped
    run_ = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=wide)
    cache = workspace / "cache"
    wait_for(lambda: list(cache.glob("checkpoints/default/*/*/steps.json")), timeout=300, step=0.05)
    run_.send_signal(signal.SIGTERM)
    printed, _ = run_.communicate(timeout=120)
    assert run_.returncode == 1, printed[-3000:]
    (steps,) = cache.glob("checkpoints/default/*/*/steps.json")
    newest = max(json.loads(steps.read_text())["steps"])
    assert f"stopped by SIGTERM at step {newest}" in " ".join(printed.split()), printed[-3000:]
    # the checkpoint holds both ranks' RNG states
    (folder,) = cache.glob(f"checkpoints/default/*/*/step-{newest:09d}")
    assert {p.name for p in folder.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert newest < STEPS, "the run ended before the signal: nothing was interrupted"

    run(path, "--nproc-per-node", "2")  # both ranks resume from it, each from its own copy
    (manifest,) = cache.glob(f"passes/default/*/{MANIFEST_NAME}")
    assert json.loads(manifest.read_text())["metadata"]["metrics"]["resumed_from_step"] == newest
    assert losses(cache) == losses(workspace / "cache-whole")


def test_the_launcher_gives_each_worker_its_share_of_the_cpus() -> None:
    env = worker_env(Topology(nproc_per_node=2))
    assert int(env["OMP_NUM_THREADS"]) >= 1
    single = launcher_command(Topology(nproc_per_node=2), Path("task.json"))
    assert "--standalone" in single and "--nproc-per-node=2" in single
    nodes = launcher_command(Topology(2, 3, 1, "w-0.svc"), Path("task.json"))
    assert {"--nnodes=3", "--node-rank=1", "--master-addr=w-0.svc"} <= set(nodes)


def _agree(rank: int, port: int, steps: list[int | None], errors: Any) -> None:
    import torch.distributed as dist

    from olivekube.core.errors import PassError
    from olivekube.runner.passes.lora import agree_on_resume_step

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        agree_on_resume_step("spec.passes.lora", steps[rank])
        errors.put((rank, None))
    except PassError as exc:
        errors.put((rank, exc.message))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("steps", "refused"), [([6, 6], False), ([6, 4], True), ([None, 6], True)])
def test_ranks_that_restored_different_checkpoints_fail_instead_of_hanging(
    steps: list[int | None], refused: bool
) -> None:
    import multiprocessing

    from tools.controlplane.harness import free_port

    port = free_port()
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    ranks = [context.Process(target=_agree, args=(rank, port, steps, errors)) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=60)
    found = dict(errors.get(timeout=5) for _ in ranks)
    if not refused:
        assert found == {0: None, 1: None}
    else:  # every rank fails, with one message naming what each found
        assert found[0] == found[1] and "different checkpoints" in str(found[0]), found
