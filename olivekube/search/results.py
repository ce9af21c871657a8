"""Ranking measured candidates as Olive does.

Objectives are the evaluator's sub-metrics with a priority above 0, named `metric-sub_type`; the
best candidate is first in the lexicographic order of the objectives by priority (each made "higher
is better"), a missing value being the worst. A candidate meets the goals when every objective that
has a goal reaches it. The Pareto frontier keeps the candidates that meet the goals and that no
other such candidate dominates (at least as good on every objective, better on one); equal
candidates do not dominate each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Metrics = Mapping[str, float]


@dataclass(frozen=True)
class Objective:
    name: str
    priority: int
    higher_is_better: bool
    goal: float | None = None

    def scaled(self, metrics: Metrics) -> float:
        """The value made "higher is better"; -inf when missing."""
        value = metrics.get(self.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -math.inf
        return float(value) if self.higher_is_better else -float(value)


def ordered(objectives: list[Objective]) -> list[Objective]:
    """By priority, then by name (Olive's order)."""
    return sorted((o for o in objectives if o.priority > 0), key=lambda o: (o.priority, o.name))


def meets_goals(metrics: Metrics, objectives: list[Objective]) -> bool:
    for o in objectives:
        if o.goal is None:
            continue
        value = metrics.get(o.name)
        if value is None:
            return False
        if (value < o.goal) if o.higher_is_better else (value > o.goal):
            return False
    return True


def rank(candidates: Mapping[str, Metrics], objectives: list[Objective], goals_first: bool = True) -> list[str]:
    """Candidate ids, best first. With `goals_first`, those that meet the goals come before the rest."""
    order = ordered(objectives)

    def key(cid: str) -> tuple[float, ...]:
        misses = 0.0 if not goals_first or meets_goals(candidates[cid], objectives) else 1.0
        return (misses, *(-o.scaled(candidates[cid]) for o in order))

    return sorted(candidates, key=key)


def dominates(a: Metrics, b: Metrics, objectives: list[Objective]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    pairs = [(o.scaled(a), o.scaled(b)) for o in ordered(objectives)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def frontier(candidates: Mapping[str, Metrics], objectives: list[Objective]) -> list[str]:
    """The goal-meeting candidates no other goal-meeting candidate dominates, in rank order."""
    meeting = {c: m for c, m in candidates.items() if meets_goals(m, objectives)}
    kept = [
        c for c, m in meeting.items() if not any(dominates(o, m, objectives) for d, o in meeting.items() if d != c)
    ]
    best = rank(meeting, objectives)
    return [c for c in best if c in kept]
