"""Progress reporting: the interface passes call, and a throttle for remote status writers."""

from __future__ import annotations

import time
from typing import Any, Protocol


class ProgressSink(Protocol):
    """Receives a pass's progress (step, totalSteps, loss, evalLoss, learningRate, epoch, etaSeconds,
    checkpointStep, resumedFromStep, message)."""

    def __call__(self, pass_name: str, progress: dict[str, Any]) -> None: ...


def null_sink(pass_name: str, progress: dict[str, Any]) -> None:
    """A sink that drops progress."""


class Throttled:
    """Forward at most one update per `interval` seconds; those in between are merged, and flushed on demand."""

    def __init__(self, sink: ProgressSink, interval: float = 5.0) -> None:
        self.sink = sink
        self.interval = interval
        # None until the first update goes (at once): time.monotonic() counts from the host's boot, so
        # a start time of 0 held back the first update on a machine up for less than `interval`.
        self.last_sent: float | None = None
        self.pending: tuple[str, dict[str, Any]] | None = None

    def __call__(self, pass_name: str, progress: dict[str, Any]) -> None:
        # Updates not yet sent merge: a field only some updates carry (checkpointStep) is not lost
        # to a later update without it.
        if self.pending is not None and self.pending[0] == pass_name:
            progress = {**self.pending[1], **progress}
        self.pending = (pass_name, progress)
        if self.last_sent is None or time.monotonic() - self.last_sent >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            name, progress = self.pending
            self.pending = None
            self.last_sent = time.monotonic()
            self.sink(name, progress)
