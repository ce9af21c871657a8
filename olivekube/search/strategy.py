"""`search_strategy`, with Olive's keys in both generations.

Current (Olive 0.8 and later): `execution_order` (joint | pass-by-pass), `sampler` (sequential |
random | tpe), `sampler_config` (`seed`, `max_samples`) or those two keys flat, `max_iter`,
`max_time` (seconds: no trial starts after it, but the first always does), `stop_when_goals_met`,
`include_pass_params` (default true, as in Olive: every option of a pass that has a default search
space and is not written is searched over it; see search/space.py), `output_model_num` (ignored
since Olive 0.10, as there). Before 0.8:
`search_algorithm` (exhaustive | random | tpe) and `search_algorithm_config` (`num_samples`, `seed`).
`true` means a sequential joint search, as Olive's docs say; `false` or nothing, no search.
olivekube adds `max_failed_trials`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ORDERS = ("joint", "pass-by-pass")
SAMPLER_NAMES = {"sequential": "sequential", "exhaustive": "sequential", "random": "random", "tpe": "tpe"}
KNOWN = {
    "execution_order",
    "sampler",
    "sampler_config",
    "search_algorithm",
    "search_algorithm_config",
    "seed",
    "max_samples",
    "max_iter",
    "max_time",
    "stop_when_goals_met",
    "include_pass_params",
    "output_model_num",
    "max_failed_trials",
}


@dataclass(frozen=True)
class Strategy:
    execution_order: str = "joint"
    sampler: str = "sequential"
    seed: int = 0
    max_samples: int | None = None
    max_iter: int | None = None
    max_time: float | None = None
    stop_when_goals_met: bool = False
    max_failed_trials: int | None = None
    include_pass_params: bool = True

    def budget(self) -> int | None:
        """How many trials at most (the smaller of max_samples and max_iter)."""
        limits = [n for n in (self.max_samples, self.max_iter) if n is not None]
        return min(limits) if limits else None


def _count(value: Any, field: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}: an integer of at least {minimum} is required, not {value!r}")
    return value


def strategy_of(raw: Any, field: str = "search_strategy") -> Strategy | None:
    """The strategy a config asks for; None for no search. ValueError names the field."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return Strategy()
    if not isinstance(raw, dict):
        raise ValueError(f"{field}: true, false or a mapping is required, not {raw!r}")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise ValueError(f"{field}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(KNOWN))})")
    order = raw.get("execution_order") or "joint"
    if order not in ORDERS:
        raise ValueError(f"{field}.execution_order: {order!r} is not one of {', '.join(ORDERS)}")
    name_key = "sampler" if "sampler" in raw else "search_algorithm"
    name = raw.get(name_key) or "sequential"
    if name not in SAMPLER_NAMES:
        raise ValueError(f"{field}.{name_key}: {name!r} is not one of {', '.join(SAMPLER_NAMES)}")
    config_key = "sampler_config" if "sampler_config" in raw else "search_algorithm_config"
    config = raw.get(config_key) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{field}.{config_key}: a mapping is required")
    samples = config.get("max_samples", config.get("num_samples", raw.get("max_samples")))
    seed = config.get("seed", raw.get("seed", 0))
    max_time = raw.get("max_time")
    if max_time is not None and (
        isinstance(max_time, bool) or not isinstance(max_time, int | float) or max_time <= 0
    ):
        raise ValueError(f"{field}.max_time: a number of seconds above 0 is required, not {max_time!r}")
    include = raw.get("include_pass_params", True)
    if not isinstance(include, bool):
        raise ValueError(f"{field}.include_pass_params: true or false is required, not {include!r}")
    return Strategy(
        execution_order=order,
        sampler=SAMPLER_NAMES[name],
        seed=_count(seed, f"{field}.{config_key}.seed", minimum=0) or 0,
        max_samples=_count(samples, f"{field}.{config_key}.max_samples"),
        max_iter=_count(raw.get("max_iter"), f"{field}.max_iter"),
        max_time=float(max_time) if max_time is not None else None,
        stop_when_goals_met=bool(raw.get("stop_when_goals_met", False)),
        max_failed_trials=_count(raw.get("max_failed_trials"), f"{field}.max_failed_trials", minimum=0),
        include_pass_params=include,
    )
