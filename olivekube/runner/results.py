"""What the engine reports of each pass it ran or took from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PassResult:
    """What happened to one pass."""

    name: str
    type: str
    status: str  # ran, cached, failed
    seconds: float = 0.0
    uri: str | None = None
    digest: str | None = None
    size_bytes: int | None = None
    content_key: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
