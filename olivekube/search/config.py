"""A config's search, as written: Olive's form (searchable options inline in the passes, a pass
given as a list of alternatives, `search_strategy` at the top or under `engine`) and the manifest's
(`spec.search_space`: the searched options by pass, since a typed CRD field cannot hold a search
parameter; `olivekube convert` writes an Olive config's inline ones there).

`search_of` gives the space and strategy, `concrete` one trial's config: the same config with one
point filled in and no search left.
"""

from __future__ import annotations

import copy
from typing import Any

from olivekube.search.parameters import MARKER
from olivekube.search.space import SEARCHABLE, Point, SearchSpace
from olivekube.search.strategy import Strategy, strategy_of

NOT_SEARCHABLE = ("type", "host", "evaluator")
"""Pass fields a search may not set: which pass it is and where it runs are the author's choice."""


def inline(passes: dict[str, Any], search_space: Any, field: str = "spec.search_space") -> dict[str, Any]:
    """The passes with `search_space`'s options written in place, as Olive writes them (a search
    parameter may leave out `olive_parameter_type`)."""
    if not isinstance(search_space, dict):
        raise ValueError(f"{field}: a mapping of pass name to the options searched is required")
    out = copy.deepcopy(passes)
    for name, options in search_space.items():
        where = f"{field}.{name}"
        if name not in out:
            raise ValueError(f"{where}: spec.passes has no pass of that name ({', '.join(out)})")
        if not isinstance(options, dict) or not options:
            raise ValueError(f"{where}: a mapping of option name to its search parameter is required")
        if not isinstance(out[name], dict):
            raise ValueError(f"{where}: the pass is a list of alternatives; search its options there")
        for option, value in options.items():
            if option in NOT_SEARCHABLE:
                raise ValueError(f"{where}.{option}: not searchable (a pass's type, host and evaluator are fixed)")
            if isinstance(value, dict) and MARKER[0] not in value:
                value = {MARKER[0]: MARKER[1], **value}
            elif not isinstance(value, dict) and value != SEARCHABLE:
                raise ValueError(
                    f"{where}.{option}: a search parameter ({{type: Categorical, support: [...]}}, Boolean, "
                    f"Conditional) or {SEARCHABLE} is required, not {value!r}"
                )
            out[name][option] = value
    return out


def _where(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The mapping that holds the passes, the one that holds search_strategy, and its field path."""
    if "spec" in raw and isinstance(raw["spec"], dict):
        return raw["spec"], raw["spec"], "spec.search_strategy"
    engine = raw.get("engine") if isinstance(raw.get("engine"), dict) else None
    if engine is not None and "search_strategy" in engine and "search_strategy" not in raw:
        return raw, engine, "engine.search_strategy"
    return raw, raw, "search_strategy"


def search_of(raw: Any) -> tuple[SearchSpace, Strategy] | None:
    """The space and strategy of a manifest or Olive config that searches; None when it does not."""
    if not isinstance(raw, dict):
        return None
    holder, strategy_holder, field_path = _where(raw)
    passes = holder.get("passes")
    if not isinstance(passes, dict):
        return None
    if holder.get("search_space") is not None:
        passes = inline(passes, holder["search_space"])
    strategy = strategy_of(strategy_holder.get("search_strategy"), field_path)
    with_defaults = strategy is not None and strategy.include_pass_params
    space = SearchSpace({k: _flat(v) for k, v in passes.items()}, "passes", pass_defaults=with_defaults)
    if strategy is None and not space.searches:
        return None
    if strategy is None:
        raise ValueError(
            f"{field_path}: the passes search (a search parameter or alternatives); set it to true or a mapping"
        )
    if strategy.execution_order == "pass-by-pass" and strategy.sampler == "tpe":
        raise ValueError(f"{field_path}.sampler: pass-by-pass runs with the sequential or random sampler")
    return space, strategy


def _flat(options: Any) -> Any:
    """Olive's older pass form keeps options under `config`: search them where they are written."""
    if isinstance(options, list):
        return [_flat(o) for o in options]
    if isinstance(options, dict) and isinstance(options.get("config"), dict):
        return {**{k: v for k, v in options.items() if k != "config"}, **options["config"]}
    return options


def concrete(raw: dict[str, Any], point: Point) -> dict[str, Any]:
    """The config with the point's options in place of the search (each where it was written: under
    `config` in Olive's older pass form), and no search_strategy."""
    doc = copy.deepcopy(raw)
    holder, strategy_holder, _ = _where(doc)
    passes = {}
    for name, choice in point.passes.items():
        written = holder["passes"][name]
        original = written[choice.alternative] if isinstance(written, list) else written
        options = dict(choice.options)
        if isinstance(original, dict) and isinstance(original.get("config"), dict):
            top = {k: options.pop(k) for k in list(options) if k in original and k != "config"}
            options = {**top, "config": options}
        passes[name] = options
    holder["passes"] = passes
    holder.pop("search_space", None)
    strategy_holder["search_strategy"] = False
    return doc
