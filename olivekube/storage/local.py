"""file://, plain paths and pvc://CLAIM/path (a claim mounted into the pod)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from olivekube.core.constants import PVC_MOUNTS_ENV
from olivekube.core.errors import StorageError, WriteConflict
from olivekube.core.pod_paths import pod_path
from olivekube.storage.base import ArtifactStore, serves
from olivekube.storage.manifest import MANIFEST_NAME, Manifest, build_manifest, check_links, file_sha256, verify


def resolve(uri: str) -> Path:
    """The local path of a file://, pvc:// or plain-path URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        mounts: dict[str, str] = json.loads(os.environ.get(PVC_MOUNTS_ENV, "{}"))
        claim = parsed.netloc
        if claim not in mounts:
            raise StorageError(
                f"{uri}: claim {claim!r} is not mounted here; mount it with spec.kubernetes.volumes "
                f"and volumeMounts (mounted claims: {', '.join(mounts) or 'none'})"
            )
        return pod_path(mounts[claim]) / unquote(parsed.path).lstrip("/")
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri).expanduser()


@serves("", "file", "pvc")
def _local_store(uri: str) -> ArtifactStore:
    return LocalStore()


def _stage(src: Path, staging: Path, manifest: Manifest, consume: bool) -> None:
    """`src` as a complete folder at `staging` (beside the target), its manifest written last; moved
    rather than copied when `consume` allows and it is on the same file system."""
    if consume and os.stat(src).st_dev == os.stat(staging.parent).st_dev:
        src.rename(staging)
    else:
        shutil.copytree(src, staging, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    (staging / MANIFEST_NAME).write_text(manifest.to_json())


class LocalStore(ArtifactStore):
    """A folder on a local or mounted file system; publishing renames a staged folder into place."""

    def read_manifest(self, uri: str) -> Manifest | None:
        path = resolve(uri) / MANIFEST_NAME
        return Manifest.from_json(path.read_text()) if path.is_file() else None

    def local_path(self, uri: str) -> Path | None:
        return resolve(uri)

    def fetch(self, uri: str, dest: Path) -> Manifest:
        src = resolve(uri)
        if not src.is_dir():
            raise StorageError(f"{uri}: no such folder ({src})")
        manifest = self.read_manifest(uri)
        if manifest is None:  # a plain folder (an input model)
            shutil.copytree(src, dest, dirs_exist_ok=True)
            return build_manifest(dest)
        if dest.resolve() != src.resolve():
            check_links(src, manifest)  # copy only the listed files, none through a link
            for rel in manifest.files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / manifest.key(rel), dest / rel)
            (dest / MANIFEST_NAME).write_text(manifest.to_json())
        verify(dest, manifest)
        return manifest

    def publish(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> None:
        final = resolve(uri)
        existing = self.read_manifest(uri)
        if existing is not None and existing.digest == manifest.digest:
            return  # the same content is there already
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging(final.parent)
        staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
        try:
            _stage(src, staging, manifest, consume)
            if final.exists():
                old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                staging.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(final)
        except shutil.Error as exc:  # copytree gathers the errors of the files it could not copy
            first = exc.args[0][0][2] if exc.args and isinstance(exc.args[0], list) and exc.args[0] else exc
            raise StorageError(f"cannot write {uri}: {first}") from exc
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def publish_once(self, src: Path, uri: str, manifest: Manifest, consume: bool = False) -> Manifest:
        """A rename onto a folder that exists fails, so the first complete folder stays; one that is
        there without a manifest (never complete) is replaced as `publish` does."""
        existing = self.read_manifest(uri)
        if existing is not None:
            return existing
        final = resolve(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
        try:
            _stage(src, staging, manifest, consume)
            try:
                staging.rename(final)
            except OSError:
                winner = self.read_manifest(uri)
                if winner is not None:
                    return winner
                self.publish(staging, uri, manifest, consume=True)
            return manifest
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _remove_stale_staging(self, parent: Path) -> None:
        """Staging and replaced folders that a killed publish left (olivekube's own names only)."""
        cutoff = time.time() - self.stale_after
        for leftover in [*parent.glob(".*.staging-*"), *parent.glob(".*.old-*")]:
            if leftover.is_dir() and not leftover.is_symlink() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)

    def remove(self, uri: str) -> bool:
        folder = resolve(uri)
        if folder.is_symlink() or not folder.is_dir():
            return False
        doomed = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        folder.rename(doomed)  # gone from its URI in one step, then deleted
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def exists_file(self, uri: str) -> bool:
        return resolve(uri).is_file()

    def file_version(self, uri: str) -> str | None:
        path = resolve(uri)
        return f"sha256:{file_sha256(path)}" if path.is_file() else None

    def folder_version(self, uri: str) -> str | None:
        path = resolve(uri)
        return f"sha256:{build_manifest(path).digest}" if path.is_dir() else None

    def fetch_file(self, uri: str, dest: Path) -> Path:
        src = resolve(uri)
        if not src.is_file():
            raise StorageError(f"{uri}: no such file")
        return src

    def read_text(self, uri: str) -> str | None:
        path = resolve(uri)
        return path.read_text() if path.is_file() else None

    def write_text(self, uri: str, text: str) -> None:
        path = resolve(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(text)
        tmp.rename(path)

    def read_text_versioned(self, uri: str) -> tuple[str | None, str | None]:
        path = resolve(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        return data.decode(), hashlib.sha256(data).hexdigest()

    def write_text_if(self, uri: str, text: str, version: str | None) -> None:
        """Compare and rename under an exclusive lock (flock on a lock file beside it, which every
        olivekube process writing there takes), so that two writers never both win."""
        path = resolve(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                now = self.read_text_versioned(uri)[1]
                if now != version:
                    raise WriteConflict(f"{uri} changed while it was being updated")
                self.write_text(uri, text)
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(lock, fcntl.LOCK_UN)
