"""Errors reported to users: each names what is at fault and what is allowed."""

from __future__ import annotations

from typing import Any


class PassError(RuntimeError):
    """A pass cannot run with the given workflow; `field` is the manifest path at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.pass_name: str | None = None
        self.results_so_far: list[Any] = []


class StorageError(RuntimeError):
    """An artifact could not be read or written; the message names the URI."""


class WriteConflict(StorageError):
    """A conditional write lost: the file changed (or appeared) after it was read."""
