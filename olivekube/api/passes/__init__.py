"""Passes, with Olive's pass types and option names: one module per pass family, each class one
pass type. Every module of this package is imported here, so a new module is all a new type needs."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import Field

from olivekube.api.passes.base import PASS_TYPES, PassBase, on_new_pass_type

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def pass_config_type() -> Any:
    """The discriminated union of every registered pass type (what `spec.passes` values are)."""
    members = tuple(PASS_TYPES.values())
    return Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple


def stage_of(type_name: str) -> int:
    return PASS_TYPES[type_name].stage


__all__ = ["PASS_TYPES", "PassBase", "on_new_pass_type", "pass_config_type", "stage_of"]
