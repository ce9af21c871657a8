"""The store interface, and the registry that chooses a store by URI scheme.

Each store module registers the schemes it serves (`@serves("s3")`); `store_for` imports the
store modules on first use, so that a store's client library loads only when its scheme is used.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from olivekube.core.errors import StorageError, WriteConflict
from olivekube.storage.manifest import CONTENT_ROOT, MANIFEST_NAME, Manifest

STORE_MODULES = {
    "": "olivekube.storage.local",
    "file": "olivekube.storage.local",
    "pvc": "olivekube.storage.local",
    "s3": "olivekube.storage.s3",
    "azureml": "olivekube.storage.azureml",
}
"""URI scheme → the module whose store serves it (imported when a URI of that scheme is first used)."""

_STORES: dict[str, Callable[[str], ArtifactStore]] = {}


STALE_STAGING_SECONDS = 3600.0
"""Staging leftovers older than this (a publish killed mid-upload) are removed by the next publish
beside them; younger ones may belong to a publish still running."""


class ArtifactStore(ABC):
    """Where artifacts live. URIs are folders; the manifest marks a complete artifact."""

    stale_after: float = STALE_STAGING_SECONDS

    @abstractmethod
    def read_manifest(self, uri: str) -> Manifest | None:
        """The artifact's manifest, or None when no complete artifact is at `uri`."""

    @abstractmethod
    def fetch(self, uri: str, dest: Path) -> Manifest:
        """Copy the complete artifact at `uri` into `dest` (verifying digests); return its manifest."""

    @abstractmethod
    def publish(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> None:
        """Make `src` the artifact at `uri`, all or nothing, with `manifest` written last.

        With `consume`, `src` may be moved rather than copied (a local store renames it).
        """

    @abstractmethod
    def publish_once(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> Manifest:
        """Publish an artifact that several runs may race to write (a pass output in the cache):
        the first complete publish wins and is never written over; a later publisher, or one that
        lost the race, writes nothing there and gets the winner's manifest back."""

    @abstractmethod
    def exists_file(self, uri: str) -> bool:
        """Whether a single file (a data file) exists at `uri`."""

    @abstractmethod
    def fetch_file(self, uri: str, dest: Path) -> Path:
        """Copy a single file (a data file) to `dest`."""

    @abstractmethod
    def read_text(self, uri: str) -> str | None:
        """A small text object (an index entry), or None when absent."""

    @abstractmethod
    def write_text(self, uri: str, text: str) -> None:
        """Write a small text object in one step."""

    @abstractmethod
    def read_text_versioned(self, uri: str) -> tuple[str | None, str | None]:
        """A small text file and a token for its version (an ETag), or (None, None) when absent."""

    @abstractmethod
    def write_text_if(self, uri: str, text: str, version: str | None) -> None:
        """Write a small text file only if it is still at `version` (None: only if it is absent);
        WriteConflict otherwise. Read-modify-write without losing another writer's change."""

    def file_version(self, uri: str) -> str | None:
        """What identifies the bytes of a single file (a data file) now: a digest or the server's
        ETag; None when the store cannot tell. Enters the content key of the passes that read it."""
        return None

    def folder_version(self, uri: str) -> str | None:
        """What identifies the bytes of a folder (an input model) now, read cheaply: a digest of its
        listing with each object's ETag and size, or of its content locally; None when the store
        cannot tell or nothing is there. Lets the operator check a first pass's input."""
        return None

    def local_path(self, uri: str) -> Path | None:
        """The folder of `uri` on this machine when the store is local (no copy needed), else None."""
        return None

    def remove(self, uri: str) -> bool:
        """Delete the artifact at `uri` (olivekube's own: a training checkpoint it wrote); whether this
        store could. A store that cannot delete keeps it, which costs space and nothing else."""
        return False


class ObjectStore(ArtifactStore):
    """A store of objects with no rename (S3, Azure Blob): `publish_once` uploads to the folder of
    the content's own digest (`.olivekube-content/DIGEST`: racers of equal content write equal bytes,
    others never meet), then creates the manifest naming it only if there is none (If-None-Match):
    the first such write wins, and a loser removes its own folder."""

    @abstractmethod
    def put_files(self, src: Path, uri: str, manifest: Manifest) -> None:
        """Upload each file of `manifest` to `uri`/`manifest.key(file)`."""

    @abstractmethod
    def delete_files(self, uri: str, manifest: Manifest) -> None:
        """Delete each file of `manifest` at `uri`/`manifest.key(file)`."""

    def publish_once(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> Manifest:
        existing = self.read_manifest(uri)
        if existing is not None:
            return existing
        ours = Manifest(manifest.files, manifest.metadata, root=f"{CONTENT_ROOT}/{manifest.digest[:32]}")
        self.put_files(src, uri, ours)
        try:
            self.write_text_if(f"{uri.rstrip('/')}/{MANIFEST_NAME}", ours.to_json(), None)
        except WriteConflict:
            winner = self.read_manifest(uri)
            if winner is None:
                raise
            if winner.root != ours.root:
                self.delete_files(uri, ours)
            return winner
        return ours


def serves(*schemes: str) -> Callable[[Callable[[str], ArtifactStore]], Callable[[str], ArtifactStore]]:
    """Register a factory (URI → store; it may refuse a URI with StorageError) for `schemes`."""

    def register(factory: Callable[[str], ArtifactStore]) -> Callable[[str], ArtifactStore]:
        for scheme in schemes:
            _STORES[scheme] = factory
        return factory

    return register


def is_uri(value: str) -> bool:
    return urlparse(value).scheme in STORE_MODULES and urlparse(value).scheme != ""


def store_for(uri: str) -> ArtifactStore:
    """The store that serves `uri` (s3://, azureml:// datastore paths, pvc://, file:// or a plain path)."""
    scheme = urlparse(uri).scheme
    if scheme not in STORE_MODULES:
        raise StorageError(f"{uri}: unknown URI scheme {scheme!r}; use s3://, pvc://, file:// or a path")
    if scheme not in _STORES:
        importlib.import_module(STORE_MODULES[scheme])
    return _STORES[scheme](uri)
