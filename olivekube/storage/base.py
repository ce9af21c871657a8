"""The store interface and the choice of store by URI scheme."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

from olivekube.storage.manifest import Manifest


class StorageError(RuntimeError):
    """An artifact could not be read or written; the message names the URI."""


class ArtifactStore(ABC):
    """Where artifacts live. URIs are folders; the manifest marks a complete artifact."""

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

    def local_path(self, uri: str) -> Path | None:
        """The folder of `uri` on this machine when the store is local (no copy needed), else None."""
        return None


def is_uri(value: str) -> bool:
    return urlparse(value).scheme in ("file", "pvc", "s3", "azureml")


def store_for(uri: str) -> ArtifactStore:
    """The store that serves `uri` (s3://, azureml:// datastore paths, pvc://, file:// or a plain path)."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        from olivekube.storage.s3 import S3Store

        return S3Store()
    if scheme in ("", "file", "pvc"):
        from olivekube.storage.local import LocalStore

        return LocalStore()
    if scheme == "azureml":
        from olivekube.storage.azureml import AzureMLStore, parse

        parse(uri)  # registry models and short datastore paths: a clear error before any client
        return AzureMLStore()
    raise StorageError(f"{uri}: unknown URI scheme {scheme!r}; use s3://, pvc://, file:// or a path")
