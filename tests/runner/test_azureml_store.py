"""azureml:// datastore paths as a store: the real azure-ai-ml (datastore lookup) and
azure-storage-blob clients against the local stand-in for Azure, reached through a CONNECT proxy
because blob hosts ({account}.blob.{suffix}) do not resolve here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from olivekube.storage import StorageError, build_manifest, store_for
from tests.helpers.manifests import DATA, LORA, workflow_doc
from tests.helpers.processes import olivekube_run
from tools.fake_azureml import BLOB_CONTAINER, FakeAzureML

ROOT = "azureml://subscriptions/sub/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/paths"


@pytest.fixture
def fake(fake_azureml: FakeAzureML) -> FakeAzureML:
    return fake_azureml


def _upload_folder(fake: FakeAzureML, folder: Path, prefix: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fake.blobs[(BLOB_CONTAINER, f"{prefix}/{path.relative_to(folder).as_posix()}")] = path.read_bytes()


def test_publish_and_fetch_round_trip_with_the_manifest_last(fake: FakeAzureML, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    manifest = build_manifest(src, {"kind": "hf"})
    uri = f"{ROOT}/models/m1"
    store = store_for(uri)
    assert store.read_manifest(uri) is None
    store.publish(src, uri, manifest)
    names = sorted(n for _, n in fake.blobs)
    assert names == ["models/m1/config.json", "models/m1/olivekube-manifest.json", "models/m1/sub/weights.bin"]
    puts = [r.path for r in fake.requests if r.method == "PUT" and "/models/m1/" in r.path]
    assert puts[-1].endswith("/models/m1/olivekube-manifest.json")  # written last
    assert store.read_manifest(uri).digest == manifest.digest  # type: ignore[union-attr]
    fetched = store.fetch(uri, tmp_path / "out")
    assert fetched.digest == manifest.digest
    assert (tmp_path / "out" / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    store.write_text(f"{ROOT}/index/k1", '{"uri": "x"}')
    assert store.read_text(f"{ROOT}/index/k1") == '{"uri": "x"}'
    assert store.read_text(f"{ROOT}/index/k2") is None
    assert store.exists_file(f"{uri}/config.json") and not store.exists_file(f"{uri}/nope.json")


def test_an_upload_that_dies_leaves_nothing_under_the_final_path(fake: FakeAzureML, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"part-{i}.bin").write_bytes(os.urandom(1024))
    uri = f"{ROOT}/models/m2"
    fake.fail_blob_puts_after = 2
    with pytest.raises(StorageError):
        store_for(uri).publish(src, uri, build_manifest(src))
    assert not [n for _, n in fake.blobs if n.startswith("models/m2/")]
    assert store_for(uri).read_manifest(uri) is None


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("azureml://registries/azureml-msr/models/phi/versions/1", "mounted by Azure ML jobs"),
        ("azureml://datastores/workspaceblobstore/paths/x", "full datastore form"),
    ],
)
def test_uris_only_azure_ml_jobs_can_read_get_a_clear_error(uri: str, words: str) -> None:
    with pytest.raises(StorageError, match=words):
        store_for(uri)


def test_olivekube_run_reads_model_and_data_from_a_datastore_and_publishes_there(  # type: ignore[no-untyped-def]
    fake: FakeAzureML, tiny_models, tmp_path: Path
) -> None:
    _upload_folder(fake, tiny_models["llama"], "models/tiny-llama")
    fake.blobs[(BLOB_CONTAINER, "data/tone.json")] = DATA.read_bytes()
    lora = {**LORA, "training_args": {**LORA["training_args"], "max_steps": 5}}
    doc = workflow_doc(
        f"{ROOT}/models/tiny-llama",
        f"{ROOT}/data/tone.json",
        {
            "lora": lora,
            "merge": {"type": "MergeAdapterWeights"},
            "builder": {"type": "ModelBuilder", "precision": "int4"},
        },
        output_dir=f"{ROOT}/outputs/tone-int4",
        cache_dir=str(tmp_path / "cache"),
    )
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    run = olivekube_run(tmp_path / "wf.json")
    assert run.returncode == 0, run.stdout + run.stderr
    pointer = json.loads(fake.blobs[(BLOB_CONTAINER, "outputs/tone-int4/olivekube-output.json")])
    version = f"outputs/tone-int4/{pointer['current']}"
    manifest = json.loads(fake.blobs[(BLOB_CONTAINER, f"{version}/olivekube-manifest.json")])
    assert manifest["metadata"]["precision"] == "int4"
    assert (BLOB_CONTAINER, f"{version}/model.onnx") in fake.blobs
    assert fake.client_secret not in run.stdout + run.stderr
