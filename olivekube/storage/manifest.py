"""The manifest of an artifact: every file's sha256 and size, plus metadata; its digest names it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from olivekube.core.errors import StorageError

MANIFEST_NAME = "olivekube-manifest.json"
CONTENT_ROOT = ".olivekube-content"
CHUNK = 4 * 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """Files (relative path → sha256, size) and metadata of an artifact. `root`: the folder under
    the artifact's where the files lie, when a remote store published it first-wins (its own
    content's folder, so that racing publishers never write over each other's files)."""

    files: dict[str, dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    root: str = ""

    def key(self, rel: str) -> str:
        """Where file `rel` lies, relative to the artifact."""
        return f"{self.root}/{rel}" if self.root else rel

    @property
    def digest(self) -> str:
        """sha256 of the file list: equal content, equal digest."""
        canonical = json.dumps(self.files, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    def to_json(self) -> str:
        body: dict[str, Any] = {"digest": self.digest, "files": self.files, "metadata": self.metadata}
        if self.root:
            body["root"] = self.root
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """A manifest as a store holds it; StorageError when it is malformed or names a file outside
        its artifact's folder (an absolute path, or one with `..`)."""
        try:
            data = json.loads(text)
            files, metadata = dict(data["files"]), dict(data.get("metadata") or {})
            root = str(data.get("root") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"not an olivekube manifest: {exc}") from exc
        for rel in [*files, *([root] if root else [])]:
            check_relative(rel)
        return cls(files=files, metadata=metadata, root=root)


def check_relative(rel: str) -> None:
    """StorageError unless `rel` is a plain relative path that stays inside its folder."""
    path = PurePosixPath(rel)
    if not rel or "\\" in rel or path.is_absolute() or ".." in path.parts or rel.startswith("~"):
        raise StorageError(f"{rel!r}: a manifest may name only files inside its artifact's folder")


def build_manifest(folder: Path, metadata: dict[str, Any] | None = None) -> Manifest:
    """Hash every file under `folder` (except a manifest already there)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST_NAME:
            continue
        files[rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return Manifest(files=files, metadata=dict(metadata or {}))


def check_links(folder: Path, manifest: Manifest) -> None:
    """StorageError when a file the manifest names is a symbolic link or lies, through one, outside `folder`."""
    root = folder.resolve()
    for rel in manifest.files:
        check_relative(rel)
        path = folder / rel
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise StorageError(f"{rel}: a symbolic link, or a path out of the artifact's folder; refused")


def verify(folder: Path, manifest: Manifest) -> None:
    """StorageError when a file under `folder` differs from the manifest, or reaches outside the
    folder (through a symbolic link)."""
    check_links(folder, manifest)
    for rel, info in manifest.files.items():
        path = folder / rel
        if not path.is_file() or file_sha256(path) != info["sha256"]:
            raise StorageError(f"{rel}: content differs from the artifact manifest")
