"""The Job controller's FailedCreate events (admission refused a Job's pods, a missing
ServiceAccount, a quota), read for a whole namespace at once.

A Job that has no pod a few seconds after its creation may never get one, and only an event says
why. Listing events per Job made the API server filter the namespace's events once per Job per
look (9,195 LISTs in five minutes at 2,000 workflows, before the pod watch; 5,600 at 2,000 after
it, since the Job controller takes minutes to create that many pods). Here one LIST per namespace
answers every Job of it for `refresh_seconds`, served from the API server's watch cache
(resourceVersion 0), and a thread that finds another listing uses the answer it has.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from olivekube.core.clock import Clock

SELECTOR = "reason=FailedCreate,involvedObject.kind=Job"


@dataclass
class _Listing:
    at: float = float("-inf")
    messages: dict[str, str] = field(default_factory=dict)  # Job uid → the newest message
    lock: threading.Lock = field(default_factory=threading.Lock)


class FailedCreateEvents:
    def __init__(self, core: Any, clock: Clock, refresh_seconds: float = 5.0) -> None:
        self.core, self.clock, self.refresh_seconds = core, clock, refresh_seconds
        self._listings: dict[str, _Listing] = {}
        self._lock = threading.Lock()

    def message(self, namespace: str, job_uid: str) -> str | None:
        """The newest FailedCreate message of the Job, as of at most `refresh_seconds` ago."""
        with self._lock:
            listing = self._listings.setdefault(namespace, _Listing())
        now = self.clock().timestamp()
        if now - listing.at >= self.refresh_seconds and listing.lock.acquire(blocking=False):
            try:
                listing.messages = self._list(namespace)
                listing.at = now
            except ApiException:
                listing.at = now  # no right to read events, or the API server is away: try later
            finally:
                listing.lock.release()
        return listing.messages.get(job_uid)

    def _list(self, namespace: str) -> dict[str, str]:
        answer = self.core.list_namespaced_event(namespace, field_selector=SELECTOR, resource_version="0")
        newest: dict[str, tuple[str, str]] = {}
        for event in answer.items:
            uid = getattr(event.involved_object, "uid", None)
            when = str(event.last_timestamp or event.event_time or event.first_timestamp or "")
            if uid and (uid not in newest or when >= newest[uid][0]):
                newest[uid] = (when, event.message or "")
        return {uid: message for uid, (_, message) in newest.items()}
