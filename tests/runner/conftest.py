"""Fixtures of the runner tests (their shared helpers are in tests/helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.manifests import DATA


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder holding the tone data as tone.json."""
    shutil.copy(DATA, tmp_path / "tone.json")
    return tmp_path
