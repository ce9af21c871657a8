"""output_dir never loses a user's files: each run publishes a version of its own and moves a
pointer; whatever else is in output_dir stays, in every store."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from olivekube.storage import StorageError, build_manifest
from olivekube.storage.outputs import POINTER_NAME, current_model, publish_version
from tests.helpers.manifests import write
from tests.helpers.processes import olivekube_run
from tools.fake_azureml import BLOB_CONTAINER, FakeAzureML

AZURE_ROOT = "azureml://subscriptions/sub/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/paths"


def _model(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(text)
    (folder / "weights.bin").write_bytes(os.urandom(1024))
    return folder


def _builder_workflow(model: Path, output_dir: str, precision: str) -> dict[str, object]:
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "out"},
        "spec": {
            "input_model": {"type": "HfModel", "model_path": str(model)},
            "passes": {"builder": {"type": "ModelBuilder", "precision": precision}},
            "output_dir": output_dir,
            "cache_dir": "cache",
        },
    }


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.runner
@pytest.mark.parametrize("output_dir", ["models", "."])
def test_a_run_into_a_folder_of_the_users_keeps_everything_there(
    tiny_models, tmp_path: Path, output_dir: str
) -> None:  # type: ignore[no-untyped-def]
    users = tmp_path / output_dir
    users.mkdir(exist_ok=True)
    (users / "notes.txt").write_text("mine")
    (users / "old-model").mkdir()
    (users / "old-model" / "model.onnx").write_bytes(b"an older model, by hand")
    before = _files(users)
    first = olivekube_run(write(tmp_path / "wf.json", _builder_workflow(tiny_models["llama"], output_dir, "fp32")))
    assert first.returncode == 0, first.stdout + first.stderr
    second = olivekube_run(
        write(tmp_path / "wf.json", _builder_workflow(tiny_models["llama"], output_dir, "int4"))
    )
    assert second.returncode == 0, second.stdout + second.stderr
    after = _files(users)
    assert {k: v for k, v in after.items() if k in before} == before, "a file of the user's changed or vanished"
    pointer = json.loads((users / POINTER_NAME).read_text())
    assert len(pointer["history"]) == 2 and pointer["current"] == f"versions/{pointer['history'][-1]['version']}"
    for entry in pointer["history"]:  # both runs' models are still there, each complete
        assert (users / "versions" / entry["version"] / "model.onnx").is_file()
    current = current_model(str(users))
    assert current is not None and Path(current) == users / pointer["current"]
    assert json.loads((Path(current) / "olivekube-manifest.json").read_text())["metadata"]["precision"] == "int4"
    assert current in second.stdout.replace("\n", "")


def test_a_file_named_like_the_pointer_that_is_not_olivekubes_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / POINTER_NAME).write_text("my own notes")
    src = _model(tmp_path / "src", "{}")
    with pytest.raises(StorageError, match="not olivekube's output pointer"):
        publish_version(str(out), src, build_manifest(src))
    assert (out / POINTER_NAME).read_text() == "my own notes" and not (out / "versions").exists()


@pytest.mark.s3
def test_s3_versions_leave_the_users_objects_under_the_prefix(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="team/models/readme.md", Body=b"mine")
    client.put_object(Bucket=s3.bucket, Key="team/models/config.json", Body=b"also mine")
    output_dir = f"s3://{s3.bucket}/team/models"
    uris = []
    for text in ("a", "b"):
        src = _model(tmp_path / text, text)
        uris.append(publish_version(output_dir, src, build_manifest(src)))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix="team/models/")["Contents"]}
    assert {"team/models/readme.md", "team/models/config.json"} <= keys
    assert client.get_object(Bucket=s3.bucket, Key="team/models/config.json")["Body"].read() == b"also mine"
    assert current_model(output_dir) == uris[1] and uris[0] != uris[1]
    assert f"{uris[0].split(s3.bucket + '/')[1]}/weights.bin" in keys  # the first version is still there


def test_azureml_versions_leave_the_users_blobs_under_the_path(fake_azureml: FakeAzureML, tmp_path: Path) -> None:
    fake_azureml.blobs[(BLOB_CONTAINER, "team/models/readme.md")] = b"mine"
    output_dir = f"{AZURE_ROOT}/team/models"
    uris = []
    for text in ("a", "b"):
        src = _model(tmp_path / text, text)
        uris.append(publish_version(output_dir, src, build_manifest(src)))
    assert fake_azureml.blobs[(BLOB_CONTAINER, "team/models/readme.md")] == b"mine"
    assert current_model(output_dir) == uris[1]
    names = {n for _, n in fake_azureml.blobs}
    assert any(n.startswith(uris[0].split("/paths/")[1]) for n in names)


@pytest.mark.runner
def test_a_finishing_run_removes_only_its_own_work_folder(tiny_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Runs sharing a cache (or, with a remote cache, a user) each work in a folder of their own: the
    one that finishes first used to remove the shared one, under the others' feet."""
    from olivekube.api.workflow import parse_workflow
    from olivekube.runner.engine import WorkflowRunner

    running = tmp_path / "cache" / ".work" / "another-run"  # a run still going, beside this one
    running.mkdir(parents=True)
    (running / "model.onnx").write_bytes(b"half built")
    out = olivekube_run(write(tmp_path / "wf.json", _builder_workflow(tiny_models["llama"], "models", "fp32")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (running / "model.onnx").read_bytes() == b"half built"
    assert [p.name for p in (tmp_path / "cache" / ".work").iterdir()] == ["another-run"]

    doc = _builder_workflow(tiny_models["llama"], "models", "fp32")
    first, second = (WorkflowRunner(parse_workflow(doc), tmp_path) for _ in range(2))
    assert first.work_root != second.work_root and first.work_root.parent == tmp_path / "cache" / ".work"
    doc["spec"]["cache_dir"] = "s3://bucket/cache"  # a remote cache: the work folder is in the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    remote = WorkflowRunner(parse_workflow(doc), tmp_path)
    assert remote.work_root.parent == tmp_path / "xdg" / "olivekube" / "work"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))  # as in the image: no writable home
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        remote = WorkflowRunner(parse_workflow(doc), tmp_path)
    finally:
        tempfile.tempdir = None
    assert remote.work_root.parent == tmp_path / "tmp" / "olivekube" / "work"


def _publish_at_once(output_dir: str, tmp_path: Path, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Two publishers of different models into one output_dir, each held at its first pointer write
    until the other has read the pointer too (the race two runs finishing together make)."""
    import threading

    from olivekube.storage import store_for

    store_class = type(store_for(output_dir))
    barrier, held = threading.Barrier(2, timeout=30), threading.local()

    def hold_first_pointer_write(original):  # type: ignore[no-untyped-def]
        def write(self, uri: str, *args):  # type: ignore[no-untyped-def]
            if uri.endswith(POINTER_NAME) and not getattr(held, "done", False):
                held.done = True
                barrier.wait()
            return original(self, uri, *args)

        return write

    for name in ("write_text", "write_text_if"):
        monkeypatch.setattr(store_class, name, hold_first_pointer_write(getattr(store_class, name)))
    sources = [_model(tmp_path / text, text) for text in ("first", "second")]
    uris: list[str] = []
    errors: list[BaseException] = []

    def publish(src: Path) -> None:
        try:
            uris.append(publish_version(output_dir, src, build_manifest(src)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(src,)) for src in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return uris


def _assert_both_kept(output_dir: str, uris: list[str]) -> None:
    from olivekube.storage import store_for
    from olivekube.storage.outputs import read_pointer

    pointer = read_pointer(output_dir)
    assert pointer is not None
    versions = {h["version"] for h in pointer["history"]}
    assert versions == {uri.rsplit("/", 1)[1] for uri in uris}, pointer
    assert current_model(output_dir) in uris
    assert all(store_for(uri).read_manifest(uri) is not None for uri in uris)  # both complete


def test_two_runs_publishing_into_one_folder_at_once_both_stay_in_the_history(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    output_dir = str(tmp_path / "models")
    _assert_both_kept(output_dir, _publish_at_once(output_dir, tmp_path, monkeypatch))


@pytest.mark.s3
def test_two_runs_publishing_to_s3_at_once_both_stay_in_the_history(s3, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    output_dir = f"s3://{s3.bucket}/race/models"
    _assert_both_kept(output_dir, _publish_at_once(output_dir, tmp_path, monkeypatch))


def test_two_runs_publishing_to_azureml_at_once_both_stay_in_the_history(  # type: ignore[no-untyped-def]
    fake_azureml: FakeAzureML, tmp_path: Path, monkeypatch
) -> None:
    output_dir = f"{AZURE_ROOT}/race/models"
    _assert_both_kept(output_dir, _publish_at_once(output_dir, tmp_path, monkeypatch))


def test_a_run_of_an_older_generation_never_moves_the_pointer_back(tmp_path: Path) -> None:
    """Generation 2 of a workflow published; generation 1's run, superseded but past its last check,
    publishes after it: its version is kept and listed, the current model stays generation 2's."""
    from olivekube.storage.outputs import read_pointer

    output_dir = str(tmp_path / "models")
    newer, older, other = (_model(tmp_path / n, n) for n in ("newer", "older", "other"))
    first = publish_version(output_dir, newer, build_manifest(newer), {"uid": "u1", "generation": 2})
    late = publish_version(output_dir, older, build_manifest(older), {"uid": "u1", "generation": 1})
    assert current_model(output_dir) == first
    pointer = read_pointer(output_dir)
    assert pointer is not None and [h["version"] for h in pointer["history"]] == [
        first.rsplit("/", 1)[1],
        late.rsplit("/", 1)[1],
    ]
    # another workflow's generations are not comparable, and a run without a fence (olivekube run) moves it
    third = publish_version(output_dir, other, build_manifest(other), {"uid": "u2", "generation": 1})
    assert current_model(output_dir) == third
    assert publish_version(output_dir, older, build_manifest(older)) == current_model(output_dir) == late
