"""Models as they move between passes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["hf", "adapter", "onnx"]


@dataclass
class ModelArtifact:
    """A model: a Hugging Face model (folder or hub id), a LoRA adapter over a base, or an ONNX model.

    `digest` identifies the content (a manifest digest, or a hash of the hub id and revision) and
    feeds the cache keys of the passes that consume it.
    """

    kind: ModelKind
    digest: str
    path: Path | None = None
    hub_id: str | None = None
    uri: str | None = None
    base: ModelArtifact | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def model_ref(self) -> str:
        """What `from_pretrained` takes: the local folder, else the hub id."""
        if self.path is not None:
            return str(self.path)
        assert self.hub_id is not None
        return self.hub_id


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(value: str) -> bool:
    """Whether `value` reads as a Hugging Face model id (NAME or ORG/NAME), not a URI or a path."""
    return HUB_ID.match(value) is not None


def hub_digest(model_id: str, revision: str | None) -> str:
    return hashlib.sha256(f"hf:{model_id}@{revision or 'main'}".encode()).hexdigest()
