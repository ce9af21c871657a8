"""Artifacts on a real S3-compatible server and on local folders: all or nothing, digests verified."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olivekube.api.workflow import parse_workflow
from olivekube.runner.engine import WorkflowRunner
from olivekube.storage import MANIFEST_NAME, Manifest, StorageError, build_manifest, store_for
from olivekube.storage.local import LocalStore
from olivekube.storage.s3 import S3Store
from tests.helpers.manifests import DATA, LORA, workflow_doc


def keys(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return [o["Key"] for o in out.get("Contents", [])]


def test_s3_round_trip_with_multipart(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))  # above the multipart threshold
    (src / "sub" / "small.txt").write_text("hello")
    manifest = build_manifest(src, {"kind": "test"})
    uri = f"s3://{s3.bucket}/roundtrip/artifact"
    store = S3Store()
    store.publish(src, uri, manifest)
    assert sorted(keys(s3, "roundtrip/artifact/")) == [
        f"roundtrip/artifact/{n}" for n in sorted(["big.bin", "sub/small.txt", MANIFEST_NAME])
    ]
    assert keys(s3, "roundtrip/.staging/") == []
    got = store.fetch(uri, tmp_path / "dst")
    assert got.digest == manifest.digest and got.metadata == {"kind": "test"}
    assert (tmp_path / "dst" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_runner_killed_mid_upload_leaves_nothing_under_the_final_uri(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"part{i}.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    uri = f"s3://{s3.bucket}/killed/final"
    code = (
        "import sys; from pathlib import Path; from olivekube.storage import build_manifest; "
        "from olivekube.storage.s3 import S3Store; src = Path(sys.argv[1]); "
        "S3Store().publish(src, sys.argv[2], build_manifest(src))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), uri], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not keys(s3, "killed/.staging/"):
        time.sleep(0.05)
    assert proc.poll() is None, "the upload finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert keys(s3, "killed/final/") == []
    assert S3Store().read_manifest(uri) is None
    # A later publish of the same artifact succeeds and removes nothing it should keep.
    S3Store().publish(src, uri, build_manifest(src))
    assert len(keys(s3, "killed/final/")) == 7


def test_local_publish_is_all_or_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    store = LocalStore()
    final = tmp_path / "out" / "model"
    store.publish(src, str(final), build_manifest(src))
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", MANIFEST_NAME]
    (src / "a.txt").write_text("changed")
    store.publish(src, f"file://{final}", build_manifest(src))
    assert (final / "a.txt").read_text() == "changed"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"], "staging folders were left behind"


def test_fetch_detects_corruption(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"1234")
    store = LocalStore()
    store.publish(src, str(tmp_path / "art"), build_manifest(src))
    (tmp_path / "art" / "w.bin").write_bytes(b"4321")
    with pytest.raises(StorageError, match=r"w\.bin"):
        store.fetch(str(tmp_path / "art"), tmp_path / "copy")


def test_workflow_on_s3_and_second_run_is_a_cache_hit(s3, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = s3.client()
    data = (
        Path(__file__).resolve().parents[2] / "examples/tone-classifier/dataset-classification.json"
    ).read_bytes()
    client.put_object(Bucket=s3.bucket, Key="data/tone.json", Body=data)
    model_uri = s3.upload_folder(tiny_models["llama"], "models/tiny-llama")
    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4"},
    }
    doc = workflow_doc(
        model_uri,
        f"s3://{s3.bucket}/data/tone.json",
        passes,
        cache_dir=f"s3://{s3.bucket}/cache",
        output_dir=f"s3://{s3.bucket}/outputs/tone-int4",
    )
    first, output = WorkflowRunner(parse_workflow(doc), tmp_path / "a").run()
    assert [r.status for r in first] == ["ran", "ran", "ran"]
    assert all(r.uri and r.uri.startswith(f"s3://{s3.bucket}/cache/passes/default/") for r in first)
    assert output.startswith(f"s3://{s3.bucket}/outputs/tone-int4/versions/")
    version = output.split(f"s3://{s3.bucket}/", 1)[1]
    out_keys = keys(s3, f"{version}/")
    assert {"model.onnx", "genai_config.json", MANIFEST_NAME} <= {k.rsplit("/", 1)[-1] for k in out_keys}
    manifest = json.loads(client.get_object(Bucket=s3.bucket, Key=f"{version}/{MANIFEST_NAME}")["Body"].read())
    assert manifest["metadata"]["precision"] == "int4"

    started = time.monotonic()
    second, _ = WorkflowRunner(parse_workflow(doc), tmp_path / "b").run()
    assert [r.status for r in second] == ["cached", "cached", "cached"]
    assert [r.digest for r in second] == [r.digest for r in first]
    assert second[0].metrics["train_loss"] == first[0].metrics["train_loss"]
    assert time.monotonic() - started < sum(r.seconds for r in first) + 30

    # Other bytes under the same data URI: the adapter is trained again, not taken from the cache.
    rows = json.loads(DATA.read_text())
    client.put_object(Bucket=s3.bucket, Key="data/tone.json", Body=json.dumps(rows[: len(rows) // 2]).encode())
    third, _ = WorkflowRunner(parse_workflow(doc), tmp_path / "c").run()
    client.put_object(Bucket=s3.bucket, Key="data/tone.json", Body=data)  # as the next test expects it
    assert third[0].status == "ran" and third[0].digest != first[0].digest


def test_store_for_refuses_unknown_schemes() -> None:
    from olivekube.storage import StorageError

    with pytest.raises(StorageError, match=r"gs://"):
        store_for("gs://bucket/x")


def _planted(files: dict[str, bytes]) -> Manifest:
    import hashlib

    return Manifest(files={k: {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)} for k, v in files.items()})


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "~/x", "a\\..\\x"])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused_on_fetch(name: str, tmp_path: Path) -> None:
    art = tmp_path / "cache" / "art"
    art.mkdir(parents=True)
    (art / MANIFEST_NAME).write_text(_planted({name: b"owned"}).to_json())
    dest = tmp_path / "work" / "dest"
    with pytest.raises(StorageError, match="inside its artifact"):
        LocalStore().fetch(str(art), dest)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]
    assert written == [], written


def test_a_manifest_naming_a_link_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not yours")
    art = tmp_path / "art"
    art.mkdir()
    (art / "weights.bin").symlink_to(secret)
    (art / MANIFEST_NAME).write_text(_planted({"weights.bin": b"not yours"}).to_json())
    with pytest.raises(StorageError, match="symbolic link"):
        LocalStore().fetch(str(art), tmp_path / "dest")
    assert not (tmp_path / "dest" / "weights.bin").exists()


@pytest.mark.s3
def test_an_s3_manifest_naming_a_file_outside_its_folder_is_refused(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="planted/x/../../y", Body=b"owned")
    client.put_object(
        Bucket=s3.bucket, Key=f"planted/x/{MANIFEST_NAME}", Body=_planted({"../../y": b"owned"}).to_json().encode()
    )
    with pytest.raises(StorageError, match="inside its artifact"):
        S3Store().fetch(f"s3://{s3.bucket}/planted/x", tmp_path / "a" / "b")
    assert not (tmp_path / "y").exists() and not any(tmp_path.rglob("y"))


@pytest.mark.s3
def test_a_folders_version_changes_with_any_of_its_objects_and_nothing_else(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, store, uri = s3.client(), S3Store(), f"s3://{s3.bucket}/versioned/model"
    assert store.folder_version(uri) is None
    client.put_object(Bucket=s3.bucket, Key="versioned/model/config.json", Body=b"{}")
    client.put_object(Bucket=s3.bucket, Key="versioned/model/weights.bin", Body=b"1234")
    first = store.folder_version(uri)
    client.put_object(Bucket=s3.bucket, Key="versioned/model-b/weights.bin", Body=b"beside it")
    assert first is not None and store.folder_version(uri) == first
    client.put_object(Bucket=s3.bucket, Key="versioned/model/weights.bin", Body=b"4321")
    assert store.folder_version(uri) not in (None, first)
    local = tmp_path / "model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    before = LocalStore().folder_version(f"file://{local}")
    (local / "config.json").write_text('{"a": 1}')
    assert before is not None and LocalStore().folder_version(f"file://{local}") not in (None, before)


def test_the_next_publish_removes_staging_leftovers_of_a_killed_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = out / ".model.staging-deadbeef"
    old.mkdir()
    (old / "half.bin").write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    running = out / ".other.staging-cafe0001"  # a publish that may still be running: kept
    running.mkdir()
    mine = out / "notes.staging-1"  # not an olivekube name: kept
    mine.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x")
    LocalStore().publish(src, str(out / "model"), build_manifest(src))
    assert not old.exists() and running.exists() and mine.exists()


@pytest.mark.s3
def test_s3_publish_removes_old_staging_leftovers(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="left/.staging/0123/part.bin", Body=b"half")
    client.put_object(Bucket=s3.bucket, Key="left/keep.txt", Body=b"mine")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x")
    store = S3Store()
    store.publish(src, f"s3://{s3.bucket}/left/model", build_manifest(src))
    assert "left/.staging/0123/part.bin" in keys(s3, "left/"), "a young leftover may be a running publish"
    store.stale_after = 0
    store.publish(src, f"s3://{s3.bucket}/left/model2", build_manifest(src))
    assert "left/.staging/0123/part.bin" not in keys(s3, "left/") and "left/keep.txt" in keys(s3, "left/")
