"""First complete publish wins: a pass output in the cache is never written over, in each store
(a local folder, the real S3-compatible server, Azure Blob through the Azure stand-in)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from olivekube.storage import Manifest, build_manifest, store_for

AZURE_ROOT = "azureml://subscriptions/sub/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/paths"


AZURE_BLOBS: list[Any] = []  # the stand-in's blobs, while an Azure case runs


@pytest.fixture(params=["local", "s3", "azure"])
def cache_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield f"file://{tmp_path / 'cache'}/passes/ml/key"
    elif request.param == "s3":
        s3 = request.getfixturevalue("s3")
        yield f"s3://{s3.bucket}/publish-once/{request.node.name}/passes/ml/key"
    else:
        AZURE_BLOBS[:] = [request.getfixturevalue("fake_azureml").blobs]
        yield f"{AZURE_ROOT}/publish-once/passes/ml/key"


def _output(folder: Path, text: str) -> tuple[Path, Manifest]:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_text(f"weights from {text}")
    (folder / "config.json").write_text("{}")
    return folder, build_manifest(folder, {"run": text})


def _files_under(uri: str) -> list[str]:
    store = store_for(uri)
    if uri.startswith("s3://"):
        bucket, prefix = uri[5:].split("/", 1)
        return sorted(k for k in store._keys(bucket, prefix))  # type: ignore[attr-defined]
    if uri.startswith("azureml://"):
        path = uri.split("/paths/", 1)[1]
        return sorted(name for _, name in AZURE_BLOBS[0] if name.startswith(path + "/"))
    return sorted(str(p) for p in Path(uri[7:]).rglob("*") if p.is_file())


@pytest.mark.s3
def test_a_complete_artifact_is_never_written_over(cache_uri: str, tmp_path: Path) -> None:
    store = store_for(cache_uri)
    src, manifest = _output(tmp_path / "a", "first")
    first = store.publish_once(src, cache_uri, manifest)
    files = _files_under(cache_uri)
    src, manifest = _output(tmp_path / "b", "second")
    second = store.publish_once(src, cache_uri, manifest)
    assert second.digest == first.digest and second.metadata == {"run": "first"}
    assert _files_under(cache_uri) == files  # nothing written beside it either
    fetched = store.fetch(cache_uri, tmp_path / "fetched")
    assert fetched.digest == first.digest
    assert (tmp_path / "fetched" / "model.onnx").read_text() == "weights from first"


@pytest.mark.s3
def test_two_publishers_at_once_leave_one_complete_artifact_and_both_use_it(
    cache_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each publisher is held after it has seen no artifact until the other has too: both write."""
    store_class = type(store_for(cache_uri))
    barrier, held = threading.Barrier(2, timeout=30), threading.local()
    original = store_class.read_manifest

    def read_then_wait(self, uri: str) -> Manifest | None:  # type: ignore[no-untyped-def]
        found = original(self, uri)
        if not getattr(held, "done", False):
            held.done = True
            barrier.wait()
        return found

    monkeypatch.setattr(store_class, "read_manifest", read_then_wait)
    outputs = [_output(tmp_path / text, text) for text in ("first", "second")]
    results: list[Manifest] = []
    errors: list[BaseException] = []

    def publish(src: Path, manifest: Manifest) -> None:
        try:
            results.append(store_for(cache_uri).publish_once(src, cache_uri, manifest))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=output) for output in outputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == 2 and results[0].digest == results[1].digest
    winner = results[0].metadata["run"]
    monkeypatch.setattr(store_class, "read_manifest", original)
    fetched = store_for(cache_uri).fetch(cache_uri, tmp_path / "fetched")  # verifies every file's digest
    assert fetched.digest == results[0].digest
    assert (tmp_path / "fetched" / "model.onnx").read_text() == f"weights from {winner}"
    loser = {"first": "second", "second": "first"}[winner]
    assert not [f for f in _files_under(cache_uri) if loser in Path(f).name]
    assert len([f for f in _files_under(cache_uri) if f.endswith("model.onnx")]) == 1  # the loser's removed
