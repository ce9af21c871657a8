"""MergeAdapterWeights: merge an adapter into its base model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from olivekube.api.passes.base import PassBase


class MergeAdapterWeights(PassBase):
    """Merge the adapter from the previous pass into the base model's full-precision weights."""

    stage = 1
    needs_adapter = True

    type: Literal["MergeAdapterWeights"] = Field(description="Pass type.")
