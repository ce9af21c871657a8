"""The operator's looks-again-later: one thread, one pending look per workflow (the soonest)."""

from __future__ import annotations

import threading
import time

from olivekube.operator.requeue import Requeue


def test_a_workflow_asked_for_many_times_is_looked_at_once_at_the_soonest_time() -> None:
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def reconcile(namespace: str, name: str) -> None:
        seen.append((namespace, name))
        if len(seen) == 2:
            done.set()

    requeue = Requeue(reconcile)
    threads = threading.active_count()
    for delay in (30.0, 0.05, 10.0, 0.2, 20.0):
        requeue.after(delay, ("ml", "tone"))
    requeue.after(0.1, ("ml", "other"))
    for i in range(500):
        requeue.after(60.0 + i, ("ml", f"later-{i}"))
    assert threading.active_count() == threads + 1  # one thread, however many asks
    assert done.wait(5)
    time.sleep(0.3)
    assert seen == [("ml", "tone"), ("ml", "other")]  # the later asks for tone were superseded
    assert requeue.pending() == 500
