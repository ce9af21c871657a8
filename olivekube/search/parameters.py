"""Searchable parameters in Olive's JSON form.

    {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": [16, 32]}
    {"olive_parameter_type": "SearchParameter", "type": "Conditional", "parents": ["algo"],
     "support": {"rtn": {... a SearchParameter ...}}, "default": {... a SearchParameter ...}}

`ConditionalDefault` is a Conditional whose supports are single values. A value of
OLIVE_INVALID_PARAM_VALUE makes a point invalid (never suggested); OLIVE_IGNORED_PARAM_VALUE leaves
the option unset (the pass's default applies), as in Olive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVALID = "OLIVE_INVALID_PARAM_VALUE"
IGNORED = "OLIVE_IGNORED_PARAM_VALUE"
MARKER = ("olive_parameter_type", "SearchParameter")


@dataclass(frozen=True)
class Categorical:
    """One of a list of values."""

    support: tuple[Any, ...]

    def choices(self, chosen: dict[str, Any]) -> tuple[Any, ...]:
        return self.support

    def to_json(self) -> dict[str, Any]:
        return {MARKER[0]: MARKER[1], "type": "Categorical", "support": list(self.support)}


@dataclass(frozen=True)
class Conditional:
    """Values that depend on the values chosen for `parents` (options of the same pass)."""

    parents: tuple[str, ...]
    support: tuple[tuple[tuple[Any, ...], Categorical], ...]  # parent values → choices
    default: Categorical = Categorical((INVALID,))

    def choices(self, chosen: dict[str, Any]) -> tuple[Any, ...]:
        """The choices given the parents' values (compared as Olive's JSON keys are: as text too)."""
        values = tuple(chosen.get(p) for p in self.parents)
        for key, param in self.support:
            if all(k == v or str(k) == _text(v) for k, v in zip(key, values, strict=True)):
                return param.support
        return self.default.support

    def to_json(self) -> dict[str, Any]:
        support: dict[str, Any] = {}
        for key, param in self.support:
            node = support
            for part in key[:-1]:
                node = node.setdefault(_text(part), {})
            node[_text(key[-1])] = param.to_json()
        return {
            MARKER[0]: MARKER[1],
            "type": "Conditional",
            "parents": list(self.parents),
            "support": support,
            "default": self.default.to_json(),
        }


SearchParameter = Categorical | Conditional


def _text(value: Any) -> str:
    """A parent value as Olive's JSON writes a key: booleans lower-case, like JSON."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def is_search_parameter(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARKER[0]) == MARKER[1]


def parse(value: Any, field: str) -> SearchParameter:
    """A SearchParameter from Olive's JSON form; ValueError naming `field` and what is allowed."""
    if not is_search_parameter(value):
        raise ValueError(f"{field}: not a search parameter (needs olive_parameter_type: SearchParameter)")
    kind = value.get("type")
    if kind == "Categorical":
        support = value.get("support")
        if not isinstance(support, list) or not support:
            raise ValueError(f"{field}.support: a non-empty list of values is required")
        return Categorical(tuple(support))
    if kind == "Boolean":
        return Categorical((True, False))
    if kind in ("Conditional", "ConditionalDefault"):
        parents = value.get("parents")
        if not isinstance(parents, list | tuple) or not parents or not all(isinstance(p, str) for p in parents):
            raise ValueError(f"{field}.parents: a non-empty list of option names is required")
        single = kind == "ConditionalDefault"
        leaves = _leaves(value.get("support") or {}, len(parents), f"{field}.support", single)
        default = value.get("default", INVALID if single else None)
        if single:
            fallback = Categorical((default,))
        elif default is None:
            fallback = Categorical((INVALID,))
        else:
            fallback = _categorical(parse(default, f"{field}.default"), f"{field}.default")
        return Conditional(tuple(parents), tuple(leaves), fallback)
    raise ValueError(f"{field}.type: {kind!r} is not one of Categorical, Boolean, Conditional, ConditionalDefault")


def _categorical(param: SearchParameter, field: str) -> Categorical:
    if not isinstance(param, Categorical):
        raise ValueError(f"{field}: a Conditional inside a Conditional is not supported; flatten its parents")
    return param


def _leaves(
    node: Any, depth: int, field: str, single: bool, key: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], Categorical]]:
    """Olive's nested support (one level of keys per parent) as (parent values, choices) pairs."""
    if depth == 0:
        if single:
            return [(key, Categorical((node,)))]
        return [(key, _categorical(parse(node, field), field))]
    if not isinstance(node, dict):
        raise ValueError(f"{field}: one level of keys per parent is required")
    out = []
    for part, child in node.items():
        out += _leaves(child, depth - 1, f"{field}.{part}", single, (*key, part))
    return out
