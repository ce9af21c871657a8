"""Artifact stores behind URIs: file:// and plain paths, pvc://, s3://, azureml:// datastore paths.

Every artifact is a folder with a manifest of sha256 digests (`olivekube-manifest.json`) written
last. A folder without a manifest is not an artifact: readers ignore it and publishers replace it.
Publishing stages the files away from the final URI first, so a crash never leaves a half
artifact there.
"""

from olivekube.core.errors import StorageError
from olivekube.storage.base import ArtifactStore, is_uri, store_for
from olivekube.storage.manifest import MANIFEST_NAME, Manifest, build_manifest

__all__ = ["MANIFEST_NAME", "ArtifactStore", "Manifest", "StorageError", "build_manifest", "is_uri", "store_for"]
