"""s3:// with boto3: the standard credential chain, AWS_ENDPOINT_URL for S3-compatible servers,
multipart uploads for large files.

Publishing uploads to a staging prefix beside the final one, copies the objects into place on the
server (no data moves through the runner again) and writes the manifest last, then removes the
staging objects. A crash while uploading leaves nothing under the final URI; objects under it
without a manifest (a crash during the short copy) are ignored by readers and removed by the next
publish.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from olivekube.core.errors import StorageError, WriteConflict
from olivekube.storage.base import ArtifactStore, ObjectStore, serves
from olivekube.storage.manifest import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    check_relative,
    verify,
)

MULTIPART_THRESHOLD = 8 * 1024 * 1024
COPY_MULTIPART_THRESHOLD = 5 * 1024**3


def split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StorageError(f"{uri}: an s3 URI needs a bucket: s3://BUCKET/PREFIX")
    return parsed.netloc, parsed.path.strip("/")


@serves("s3")
def _s3_store(uri: str) -> ArtifactStore:
    return S3Store()


class S3Store(ObjectStore):
    """Artifacts as objects under a prefix."""

    def __init__(self, client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        # S3-compatible servers (AWS_ENDPOINT_URL) are addressed by path, not by virtual host.
        custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(s3={"addressing_style": "path"}) if custom else None
        self.client = client or boto3.client("s3", config=config)
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        # Server-side copies go in one CopyObject up to S3's 5 GiB limit (fewer requests; some
        # S3-compatible servers lack UploadPartCopy).
        self.copy_transfer = TransferConfig(multipart_threshold=COPY_MULTIPART_THRESHOLD)

    def _keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _error(self, uri: str, exc: Exception) -> StorageError:
        return StorageError(f"{uri}: {exc}")

    def read_manifest(self, uri: str) -> Manifest | None:
        from botocore.exceptions import ClientError

        bucket, prefix = split(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise self._error(uri, exc) from exc
        return Manifest.from_json(body.decode())

    def fetch(self, uri: str, dest: Path) -> Manifest:
        manifest = self.read_manifest(uri)
        bucket, prefix = split(uri)
        dest.mkdir(parents=True, exist_ok=True)
        if manifest is None:  # a folder uploaded by hand (an input model): take every object under it
            keys = self._keys(bucket, prefix)
            if not keys:
                raise StorageError(f"{uri}: nothing there")
            for key in keys:
                check_relative(key[len(prefix) + 1 :])
                target = dest / key[len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, key, str(target), Config=self.transfer)
            return build_manifest(dest)
        for rel in manifest.files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(bucket, f"{prefix}/{manifest.key(rel)}", str(target), Config=self.transfer)
        verify(dest, manifest)
        return manifest

    def put_files(self, src: Path, uri: str, manifest: Manifest) -> None:
        bucket, prefix = split(uri)
        for rel in manifest.files:
            self.client.upload_file(str(src / rel), bucket, f"{prefix}/{manifest.key(rel)}", Config=self.transfer)

    def delete_files(self, uri: str, manifest: Manifest) -> None:
        bucket, prefix = split(uri)
        for rel in manifest.files:
            self.client.delete_object(Bucket=bucket, Key=f"{prefix}/{manifest.key(rel)}")

    def publish(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> None:
        bucket, prefix = split(uri)
        staging_root = f"{prefix.rsplit('/', 1)[0] + '/' if '/' in prefix else ''}.staging"
        self._remove_stale_staging(bucket, staging_root)
        staging = f"{staging_root}/{uuid.uuid4().hex}"
        try:
            for rel in manifest.files:
                self.client.upload_file(str(src / rel), bucket, f"{staging}/{rel}", Config=self.transfer)
            existing = self.read_manifest(uri)
            if existing is not None and existing.digest == manifest.digest:
                return  # the same content is there already (a concurrent run of the same pass)
            for rel in manifest.files:
                self.client.copy(
                    {"Bucket": bucket, "Key": f"{staging}/{rel}"},
                    bucket,
                    f"{prefix}/{rel}",
                    Config=self.copy_transfer,
                )
            self.client.put_object(
                Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}", Body=manifest.to_json().encode()
            )
            keep = {f"{prefix}/{rel}" for rel in manifest.files} | {f"{prefix}/{MANIFEST_NAME}"}
            for stale in set(self._keys(bucket, prefix)) - keep:  # left by an interrupted or older publish
                self.client.delete_object(Bucket=bucket, Key=stale)
        finally:
            for key in self._keys(bucket, staging):
                self.client.delete_object(Bucket=bucket, Key=key)

    def remove(self, uri: str) -> bool:
        bucket, prefix = split(uri)
        keys = self._keys(bucket, prefix)
        manifest = f"{prefix}/{MANIFEST_NAME}"
        for key in sorted(keys, key=lambda k: k != manifest):  # the manifest first: incomplete at once
            self.client.delete_object(Bucket=bucket, Key=key)
        return True

    def _remove_stale_staging(self, bucket: str, staging_root: str) -> None:
        """Objects a killed publish left under the staging prefix beside this one."""
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=self.stale_after)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{staging_root}/"):
            for obj in page.get("Contents", []):
                if obj["LastModified"] < cutoff:
                    self.client.delete_object(Bucket=bucket, Key=obj["Key"])

    def exists_file(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        return True

    def file_version(self, uri: str) -> str | None:
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return None
        return f"etag:{head.get('ETag')}:{head.get('ContentLength')}:{head.get('VersionId') or ''}"

    def folder_version(self, uri: str) -> str | None:
        bucket, prefix = split(uri)
        listing = hashlib.sha256()
        paginator = self.client.get_paginator("list_objects_v2")
        found = False
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for obj in page.get("Contents", []):
                found = True
                listing.update(f"{obj['Key'][len(prefix) + 1 :]}\0{obj.get('ETag')}\0{obj.get('Size')}\n".encode())
        return f"listing:{listing.hexdigest()}" if found else None

    def fetch_file(self, uri: str, dest: Path) -> Path:
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(bucket, key, str(dest))
        except ClientError as exc:
            raise StorageError(f"{uri}: {exc}") from exc
        return dest

    def read_text(self, uri: str) -> str | None:
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        try:
            return str(self.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(uri, exc) from exc

    def write_text(self, uri: str, text: str) -> None:
        bucket, key = split(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=text.encode())

    def read_text_versioned(self, uri: str) -> tuple[str | None, str | None]:
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise self._error(uri, exc) from exc
        return answer["Body"].read().decode(), str(answer["ETag"])

    def write_text_if(self, uri: str, text: str, version: str | None) -> None:
        """S3's conditional PUT: If-Match the ETag read, or If-None-Match * for a new file."""
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        condition = {"IfMatch": version} if version is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=text.encode(), **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise WriteConflict(f"{uri} changed while it was being updated") from exc
            raise self._error(uri, exc) from exc
