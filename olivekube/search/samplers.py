"""Which points a search tries, and in what order: Olive's `sequential` (every point, in the space's
order) and `random` (without repetition, seeded: the same seed gives the same trials).

A sampler is rebuilt from the trials already told (`told`), so a search that stops (an operator
restart) goes on with the same next suggestions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from olivekube.search.space import Point, SearchSpace

SAMPLERS = ("sequential", "random")


class Sampler:
    """Suggests the untried points of `space` in its order; `random` shuffles that order by `seed`."""

    def __init__(
        self, space: SearchSpace, kind: str = "sequential", seed: int = 0, told: Iterable[int] = ()
    ) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"sampler: {kind!r} is not one of {', '.join(SAMPLERS)}")
        self.order = [p.index for p in space.points()]
        if kind == "random":
            random.Random(seed).shuffle(self.order)
        self.points = {p.index: p for p in space.points()}
        self.told = set(told)

    def suggest(self) -> Point | None:
        """The next point not tried yet; None when the space is exhausted."""
        for index in self.order:
            if index not in self.told:
                self.told.add(index)
                return self.points[index]
        return None
