"""The joint search space of a workflow's passes, and its points.

A pass is one options dict, or a list of them (Olive's alternatives under one pass name). An option
may be a search parameter (`parameters.py`) or "SEARCHABLE_VALUES", which takes Olive's default
space for that option of that pass type (`SEARCHABLE_DEFAULTS`). A point fixes every pass: which
alternative, and a value for each searched option. Points are enumerated in Olive's order (its
SearchSpace indexes a point as a mixed-radix number, the first parameter least significant): the
first pass's choice changes fastest; within a pass its alternatives come one after another, and
within an alternative the first option written changes fastest (conditionals after their parents).
Points with an invalid value are left out, and so are duplicates (a conditional that ignores an
option).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from olivekube.search.parameters import (
    IGNORED,
    INVALID,
    Categorical,
    Conditional,
    SearchParameter,
    is_search_parameter,
    parse,
)

SEARCHABLE = "SEARCHABLE_VALUES"
LORA_RANKS = Categorical((16, 32, 64))
SEARCHABLE_DEFAULTS: dict[str, dict[str, Categorical]] = {
    "LoRA": {"r": LORA_RANKS},
    "QLoRA": {"r": LORA_RANKS},
    "DoRA": {"r": LORA_RANKS},
    "LoftQ": {"r": LORA_RANKS},
    "ModelBuilder": {
        "int4_block_size": Categorical((32, 64, 128)),
        "int4_is_symmetric": Categorical((True, False)),
        "int4_algo_config": Categorical(("default", "rtn", "k_quant_mixed", "k_quant_last")),
    },
}
"""Olive 0.13's `search_defaults`, for the passes olivekube runs."""
WRITTEN_AS = {"lora_r": "r"}
"""Older Olive names of options with a default space (a config written before Olive 0.8)."""
MAX_ENUMERATED = 100_000
"""Spaces larger than this are sampled from, never listed whole."""


@dataclass(frozen=True)
class PassChoice:
    """One pass's part of a point: the alternative taken and its options, searched values filled in."""

    alternative: int
    options: dict[str, Any]
    searched: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """A candidate: every pass's choice, and its position in the enumeration."""

    index: int
    passes: dict[str, PassChoice]

    def parameters(self) -> dict[str, dict[str, Any]]:
        """What was chosen, by pass: the alternative (when there are several) and each searched value."""
        return {name: dict(choice.searched) for name, choice in self.passes.items() if choice.searched}


def _resolve(pass_type: str, name: str, value: Any, field: str) -> SearchParameter | None:
    if value == SEARCHABLE:
        default = SEARCHABLE_DEFAULTS.get(pass_type, {}).get(name)
        if default is None:
            known = SEARCHABLE_DEFAULTS.get(pass_type)
            allowed = ", ".join(sorted(known)) if known else "none"
            raise ValueError(
                f"{field}: {pass_type} has no default search space for {name} (those with one: {allowed})"
            )
        return default
    return parse(value, field) if is_search_parameter(value) else None


def _unwritten_defaults(pass_type: str, options: dict[str, Any]) -> dict[str, Categorical]:
    """The default spaces Olive searches for options not written. One difference: ModelBuilder's int4
    options are searched only for precision int4 (Olive searches them for any precision, building
    the same fp16 or fp32 model once per point)."""
    written = set(options) | {WRITTEN_AS[k] for k in options if k in WRITTEN_AS}
    defaults = {k: v for k, v in SEARCHABLE_DEFAULTS.get(pass_type, {}).items() if k not in written}
    if pass_type == "ModelBuilder" and options.get("precision") != "int4":
        defaults = {k: v for k, v in defaults.items() if not k.startswith("int4_")}
    return defaults


@dataclass(frozen=True)
class _Alternative:
    fixed: dict[str, Any]
    searched: tuple[tuple[str, SearchParameter], ...]

    def choices(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(options, searched values) for each valid combination, parents before their children."""
        names = [n for n, _ in self.searched]

        def walk(i: int, chosen: dict[str, Any], at: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Any]]:
            if i == len(self.searched):
                yield at, dict(chosen)
                return
            name, param = self.searched[i]
            for position, value in enumerate(param.choices(chosen)):
                if value == INVALID:
                    continue
                yield from walk(i + 1, {**chosen, name: value}, (*at, position))

        # Olive's order: the first option's position changes fastest (parents are placed first, so
        # a conditional's choices are known when its position is).
        ordered = sorted(walk(0, {}, ()), key=lambda found: found[0][::-1])
        seen: set[str] = set()
        for _, chosen in ordered:
            kept = {n: chosen[n] for n in names if chosen[n] != IGNORED}
            key = repr(sorted(kept.items(), key=lambda kv: kv[0]))
            if key in seen:
                continue
            seen.add(key)
            yield {**self.fixed, **kept}, kept


def _order(searched: list[tuple[str, SearchParameter]], field: str) -> tuple[tuple[str, SearchParameter], ...]:
    """Options in the order written, each conditional after its parents."""
    names = {n for n, _ in searched}
    placed: list[tuple[str, SearchParameter]] = []
    pending = list(searched)
    while pending:
        for item in pending:
            name, param = item
            parents = param.parents if isinstance(param, Conditional) else ()
            missing = [p for p in parents if p not in names]
            if missing:
                raise ValueError(
                    f"{field}.{name}.parents: {', '.join(missing)} is not a searched option of this pass"
                )
            if all(p in {n for n, _ in placed} for p in parents):
                placed.append(item)
                pending.remove(item)
                break
        else:
            raise ValueError(
                f"{field}: the conditionals' parents form a cycle ({', '.join(n for n, _ in pending)})"
            )
    return tuple(placed)


class SearchSpace:
    """The points of a workflow's passes (`passes`: name → options dict or a list of them)."""

    def __init__(self, passes: dict[str, Any], field: str = "passes", pass_defaults: bool = False) -> None:
        """`pass_defaults`: also search every option that has a default space and is not written
        (Olive's `include_pass_params`)."""
        self.passes: dict[str, list[_Alternative]] = {}
        for name, value in passes.items():
            alternatives = value if isinstance(value, list) else [value]
            if not alternatives:
                raise ValueError(f"{field}.{name}: an empty list of alternatives")
            self.passes[name] = [
                self._alternative(
                    options, f"{field}.{name}" + (f".{i}" if isinstance(value, list) else ""), pass_defaults
                )
                for i, options in enumerate(alternatives)
            ]

    @staticmethod
    def _alternative(options: Any, field: str, pass_defaults: bool) -> _Alternative:
        if not isinstance(options, dict):
            raise ValueError(f"{field}: a pass's options must be a mapping")
        pass_type = str(options.get("type") or "")
        fixed, searched = {}, []
        for key, value in options.items():
            param = _resolve(pass_type, key, value, f"{field}.{key}")
            if param is None:
                fixed[key] = value
            else:
                searched.append((key, param))
        if pass_defaults:
            searched += [(k, p) for k, p in _unwritten_defaults(pass_type, options).items()]
        return _Alternative(fixed, _order(searched, field))

    @property
    def searches(self) -> bool:
        """Whether there is anything to choose (a searched option, or alternatives)."""
        return any(len(alts) > 1 or any(a.searched for a in alts) for alts in self.passes.values())

    def size_bound(self) -> int:
        """At most this many points (conditionals counted at their widest, duplicates not removed)."""
        total = 1
        for alternatives in self.passes.values():
            per_pass = 0
            for alt in alternatives:
                count = 1
                for _, param in alt.searched:
                    if isinstance(param, Conditional):
                        widths = [len(c.support) for _, c in param.support] + [len(param.default.support)]
                        count *= max(widths)
                    else:
                        count *= len(param.support)
                per_pass += count
            total *= per_pass
        return total

    def choices_per_pass(self) -> dict[str, int]:
        """How many choices each pass has: a point is one choice of each, its index their mixed-radix
        number in this order, the first pass's choice least significant (as in Olive)."""
        return {name: len(self.pass_choices(name)) for name in self.passes}

    def pass_choices(self, name: str) -> list[PassChoice]:
        """One pass's choices, in the enumeration order."""
        out = []
        several = len(self.passes[name]) > 1
        for i, alt in enumerate(self.passes[name]):
            for options, searched in alt.choices():
                out.append(PassChoice(i, options, {**({"alternative": i} if several else {}), **searched}))
        return out

    def points(self) -> Iterator[Point]:
        """Every valid point, in the enumeration order (see the module's docstring)."""
        names = list(self.passes)
        per_pass = [self.pass_choices(n) for n in reversed(names)]
        for index, combo in enumerate(itertools.product(*per_pass)):  # the last product factor is fastest
            yield Point(index, dict(zip(names, reversed(combo), strict=True)))

    def __len__(self) -> int:
        total = 1
        for name in self.passes:
            total *= len(self.pass_choices(name))
        return total
