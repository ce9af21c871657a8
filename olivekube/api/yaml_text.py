"""YAML as olivekube reads it: safe, and without aliases, so that a few hundred bytes cannot expand
into megabytes (a YAML "billion laughs"). Manifests and Olive configs never need them."""

from __future__ import annotations

import re
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


# YAML 1.2's floats (what JSON and the API server's YAML read): PyYAML's YAML 1.1 rule needs a dot,
# so `1e-05`, as json.dumps writes 0.00001, would be a string.
NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """One document (JSON is YAML too)."""
    return yaml.load(text, Loader=NoAliasLoader)


def load_all_yaml(text: str) -> Iterator[Any]:
    return iter(yaml.load_all(text, Loader=NoAliasLoader))
