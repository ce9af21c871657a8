"""Training checkpoints: kept in the cache, pruned, skipped when broken, and resumed from after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from olivekube.core.errors import StorageError
from olivekube.runner.checkpoints import CheckpointStore
from olivekube.storage import store_for
from olivekube.storage.manifest import MANIFEST_NAME
from tests.helpers.manifests import LORA, workflow_doc, write
from tests.helpers.processes import olivekube_run, wait_for


def checkpoint_folder(tmp_path: Path, step: int) -> Path:
    folder = tmp_path / f"trainer-checkpoint-{step}"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "optimizer.pt").write_bytes(bytes([step]) * 1000)
    return folder


def overwrite(root: str, rel: str, data: bytes) -> None:
    if root.startswith("s3://"):
        bucket, prefix = root.removeprefix("s3://").split("/", 1)
        store_for(root).client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)  # type: ignore[attr-defined]
    else:
        (Path(root) / rel).write_bytes(data)


def remove(root: str, rel: str) -> None:
    if root.startswith("s3://"):
        bucket, prefix = root.removeprefix("s3://").split("/", 1)
        store_for(root).client.delete_object(Bucket=bucket, Key=f"{prefix}/{rel}")  # type: ignore[attr-defined]
    else:
        (Path(root) / rel).unlink()


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "cache" / "checkpoints" / "ns" / "key")
    s3 = request.getfixturevalue("s3")
    return f"s3://{s3.bucket}/{tmp_path.name}/checkpoints/ns/key"


def test_the_newest_are_kept_and_a_corrupt_or_partial_one_is_skipped(root: str, tmp_path: Path) -> None:
    store = CheckpointStore(root, keep=2)
    for step in (5, 10, 15):
        store.save(checkpoint_folder(tmp_path, step), step)
    assert store.steps() == [15, 10]
    assert store_for(root).read_manifest(f"{root}/step-000000005") is None  # pruned
    restored = store.restore(tmp_path / "a")
    assert restored is not None and restored.step == 15
    assert json.loads((restored.folder / "trainer_state.json").read_text()) == {"global_step": 15}

    # step 15's optimizer state is overwritten with other bytes: its digest no longer matches
    overwrite(root, "step-000000015/optimizer.pt", b"garbage")
    restored = store.restore(tmp_path / "b")
    assert restored is not None and restored.step == 10
    assert not (tmp_path / "b" / "step-15").exists()  # the corrupt one's files are not left behind

    # a checkpoint listed but cut off before its manifest (a publish killed mid-way) is skipped too
    remove(root, f"step-000000010/{MANIFEST_NAME}")
    assert store.restore(tmp_path / "c") is None

    store.clear()
    assert store.steps() == []


def test_two_writers_saving_at_once_both_stay_listed(
    root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each writer is held at its first list write until the other has read the list: with a plain
    read-modify-write one step would be lost; with the conditional write the loser reads again."""
    import threading

    store_class = type(store_for(root))
    barrier, held = threading.Barrier(2, timeout=30), threading.local()

    def hold(original):  # type: ignore[no-untyped-def]
        def write(self, uri: str, *args):  # type: ignore[no-untyped-def]
            if uri.endswith("steps.json") and not getattr(held, "done", False):
                held.done = True
                barrier.wait()
            return original(self, uri, *args)

        return write

    for name in ("write_text", "write_text_if"):
        monkeypatch.setattr(store_class, name, hold(getattr(store_class, name)))
    folders = {step: checkpoint_folder(tmp_path, step) for step in (10, 20)}
    threads = [
        threading.Thread(target=CheckpointStore(root, keep=None).save, args=(folder, step))
        for step, folder in folders.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert CheckpointStore(root).steps() == [20, 10]


def test_a_steps_list_that_is_not_one_resumes_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "ck")
    store_for(root).write_text(f"{root}/steps.json", "{not json")
    assert CheckpointStore(root).restore(tmp_path / "r") is None


def test_a_fetch_error_is_a_skip_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path / "ck")
    store = CheckpointStore(root)
    store.save(checkpoint_folder(tmp_path, 3), 3)

    def unreachable(uri: str, dest: Path) -> Any:
        raise StorageError(f"{uri}: connection reset")

    monkeypatch.setattr(store.store, "fetch", unreachable)
    assert store.restore(tmp_path / "r") is None


STEPS = 60
SAVE_STEPS = 4


def resumable_workflow(tiny_models: dict[str, Path], workspace: Path, cache: str) -> Path:
    lora = json.loads(json.dumps(LORA))
    lora["lora_dropout"] = 0.1  # dropout draws from the RNG: its state must be resumed too
    # save_steps without save_strategy, as Olive configs write it: transformers' default strategy is
    # "steps", so this asks for checkpoints (the runner once saved none)
    lora["training_args"].update(max_steps=STEPS, save_steps=SAVE_STEPS, logging_steps=1, eval_steps=STEPS)
    doc = workflow_doc(str(tiny_models["qwen2"]), "tone.json", {"lora": lora}, cache_dir=cache)
    return write(workspace / f"{Path(cache).name}.json", doc)


def pass_metrics(cache: Path) -> dict[str, Any]:
    """The metrics in the manifest of the (one) pass output in a local cache."""
    (manifest,) = cache.glob(f"passes/default/*/{MANIFEST_NAME}")
    return dict(json.loads(manifest.read_text())["metadata"]["metrics"])


def training_log(cache: Path) -> list[dict[str, Any]]:
    (log,) = cache.glob("passes/default/*/olivekube-training-log.json")
    return list(json.loads(log.read_text()))


@pytest.fixture(scope="module")
def uninterrupted(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.helpers.manifests import DATA

    workspace = tmp_path_factory.mktemp("uninterrupted")
    (workspace / "tone.json").write_bytes(DATA.read_bytes())
    out = olivekube_run(resumable_workflow(tiny_models, workspace, str(workspace / "cache")))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return pass_metrics(workspace / "cache")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_run_killed_after_its_third_checkpoint_resumes_from_it(
    sig: signal.Signals, tiny_models: dict[str, Path], workspace: Path, uninterrupted: dict[str, Any]
) -> None:
    cache = workspace / "cache"
    path = resumable_workflow(tiny_models, workspace, str(cache))
    run = subprocess.Popen(
        [sys.executable, "-m", "olivekube.cli", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "400"},  # the error line unwrapped
    )

    def third_checkpoint() -> list[int] | None:
        found = list(cache.glob("checkpoints/default/*/*/steps.json"))
        steps = json.loads(found[0].read_text())["steps"] if found else []
        return steps if max(steps, default=0) >= 3 * SAVE_STEPS else None

    wait_for(third_checkpoint, timeout=300, step=0.02)
    run.send_signal(sig)
    printed, _ = run.communicate(timeout=120)
    assert run.returncode != 0, printed[-3000:]
    (steps_file,) = cache.glob("checkpoints/default/*/*/steps.json")
    newest = max(json.loads(steps_file.read_text())["steps"])
    assert newest < STEPS, "the run ended before the signal: nothing was interrupted"
    if sig == signal.SIGTERM:
        assert f"stopped by SIGTERM at step {newest}" in " ".join(printed.split()), printed[-3000:]
    assert not list(cache.glob(f"passes/default/*/{MANIFEST_NAME}"))  # no output was published

    resumed = olivekube_run(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    metrics = pass_metrics(cache)
    assert metrics["resumed_from_step"] == newest
    assert metrics["steps"] == STEPS
    # Finished steps are not trained again: the log (the checkpoint's, then this attempt's) holds each
    # step once, and it is the same run: the same losses and eval loss as the uninterrupted one.
    logged = [entry["step"] for entry in training_log(cache) if "loss" in entry]
    assert logged == list(range(1, STEPS + 1))
    assert abs(metrics["eval_loss"] - uninterrupted["eval_loss"]) < 1e-5, (metrics, uninterrupted)
    assert abs(metrics["final_loss"] - uninterrupted["final_loss"]) < 1e-5
    assert not json.loads(steps_file.read_text())["steps"]  # the published output superseded them


def epoch_workflow(tiny_models: dict[str, Path], workspace: Path, cache: str, **saves: Any) -> Path:
    """An evaluation at each epoch's end, as Olive users often set it."""
    lora = json.loads(json.dumps(LORA))
    lora["lora_dropout"] = 0.1
    lora["training_args"].update(max_steps=STEPS, eval_strategy="epoch", logging_steps=1, **saves)
    doc = workflow_doc(str(tiny_models["qwen2"]), "tone.json", {"lora": lora}, cache_dir=cache)
    return write(workspace / f"{Path(cache).name}.json", doc)


def test_a_run_killed_after_a_checkpoint_at_an_epochs_end_resumes_like_the_uninterrupted_run(
    tiny_models: dict[str, Path], workspace: Path
) -> None:
    """At the last step of an epoch the Trainer saves a save_steps checkpoint before it evaluates the
    epoch; evaluation drew from the random state training uses, so a run resumed from that checkpoint
    dropped out other units at every later step (3.2e-3 off the eval loss in the cluster test)."""
    whole = workspace / "whole"
    out = olivekube_run(epoch_workflow(tiny_models, workspace, str(whole)))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    epoch_end = min(entry["step"] for entry in training_log(whole) if "eval_loss" in entry)
    assert epoch_end < STEPS

    cache = workspace / "killed"
    path = epoch_workflow(tiny_models, workspace, str(cache), save_strategy="steps", save_steps=epoch_end)
    run = subprocess.Popen([sys.executable, "-m", "olivekube.cli", "run", str(path)], stdout=subprocess.DEVNULL)

    def first_checkpoint() -> list[int] | None:
        found = list(cache.glob("checkpoints/default/*/*/steps.json"))
        return (json.loads(found[0].read_text())["steps"] or None) if found else None

    wait_for(first_checkpoint, timeout=300, step=0.02)
    run.kill()
    run.wait()
    resumed = olivekube_run(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    assert pass_metrics(cache)["resumed_from_step"] == epoch_end
    expected = {entry["step"]: entry["loss"] for entry in training_log(whole) if "loss" in entry}
    got = {entry["step"]: entry["loss"] for entry in training_log(cache) if "loss" in entry}
    assert got.keys() == expected.keys()
    differing = [step for step in sorted(got) if abs(got[step] - expected[step]) > 1e-6]
    assert not differing, f"losses differ from step {differing[0]}: {got[differing[0]]}, {expected[differing[0]]}"
    assert abs(pass_metrics(cache)["eval_loss"] - pass_metrics(whole)["eval_loss"]) < 1e-5
