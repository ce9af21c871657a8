"""Shared base classes and constants for the OptimizationWorkflow API models."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.json_schema import JsonDict  # type: ignore[attr-defined]
from pydantic_core import PydanticCustomError

GROUP = "olivekube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OptimizationWorkflow"
PLURAL = "optimizationworkflows"
SINGULAR = "optimizationworkflow"
SHORT_NAMES = ["owf"]

# Bounds that keep the CEL cost of the CRD's validation rules within the API server's budget.
MAX_PASSES = 16
MAX_DATA_CONFIGS = 16
MAX_SYSTEMS = 8
MAX_NAME_LEN = 63
MAX_LIST = 64
MAX_STRING = 4096
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"


PRESERVE: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}
"""Schema extra for free-form fields: the API server keeps their content as given."""

KEYED_ERRORS = ("legacy_key", "unsupported_key")
"""Error types whose context names the offending key; error paths get that key appended."""


class ApiModel(BaseModel):
    """Strict base: unknown keys are errors, so a typo never disappears silently, and values are
    not coerced ("yes" is no boolean), as in the CRD's schema. Validate documents through JSON
    (`parse_json_document`) so that enums take their string values.

    `_renamed_keys` maps a key from an older Olive release to the key that replaced it, so that a
    legacy key found in the current form gets an error that says what to write instead.
    `_unsupported_keys` maps an Olive key that cannot run in a cluster to why, and what to do.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True, strict=True)
    _renamed_keys: ClassVar[dict[str, str]] = {}
    _unsupported_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _reject_renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls._renamed_keys.items():
                if old in data:
                    raise PydanticCustomError(
                        "legacy_key",
                        "'{key}' is a key of Olive's legacy config form; write {new} instead "
                        "(or run `olivekube convert` on the legacy config)",
                        {"key": old, "new": new},
                    )
            for key, why in cls._unsupported_keys.items():
                if key in data:
                    raise PydanticCustomError(
                        "unsupported_key", "'{key}' is not supported: {why}", {"key": key, "why": why}
                    )
        return data

    def dump(self) -> dict[str, Any]:
        """The model as plain JSON-compatible data, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class OpenModel(ApiModel):
    """A model whose known fields are typed and whose other keys pass through unchanged."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, use_enum_values=True, strict=True)
