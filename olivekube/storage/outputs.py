"""`output_dir`: versioned, immutable model folders and a small pointer to the current one.

    OUTPUT_DIR/olivekube-output.json         the pointer: current version, and the earlier ones
    OUTPUT_DIR/versions/<version>/           one model, with its olivekube-manifest.json

A run publishes its model into a version folder of its own (all or nothing, as every artifact), then
rewrites the pointer in one step, with a conditional write (S3 If-Match, an Azure ETag, a compare
under a lock on a file system): two runs publishing at once each add their entry, and neither is lost.
Nothing else under OUTPUT_DIR is touched, in any store: a user's files beside the versions stay, and
earlier versions stay recoverable. A pointer file that olivekube did not write is never overwritten.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from olivekube.core.errors import StorageError, WriteConflict
from olivekube.storage.base import store_for
from olivekube.storage.manifest import Manifest

POINTER_NAME = "olivekube-output.json"
POINTER_KIND = "olivekube-output"
HISTORY = 50
POINTER_WRITE_TRIES = 20


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def version_uri(output_dir: str, version: str) -> str:
    return _join(output_dir, "versions", version)


def read_pointer(output_dir: str) -> dict[str, Any] | None:
    """The pointer under `output_dir`, None when there is none; StorageError when a file of its
    name is not olivekube's."""
    return _parse_pointer(output_dir, store_for(output_dir).read_text(_join(output_dir, POINTER_NAME)))


def _parse_pointer(output_dir: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        pointer = json.loads(text)
    except ValueError:
        pointer = None
    if not isinstance(pointer, dict) or pointer.get("kind") != POINTER_KIND:
        raise StorageError(
            f"{_join(output_dir, POINTER_NAME)} is not olivekube's output pointer; olivekube will not "
            "overwrite it: choose another output_dir"
        )
    return pointer


def _superseded(pointer: dict[str, Any], fence: dict[str, Any] | None) -> bool:
    """Whether the current version was published by a later generation of the same workflow."""
    held = pointer.get("fence")
    if not fence or not isinstance(held, dict) or held.get("uid") != fence.get("uid"):
        return False
    return int(held.get("generation") or 0) > int(fence.get("generation") or 0)


def point_to(output_dir: str, version: str, manifest: Manifest, fence: dict[str, Any] | None = None) -> str:
    """Make `versions/<version>` the current model of `output_dir`; returns its URI. Read, add this
    entry, write only if nobody wrote in between; else read again (a publisher beside this one).

    `fence` (a workflow's uid and generation, from a run in a cluster): a run of an older generation
    of the same workflow, finishing after a newer one published, adds its entry to the history but
    never moves `current` back to its model."""
    store, uri = store_for(output_dir), _join(output_dir, POINTER_NAME)
    for attempt in range(POINTER_WRITE_TRIES):
        text, seen = store.read_text_versioned(uri)
        pointer = _parse_pointer(output_dir, text) or {"kind": POINTER_KIND, "history": []}
        entry = {
            "version": version,
            "digest": manifest.digest,
            "sizeBytes": manifest.size_bytes,
            "publishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        history = [h for h in pointer.get("history") or [] if h.get("version") != version] + [entry]
        if _superseded(pointer, fence):  # a newer generation's model stays current
            body = {**pointer, "history": history[-HISTORY:]}
        else:
            current = {"current": f"versions/{version}", **entry, **({"fence": fence} if fence else {})}
            body = {"kind": POINTER_KIND, **current, "history": history[-HISTORY:]}
        try:
            store.write_text_if(uri, json.dumps(body, indent=1), seen)
            return version_uri(output_dir, version)
        except WriteConflict:
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
    raise StorageError(f"{uri}: other publishers changed it {POINTER_WRITE_TRIES} times in a row; publish again")


def publish_version(output_dir: str, src: Path, manifest: Manifest, fence: dict[str, Any] | None = None) -> str:
    """Publish the model in `src` as a version of `output_dir` named by its digest, and point to it
    (see `point_to` for `fence`). Returns the version's URI."""
    read_pointer(output_dir)  # refuse before any upload when the pointer's name is taken
    version = manifest.digest[:16]
    store_for(output_dir).publish(src, version_uri(output_dir, version), manifest)
    return point_to(output_dir, version, manifest, fence)


def current_model(output_dir: str) -> str | None:
    """The URI of the current version under `output_dir`, or None when it holds no pointer."""
    pointer = read_pointer(output_dir)
    return _join(output_dir, str(pointer["current"])) if pointer else None
