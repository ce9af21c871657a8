"""`output_dir`: versioned, immutable model folders and a small pointer to the current one.

    OUTPUT_DIR/olivekube-output.json         the pointer: current version, and the earlier ones
    OUTPUT_DIR/versions/<version>/           one model, with its olivekube-manifest.json

A run publishes its model into a version folder of its own (all or nothing, as every artifact), then
rewrites the pointer in one step. Nothing else under OUTPUT_DIR is touched, in any store: a user's
files beside the versions stay, and earlier versions stay recoverable. A pointer file that
olivekube did not write is never overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from olivekube.core.errors import StorageError
from olivekube.storage.base import store_for
from olivekube.storage.manifest import Manifest

POINTER_NAME = "olivekube-output.json"
POINTER_KIND = "olivekube-output"
HISTORY = 50


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def version_uri(output_dir: str, version: str) -> str:
    return _join(output_dir, "versions", version)


def read_pointer(output_dir: str) -> dict[str, Any] | None:
    """The pointer under `output_dir`, None when there is none; StorageError when a file of its
    name is not olivekube's."""
    text = store_for(output_dir).read_text(_join(output_dir, POINTER_NAME))
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


def point_to(output_dir: str, version: str, manifest: Manifest) -> str:
    """Make `versions/<version>` the current model of `output_dir`; returns its URI."""
    pointer = read_pointer(output_dir) or {"kind": POINTER_KIND, "history": []}
    entry = {
        "version": version,
        "digest": manifest.digest,
        "sizeBytes": manifest.size_bytes,
        "publishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    history = [h for h in pointer.get("history") or [] if h.get("version") != version] + [entry]
    body = {"kind": POINTER_KIND, "current": f"versions/{version}", **entry, "history": history[-HISTORY:]}
    store_for(output_dir).write_text(_join(output_dir, POINTER_NAME), json.dumps(body, indent=1))
    return version_uri(output_dir, version)


def publish_version(output_dir: str, src: Path, manifest: Manifest) -> str:
    """Publish the model in `src` as a version of `output_dir` named by its digest, and point to it."""
    read_pointer(output_dir)  # refuse before any upload when the pointer's name is taken
    version = manifest.digest[:16]
    store_for(output_dir).publish(src, version_uri(output_dir, version), manifest)
    return point_to(output_dir, version, manifest)


def current_model(output_dir: str) -> str | None:
    """The URI of the current version under `output_dir`, or None when it holds no pointer."""
    pointer = read_pointer(output_dir)
    return _join(output_dir, str(pointer["current"])) if pointer else None
