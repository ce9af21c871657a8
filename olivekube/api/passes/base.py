"""What every pass type shares, and the registry that pass types join by being defined.

A pass type is one `PassBase` subclass with a `type: Literal["Name"]` field; defining it registers
it (as Olive's passes register themselves), and its class variables tell the rest of olivekube how
to treat it, so that no layer branches on pass type names.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from olivekube.api import unsupported
from olivekube.api.common import MAX_NAME_LEN, ApiModel

PASS_TYPES: dict[str, type[PassBase]] = {}
"""Pass type name → its options model, by stage (and in the order defined within a stage)."""

_listeners: list[Callable[[], None]] = []


def on_new_pass_type(listener: Callable[[], None]) -> None:
    """Call `listener` after each pass type defined from now on (models that embed the union)."""
    _listeners.append(listener)


class PassBase(ApiModel):
    """Options every pass has."""

    _renamed_keys = {"config": "the pass options directly under the pass"}
    _unsupported_keys = {
        "user_script": unsupported.USER_CODE,
        "io_config": unsupported.IO_CONFIG,
    }

    stage: ClassVar[int]
    """Passes run in stage order, at most one per stage (the API server does not keep key order)."""
    trains: ClassVar[bool] = False
    """Trains an adapter on spec.data_configs: asks for a GPU by default, reads the base model."""
    adapter_builds_in_graph: ClassVar[bool] = True
    """A training pass's adapter can go into the model builder's graph unmerged (DoRA's cannot)."""
    needs_built_adapter: ClassVar[bool] = False
    """Takes a model that ModelBuilder built with an adapter inside (unmerged)."""
    needs_adapter: ClassVar[bool] = False
    """Takes an adapter: needs a training pass before it or input_model.adapter_path."""
    builds_for_target: ClassVar[bool] = False
    """Its output depends on the target system (execution provider): checked before any pass runs."""
    needs_bitsandbytes: ClassVar[bool] = False
    """Loads a bitsandbytes-quantized model."""
    defaults: ClassVar[dict[str, Any]] = {}
    """The value the runner uses for an option left unset (its description says the same)."""

    if TYPE_CHECKING:
        type: str  # each pass type declares it as a Literal of its name

    host: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description="System (in spec.systems) that runs this pass. Default: spec.host.",
    )
    evaluator: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description="Evaluator (in spec.evaluators) run on this pass's output; its goals must be met.",
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("type")
        if field is None or typing.get_origin(field.annotation) is not typing.Literal:
            return
        for name in typing.get_args(field.annotation):
            PASS_TYPES[str(name)] = cls
        ordered = sorted(PASS_TYPES.items(), key=lambda item: item[1].stage)  # stable: by stage, then as defined
        PASS_TYPES.clear()
        PASS_TYPES.update(ordered)
        for listener in _listeners:
            listener()

    def model_uris(self) -> dict[str, str]:
        """Other models the pass reads (name: folder or URI): their bytes enter its cache key."""
        return {}

    def option(self, name: str) -> Any:
        """An option's value, or its default when unset."""
        value = getattr(self, name)
        return self.defaults.get(name) if value is None else value
