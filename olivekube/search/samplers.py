"""Which points a search tries, and in what order: Olive's `sequential` (every point, in the space's
order), `random` (without repetition, seeded: the same seed gives the same trials) and `tpe`
(optuna's Tree-structured Parzen Estimator, by ask and tell, seeded).

A sequential or random sampler is rebuilt from the trials already told (`told`), so a search that
stops (an operator restart) goes on with the same next suggestions. A tpe sampler learns from the
outcomes it is told (`tell`): it runs where the trials run, in `olivekube run` (the operator image
carries no optuna, so a cluster refuses it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

from olivekube.search.space import Point, SearchSpace

SAMPLERS = ("sequential", "random", "tpe")
TPE_DRAWS = 100
"""Draws tpe gets to find an untried point before the sampler takes the first untried one in order."""


class Sampler:
    """Suggests the untried points of `space`: in its order, shuffled by `seed` (`random`), or as
    optuna's TPE sampler seeded with `seed` draws them (`tpe`)."""

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
        self.tpe = _Tpe(space.choices_per_pass(), seed) if kind == "tpe" else None

    def suggest(self) -> Point | None:
        """The next point not tried yet; None when the space is exhausted."""
        if self.tpe is not None and len(self.told) < len(self.order):
            index = self.tpe.ask(self.told)
            if index is not None:
                self.told.add(index)
                return self.points[index]
        for index in self.order:
            if index not in self.told:
                self.told.add(index)
                return self.points[index]
        return None

    def tell(self, point: Point, value: float | None) -> None:
        """A trial's outcome: its first objective's value made "higher is better" (Olive ranks by the
        objectives in priority order, so the first decides), or None when it failed. Only tpe
        learns from it."""
        if self.tpe is not None:
            self.tpe.tell(point.index, value)


class _Tpe:
    """optuna's TPE over one categorical per pass (its choice: alternative and searched values), by ask
    and tell. A draw of a point already tried is told that point's value, so it still teaches."""

    def __init__(self, choices: dict[str, int], seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        categorical = optuna.distributions.CategoricalDistribution
        self.distributions: dict[str, Any] = {name: categorical(list(range(n))) for name, n in choices.items()}
        self.radix = list(choices.values())
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.asked: dict[int, Any] = {}
        self.values: dict[int, float | None] = {}

    def _index(self, params: dict[str, int]) -> int:
        """The point's index: its passes' choices as a mixed-radix number, the first pass's least
        significant (SearchSpace.points' order)."""
        index = 0
        for name, count in reversed(list(zip(self.distributions, self.radix, strict=True))):
            index = index * count + int(params[name])
        return index

    def ask(self, told: set[int]) -> int | None:
        for _ in range(TPE_DRAWS):
            trial = self.study.ask(self.distributions)
            index = self._index(trial.params)
            if index not in told:
                self.asked[index] = trial
                return index
            self._finish(trial, self.values.get(index))
        return None

    def tell(self, index: int, value: float | None) -> None:
        self.values[index] = value
        trial = self.asked.pop(index, None)
        if trial is not None:
            self._finish(trial, value)

    def _finish(self, trial: Any, value: float | None) -> None:
        import optuna

        if value is None or math.isinf(value) or math.isnan(value):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)
