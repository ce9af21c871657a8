"""azureml:// datastore paths: the datastore's blob container, found through azure-ai-ml.

`azureml://subscriptions/S/resourcegroups/RG/workspaces/W/datastores/D/paths/P` (the form Olive's
`azureml_datastore` converts to) names a prefix in the datastore's container. Reading and writing
go straight to Azure Blob Storage with the datastore's own credentials (account key or SAS), or
with the Azure identity when it has none. Publishing stages the blobs beside the final prefix,
copies them into place on the server and writes the manifest last, as the S3 store does.

Registry models (`azureml://registries/R/models/NAME/versions/V`) and the short form
`azureml://datastores/D/paths/P` are read by Azure ML jobs, which mount them; here they get a clear
error.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olivekube.core.errors import PassError, StorageError, WriteConflict
from olivekube.storage.azure_identity import azure_message, credential
from olivekube.storage.base import ArtifactStore, ObjectStore, serves
from olivekube.storage.manifest import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    check_relative,
    verify,
)

DATASTORE_URI = re.compile(
    r"^azureml://subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/workspaces/(?P<ws>[^/]+)"
    r"/datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$"
)


@dataclass(frozen=True)
class DatastorePath:
    subscription: str
    resource_group: str
    workspace: str
    datastore: str
    path: str


def parse(uri: str) -> DatastorePath:
    match = DATASTORE_URI.match(uri)
    if match is None:
        if uri.startswith("azureml://registries/"):
            raise StorageError(
                f"{uri}: a registry model is mounted by Azure ML jobs; host the pass on an AzureML system"
            )
        raise StorageError(
            f"{uri}: outside Azure ML jobs, use the full datastore form "
            "azureml://subscriptions/S/resourcegroups/RG/workspaces/W/datastores/D/paths/P"
        )
    return DatastorePath(match["sub"], match["rg"], match["ws"], match["ds"], match["path"].strip("/"))


@serves("azureml")
def _azureml_store(uri: str) -> ArtifactStore:
    parse(uri)  # registry models and short datastore paths: a clear error before any client
    return AzureMLStore()


class AzureMLStore(ObjectStore):
    """Artifacts as blobs under a datastore path."""

    def __init__(self) -> None:
        self._containers: dict[tuple[str, str, str, str], Any] = {}

    def _container(self, where: DatastorePath, uri: str) -> Any:
        key = (where.subscription, where.resource_group, where.workspace, where.datastore)
        if key in self._containers:
            return self._containers[key]
        from azure.ai.ml import MLClient
        from azure.ai.ml.entities import AccountKeyConfiguration, SasTokenConfiguration
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        try:
            identity = credential(uri)
        except PassError as exc:
            raise StorageError(f"{uri}: {exc.message}") from exc
        try:
            ml = MLClient(identity, where.subscription, where.resource_group, where.workspace)
            datastore = ml.datastores.get(where.datastore, include_secrets=True)
        except AzureError as exc:
            raise StorageError(f"{uri}: {azure_message(exc)}") from exc
        account = getattr(datastore, "account_name", None)
        container = getattr(datastore, "container_name", None)
        if not account or not container:
            raise StorageError(f"{uri}: datastore {where.datastore} is not an Azure Blob datastore")
        secret: Any = identity
        stored = getattr(datastore, "credentials", None)
        if isinstance(stored, AccountKeyConfiguration) and stored.account_key:
            secret = stored.account_key
        elif isinstance(stored, SasTokenConfiguration) and stored.sas_token:
            secret = stored.sas_token
        url = f"{datastore.protocol or 'https'}://{account}.blob.{datastore.endpoint or 'core.windows.net'}"
        client = ContainerClient(url, container, credential=secret)
        self._containers[key] = client
        return client

    def _names(self, client: Any, prefix: str) -> list[str]:
        return [b.name for b in client.list_blobs(name_starts_with=f"{prefix}/")]

    def _call(self, uri: str, action: Any) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return action()
        except AzureError as exc:
            raise StorageError(f"{uri}: {azure_message(exc, limit=500)}") from exc

    def _read(self, client: Any, name: str, uri: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self._call(uri, lambda: client.download_blob(name).readall()))
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None
            raise

    def read_manifest(self, uri: str) -> Manifest | None:
        where = parse(uri)
        data = self._read(self._container(where, uri), f"{where.path}/{MANIFEST_NAME}", uri)
        return Manifest.from_json(data.decode()) if data is not None else None

    def fetch(self, uri: str, dest: Path) -> Manifest:
        where = parse(uri)
        client = self._container(where, uri)
        manifest = self.read_manifest(uri)
        dest.mkdir(parents=True, exist_ok=True)
        if manifest is None:  # a folder uploaded by hand (an input model): take every blob under it
            names = self._call(uri, lambda: self._names(client, where.path))
            if not names:
                raise StorageError(f"{uri}: nothing there")
            relative = [n[len(where.path) + 1 :] for n in names]
            for rel in relative:
                check_relative(rel)
        else:
            relative = list(manifest.files)
        stored = manifest.key if manifest is not None else (lambda rel: rel)
        for rel in relative:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            name = f"{where.path}/{stored(rel)}"
            with target.open("wb") as out:
                self._call(uri, lambda name=name, out=out: client.download_blob(name).readinto(out))
        if manifest is None:
            return build_manifest(dest)
        verify(dest, manifest)
        (dest / MANIFEST_NAME).write_text(manifest.to_json())
        return manifest

    def publish(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> None:
        where = parse(uri)
        client = self._container(where, uri)
        existing = self.read_manifest(uri)
        if existing is not None and existing.digest == manifest.digest:
            return
        staging = f"{where.path.rstrip('/')}.olivekube-staging-{uuid.uuid4().hex[:12]}"
        try:
            for rel in manifest.files:
                with (src / rel).open("rb") as data:
                    self._call(uri, lambda rel=rel, data=data: client.upload_blob(f"{staging}/{rel}", data))
            stale = set(self._call(uri, lambda: self._names(client, where.path)))
            for rel in manifest.files:
                source = client.get_blob_client(f"{staging}/{rel}").url
                target = client.get_blob_client(f"{where.path}/{rel}")
                self._call(uri, lambda source=source, target=target: target.start_copy_from_url(source))
                stale.discard(f"{where.path}/{rel}")
            name = f"{where.path}/{MANIFEST_NAME}"
            self._call(uri, lambda: client.upload_blob(name, manifest.to_json().encode(), overwrite=True))
            stale.discard(name)
            for old in stale:
                self._call(uri, lambda old=old: client.delete_blob(old))
        finally:
            for rel in manifest.files:
                try:
                    client.delete_blob(f"{staging}/{rel}")
                except Exception:
                    continue

    def put_files(self, src: Path, uri: str, manifest: Manifest) -> None:
        where = parse(uri)
        client = self._container(where, uri)
        for rel in manifest.files:
            name = f"{where.path}/{manifest.key(rel)}"
            with (src / rel).open("rb") as data:
                self._call(uri, lambda name=name, data=data: client.upload_blob(name, data, overwrite=True))

    def delete_files(self, uri: str, manifest: Manifest) -> None:
        where = parse(uri)
        client = self._container(where, uri)
        for rel in manifest.files:
            self._call(uri, lambda rel=rel: client.delete_blob(f"{where.path}/{manifest.key(rel)}"))

    def exists_file(self, uri: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        where = parse(uri)
        blob = self._container(where, uri).get_blob_client(where.path)
        try:
            self._call(uri, blob.get_blob_properties)
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return False
            raise
        return True

    def file_version(self, uri: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        where = parse(uri)
        blob = self._container(where, uri).get_blob_client(where.path)
        try:
            properties = self._call(uri, blob.get_blob_properties)
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None
            raise
        return f"etag:{properties.etag}:{properties.size}"

    def fetch_file(self, uri: str, dest: Path) -> Path:
        where = parse(uri)
        data = self._read(self._container(where, uri), where.path, uri)
        if data is None:
            raise StorageError(f"{uri}: no such file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest

    def read_text(self, uri: str) -> str | None:
        where = parse(uri)
        data = self._read(self._container(where, uri), where.path, uri)
        return data.decode() if data is not None else None

    def write_text(self, uri: str, text: str) -> None:
        where = parse(uri)
        client = self._container(where, uri)
        self._call(uri, lambda: client.upload_blob(where.path, text.encode(), overwrite=True))

    def read_text_versioned(self, uri: str) -> tuple[str | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        where = parse(uri)
        client = self._container(where, uri)
        try:
            download = self._call(uri, lambda: client.download_blob(where.path))
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None, None
            raise
        return bytes(download.readall()).decode(), str(download.properties.etag)

    def write_text_if(self, uri: str, text: str, version: str | None) -> None:
        """Blob Storage's conditions: If-Match the ETag read, or no overwrite for a new blob."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        where = parse(uri)
        client = self._container(where, uri)
        if version is None:
            upload = lambda: client.upload_blob(where.path, text.encode(), overwrite=False)  # noqa: E731
        else:
            upload = lambda: client.upload_blob(  # noqa: E731
                where.path,
                text.encode(),
                overwrite=True,
                etag=version,
                match_condition=MatchConditions.IfNotModified,
            )
        try:
            self._call(uri, upload)
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceExistsError | ResourceModifiedError):
                raise WriteConflict(f"{uri} changed while it was being updated") from exc
            raise
