"""Publishing under faults: the publisher SIGKILLed mid-upload (real S3 server), and the disk
filling up under output_dir (a real small tmpfs, mounted in a private mount namespace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.manifests import DATA, LORA, REPO, workflow_doc, write
from tests.helpers.processes import wait_for

PUBLISH = """
import sys
from pathlib import Path
from olivekube.storage import build_manifest, store_for
src, uri = Path(sys.argv[1]), sys.argv[2]
store_for(uri).publish(src, uri, build_manifest(src, {"kind": "hf"}))
"""


def _keys(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The keys under `prefix`. The test server (gofakes3) may answer a listing that races an upload
    cut off by the kill with InternalError: ask again, as a client of any S3 would."""
    from botocore.exceptions import ClientError

    for attempt in range(20):
        try:
            pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InternalError" or attempt == 19:
                raise
            time.sleep(0.25)
    return []


SHARD = 64 * 1024


def _drop_cut_off_upload(s3, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """gofakes3's fs backend (the test's S3 server) keeps the first bytes of a PUT whose client died
    mid-body, without their metadata, and from then on every listing of that folder fails with
    InternalError (it hashes the missing metadata file). Real S3 keeps nothing of a cut-off PUT: so
    does the test server once the file, shorter than every shard, is removed from its folder."""
    for path in (s3.objects / prefix).rglob("*"):
        if path.is_file() and path.stat().st_size != SHARD:
            path.unlink()


def test_a_publisher_killed_mid_upload_leaves_nothing_under_the_final_uri(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from olivekube.storage import build_manifest
    from olivekube.storage.s3 import S3Store

    src = tmp_path / "model"
    src.mkdir()
    for i in range(400):  # many files: the kill lands among the uploads to the staging prefix
        (src / f"shard-{i:03}.bin").write_bytes(os.urandom(SHARD))
    uri = f"s3://{s3.bucket}/killed/passes/ns/key1"
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH, str(src), uri], env={**os.environ, **s3.env()}, cwd=REPO
    )
    wait_for(lambda: _keys(s3, "killed/passes/ns/.staging/") or proc.poll() is not None, timeout=60, step=0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # the server ends the cut-off request
    _drop_cut_off_upload(s3, "killed/passes/ns/.staging")
    store = S3Store()
    assert _keys(s3, "killed/passes/ns/.staging/"), "the kill came after the upload: nothing was tested"
    assert _keys(s3, f"{uri.split('/', 3)[3]}/") == [] and store.read_manifest(uri) is None
    # The next publish of the same output completes it and removes the leftovers (stale at once here).
    store.stale_after = 0
    store.publish(src, uri, build_manifest(src, {"kind": "hf"}))
    assert _keys(s3, "killed/passes/ns/.staging/") == []
    manifest = store.read_manifest(uri)
    assert manifest is not None and len(manifest.files) == 400


def test_a_full_disk_under_output_dir_fails_the_run_naming_it_and_keeps_the_users_files(
    tiny_models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "team-models"
    out.mkdir()
    lora = {**LORA, "training_args": {**LORA["training_args"], "max_steps": 2}}
    doc = workflow_doc(
        str(tiny_models["phi3"]), str(DATA), {"lora": lora}, cache_dir=str(tmp_path / "cache"), output_dir=str(out)
    )
    path = write(tmp_path / "wf.json", doc)
    # A 64 KiB file system over output_dir (private to this process tree), holding the team's notes
    # and little room; after the run, what is left there is listed from inside.
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {out} && echo 'keep me' > {out}/notes.txt && "
        f"head -c 40000 /dev/zero > {out}/filler.bin || exit 99; "
        f"{REPO / '.venv/bin/olivekube'} run {path}; rc=$?; echo '--- left:'; "
        f"find {out} -mindepth 1 -not -type d -printf '%P %s\\n' | sort; cat {out}/notes.txt; exit $rc"
    )
    run = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    text = run.stdout + run.stderr
    assert run.returncode == 1, text
    assert "output_dir" in text and "No space left on device" in text, text
    left = run.stdout.split("--- left:\n", 1)[1].splitlines()
    assert left == ["filler.bin 40000", "notes.txt 8", "keep me"], text  # no partial version, no pointer
