"""YAML as olivekube reads it: safe, and without aliases, so that a few hundred bytes cannot expand
into megabytes (a YAML "billion laughs"). Manifests and Olive configs never need them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses `*alias` references with the line they are on."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """One document (JSON is YAML too)."""
    return yaml.load(text, Loader=NoAliasLoader)


def load_all_yaml(text: str) -> Iterator[Any]:
    return iter(yaml.load_all(text, Loader=NoAliasLoader))
