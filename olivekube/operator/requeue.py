"""Looking at a workflow again later (a retry's backoff, a Job waiting to start): one thread and a
heap, at most one pending look per workflow (the earliest asked for).

A timer thread per request was what the handlers did: a workflow looked at on every event of its
Job and pods asked again each time, and at 2,000 workflows the operator held 2,700 threads."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

Key = tuple[str, str]


class Requeue:
    def __init__(self, reconcile: Callable[[str, str], None]) -> None:
        self.reconcile = reconcile
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, delay: float, key: Key) -> None:
        """Reconcile `key` in `delay` seconds, unless a look at it is due sooner already."""
        due = time.monotonic() + delay
        with self._wake:
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="olivekube-requeue", daemon=True)
                self._thread.start()
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._due)

    def _next(self) -> Key:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by a sooner look
                if self._heap and self._heap[0][0] <= now:
                    _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    return key
                self._wake.wait(timeout=self._heap[0][0] - now if self._heap else None)

    def _run(self) -> None:
        while True:
            self.reconcile(*self._next())
